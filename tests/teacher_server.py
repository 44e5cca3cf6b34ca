"""A real HTTP teacher for tests and benchmarks: speaks the OpenAI chat-completions protocol on
127.0.0.1 with injectable latency, capacity and faults.

kdc reaches it exactly as it reaches vLLM or OpenAI (`--teacher openai/<name> --api-base
http://127.0.0.1:PORT/v1`), so tests exercise the real transport: litellm, httpx, JSON parsing,
retries, timeouts. The server records every request and the time-weighted number in flight.

Faults (by request number, by a matcher on the request, or at a seeded rate):
  malformed-json  the answer is not JSON            schema   JSON that violates the schema
  empty           an empty answer                   refusal  "I cannot help with that."
  429             rate limited, with Retry-After    500      server error
  hang            no answer until the client gives up (past its timeout)
  drop            the connection is closed without an answer
  401             bad credentials

Run standalone (benchmarks): `python tests/teacher_server.py --port 0 --latency 0.2 --capacity 32`
prints `PORT <n>` and serves until killed; `GET /stats` returns the in-flight statistics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

FAULTS = ("malformed-json", "schema", "empty", "refusal", "429", "500", "hang", "drop", "401")

WORDS = (
    "amber basalt cedar delta ember fjord granite harbor iris juniper kelp lantern meadow nectar "
    "orchid pebble quartz river saffron tundra umber violet willow xenon yarrow zephyr anchor beacon "
    "canyon dune estuary falcon glacier heron island jasmine kestrel lagoon marble nebula oasis "
    "prairie quarry reef summit thistle upland valley wharf yucca zenith acorn bramble cobalt dahlia "
    "egret fennel garnet hazel indigo jade kiwi lotus maple nutmeg olive poppy quill rowan sorrel "
    "teal ursa vervain walnut aster birch clover daisy elm fern gorse heather ivy kale lilac moss "
    "nettle oak pine quince rush sage tansy vetch wheat barley copper silver bronze tin iron cobble "
    "flint slate chalk loam peat clay sand silt gravel boulder cliff ridge crest slope basin delta"
).split()


def _h(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()[:8], "big")


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _document(prompt: str) -> str | None:
    """The document chunk a knowledge prompt carries (between kdc's markers), if any."""
    m = re.search(r"<document>\n(.*?)\n</document>", prompt, re.S)
    return m.group(1) if m else None


def default_responder(request: dict, number: int) -> dict:
    """A valid record for the request's schema, varied per prompt (so dedup gates pass) and
    grounded in the prompt's document when there is one (so grounding gates pass)."""
    prompt = "\n".join(str(m.get("content", "")) for m in request.get("messages", []))
    rng = random.Random(_h(prompt, request.get("seed")))
    schema = ((request.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    props = schema.get("properties", {})
    doc = _document(prompt)
    if doc:
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", doc) if len(s.split()) >= 5]
        fact = sentences[rng.randrange(len(sentences))] if sentences else doc[:200]
        lead = " ".join(fact.split()[:6])
        record = {"question": f"According to the document, what follows from: {lead} {_words(rng, 3)}?",
                  "reasoning": [f"The document says: {fact}", "So the answer restates that fact."],
                  "answer": fact}
    else:
        context = f"Notes on {_words(rng, 4)}. {_words(rng, 14)}. {_words(rng, 10)}."
        topic = _words(rng, 5)
        record = {"question": f"Explain how {topic} relate to {_words(rng, 4)}?",
                  "reasoning": [f"First consider {_words(rng, 6)}.", f"Then weigh {_words(rng, 6)}."],
                  "answer": f"The {topic} {_words(rng, 12)}."}
        if "context" in props:
            record["answer"] = f"{context.split('.')[1].strip()} {_words(rng, 4)}."
            record = {"context": context, **record}
    return record


@dataclass
class FaultPlan:
    """Which requests misbehave: by 1-based request number, by matcher, or at seeded rates."""

    by_request: dict[int, str] = field(default_factory=dict)
    match: Callable[[dict, int], str | None] | None = None
    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 0

    def pick(self, request: dict, number: int) -> str | None:
        if number in self.by_request:
            return self.by_request[number]
        if self.match is not None:
            fault = self.match(request, number)
            if fault:
                return fault
        if self.rates:
            r = random.Random(_h(self.seed, number)).random()
            acc = 0.0
            for fault, rate in sorted(self.rates.items()):
                acc += rate
                if r < acc:
                    return fault
        return None


class _Stats:
    """Time-weighted in-flight statistics over the busy period (first arrival to last answer)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.area = 0.0
        self.first: float | None = None
        self.last_change = 0.0
        self.last_done = 0.0
        self.requests = 0
        self.by_status: dict[int, int] = {}

    def enter(self) -> int:
        with self.lock:
            now = time.monotonic()
            if self.first is None:
                self.first = self.last_change = now
            self.area += self.in_flight * (now - self.last_change)
            self.last_change = now
            self.in_flight += 1
            self.requests += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.requests

    def leave(self, status: int) -> None:
        with self.lock:
            now = time.monotonic()
            self.area += self.in_flight * (now - self.last_change)
            self.last_change = self.last_done = now
            self.in_flight -= 1
            self.by_status[status] = self.by_status.get(status, 0) + 1

    def snapshot(self) -> dict:
        with self.lock:
            span = (self.last_done - self.first) if self.first is not None else 0.0
            return {"requests": self.requests, "max_in_flight": self.max_in_flight,
                    "mean_in_flight": (self.area / span) if span > 0 else 0.0, "busy_s": span,
                    "by_status": dict(self.by_status)}


class _QuietServer(ThreadingHTTPServer):
    """A client that gives up (timeout, kill -9) breaks its connection: not a server error."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass


class TeacherServer:
    """`with TeacherServer(latency=0.05) as srv: ... srv.url ...`; see the module docstring."""

    def __init__(self, *, responder: Callable[[dict, int], dict | str] = default_responder,
                 latency: float = 0.0, capacity: int | None = None, overflow: str = "429",
                 retry_after: float = 0.05, faults: FaultPlan | None = None, hang_s: float = 30.0,
                 model: str = "teacher-test", port: int = 0):
        self.responder = responder
        self.latency = latency
        self.capacity = capacity
        self.overflow = overflow  # "429": answer 429 + Retry-After beyond capacity; "queue": wait
        self.retry_after = retry_after
        self.faults = faults or FaultPlan()
        self.hang_s = hang_s
        self.model = model
        self.stats = _Stats()
        self.log: list[dict] = []  # one entry per chat request: number, fault, status, body
        self._log_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(capacity) if capacity else None
        self._stop = threading.Event()
        self._httpd = _QuietServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "TeacherServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "TeacherServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def chat_requests(self) -> int:
        with self._log_lock:
            return len(self.log)

    def reset_log(self) -> None:
        with self._log_lock:
            self.log.clear()

    # -- request handling ------------------------------------------------------------------
    def _answer(self, body: dict, number: int, auth: str | None = None) -> tuple[int, dict, dict, str | None]:
        """(status, headers, JSON body, fault) for one chat request; may sleep (latency, hang)."""
        fault = self.faults.pick(body, number)
        with self._log_lock:
            self.log.append({"number": number, "fault": fault, "body": body, "auth": auth})
        if fault == "hang":
            self._stop.wait(self.hang_s)
            return 504, {}, {"error": {"message": "hung"}}, fault
        if fault == "429":
            return 429, {"Retry-After": f"{self.retry_after}"}, {"error": {"message": "rate limited",
                                                                          "type": "rate_limit"}}, fault
        if fault == "401":
            return 401, {}, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                       "code": "invalid_api_key"}}, fault
        if fault == "500":
            return 500, {}, {"error": {"message": "internal error", "type": "server_error"}}, fault
        if self.latency:
            time.sleep(self.latency)
        if fault == "malformed-json":
            content = '{"question": "unterminated'
        elif fault == "schema":
            content = json.dumps({"question": "Where is the answer?", "reasoning": "not a list"})
        elif fault == "empty":
            content = ""
        elif fault == "refusal":
            content = "I cannot help with that request."
        else:
            made = self.responder(body, number)
            content = made if isinstance(made, str) else json.dumps(made)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = len(content.split())
        return 200, {}, {
            "id": f"chatcmpl-{number}", "object": "chat.completion", "created": 1700000000,
            "model": body.get("model", self.model), "system_fingerprint": "fp_test",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}, fault

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms Nagle stall

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                elif self.path.rstrip("/").endswith("/stats"):
                    self._send(200, server.stats.snapshot())
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                # a request is in flight from its headers' arrival to the end of its answer
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(400, {"error": {"message": "request is not JSON"}})
                    return
                slot = server._slots
                if slot is not None:
                    if server.overflow == "queue":
                        slot.acquire()
                    elif not slot.acquire(blocking=False):
                        server.stats.enter()
                        server.stats.leave(429)
                        with server._log_lock:
                            server.log.append({"number": None, "fault": "capacity", "body": body})
                        self._send(429, {"error": {"message": "over capacity", "type": "rate_limit"}},
                                   {"Retry-After": f"{server.retry_after}"})
                        return
                number = server.stats.enter()
                status = 599
                try:
                    status, headers, payload, fault = server._answer(body, number, self.headers.get("Authorization"))
                    if fault == "drop":
                        self.close_connection = True
                        try:
                            self.connection.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        return
                    if not server._stop.is_set():
                        self._send(status, payload, headers)
                finally:
                    server.stats.leave(status)
                    if slot is not None:
                        slot.release()

        return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--capacity", type=int, default=None)
    ap.add_argument("--overflow", choices=("429", "queue"), default="429")
    args = ap.parse_args()
    srv = TeacherServer(latency=args.latency, capacity=args.capacity, overflow=args.overflow, port=args.port)
    srv.start()
    print(f"PORT {srv.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
