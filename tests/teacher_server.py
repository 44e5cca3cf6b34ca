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
A rate-limited provider: `rpm=`/`tpm=` enforce a sliding window of `window_s` seconds (60: per
minute) on the chat requests it admits (tokens: the prompt's words plus max_tokens at admission,
corrected to the usage answered), answer 429 with Retry-After past it, and put OpenAI's
x-ratelimit-limit/remaining/reset-requests/-tokens headers on every chat response
(`limit_headers=False` leaves them out); `log` entries carry the arrival time `at`.
A provider that refuses JSON schemas: `refuse_json_schema="...minItems..."` answers 400 to every
`response_format: json_schema` request (json_object requests are answered normally).

Run standalone (benchmarks): `python tests/teacher_server.py --port 0 --latency 0.2 --capacity 32`
prints `PORT <n>` and serves until killed; `GET /v1/stats` returns the in-flight statistics
(time-weighted mean and max, from the arrival of a request's headers to the end of its answer).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any, Callable

from aiohttp import web

# a client that gives up (timeout, kill -9) or a dropped connection is not a server error
logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)

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
    fmt = (request.get("response_format") or {}).get("json_schema") or {}
    if fmt.get("name") == "judge_scores":  # the teacher asked to judge (kdc's default): a passing verdict
        return {"faithfulness": 5, "relevance": 5, "format": 5, "standalone": 5, "rationale": "default judge"}
    schema = fmt.get("schema") or {}
    props = schema.get("properties", {})
    view = next((k for k in ("summary", "passages", "facts") if k in props or (not schema and f'- "{k}":' in prompt)), None)
    if view:  # kdc's augmentation stage (compile/augment.py): views built from the section's sentences
        return _view(view, _document(prompt) or "", rng)
    if "questions" in props or (not schema and '{"questions": [' in prompt):  # typed mode: K records
        return _typed(request, prompt, props.get("questions", {}), rng)
    if not schema:  # json_object mode: the keys the prompt asks for (its key list and shown shape)
        props = {k: {} for k in ("question", "answer", "context", "reasoning")
                 if k in ("question", "answer") or f'- "{k}":' in prompt or f'"{k}": [' in prompt}
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
    if props and "reasoning" not in props:  # a leaf without reasoning: the schema leaves it out
        record.pop("reasoning", None)
    return record


def _sentences(doc: str) -> list[str]:
    return [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+", doc) if len(s.split()) >= 5]


def _view(name: str, doc: str, rng: random.Random) -> dict:
    """A grounded view: a summary of the section's first sentences, two of them quoted verbatim,
    or each sentence as an atomic fact."""
    sentences = _sentences(doc) or [" ".join(doc.split()[:40]) or "The section is empty of facts today."]
    if name == "summary":
        return {"summary": " ".join(sentences[:3])}
    if name == "passages":
        return {"passages": sentences[:2]}
    return {"facts": sentences[:8]}


def _typed(request: dict, prompt: str, spec: dict, rng: random.Random) -> dict:
    """K typed records (one per requested type, in order), each grounded in a different sentence
    of the prompt's document where it has enough."""
    items = spec.get("items") or {}
    types = ((items.get("properties") or {}).get("type") or {}).get("enum") or \
        re.findall(r"^\d+\. ([a-z_ ]+?)(?: \(|$)", prompt, re.M) or ["definitional"]  # json_object: the listed types
    k = int(spec.get("minItems") or len(re.findall(r"^\d+\. ", prompt, re.M)) or 1)
    doc = _document(prompt) or ""
    sentences = _sentences(doc) or [" ".join(doc.split()[:30]) or "Nothing."]
    picks = rng.sample(sentences, k) if len(sentences) >= k else [sentences[j % len(sentences)] for j in range(k)]
    with_steps = not items or "reasoning" in (items.get("properties") or {})
    out = []
    for j, fact in enumerate(picks):
        lead = " ".join(fact.split()[:6])
        rec = {"type": types[j % len(types)],
               "question": f"Regarding {_words(rng, 2)}, what does the document state about {lead} {_words(rng, 3)}?",
               "reasoning": [f"The document says: {fact}", "So the answer restates that fact."], "answer": fact}
        if not with_steps:
            rec.pop("reasoning")
        out.append(rec)
    return {"questions": out}


def hash_judge(request: dict, number: int) -> dict:
    """A judge's reply (schemas/judge.json) from a hash of the example: about one in eight fails
    `format`. Deterministic per prompt, so a benchmark's judged build is reproducible."""
    low = _h(request.get("messages", [{}])[-1].get("content", "")) % 8 == 0
    return {"faithfulness": 5, "relevance": 4, "format": 2 if low else 5, "standalone": 5, "rationale": "hash judge"}


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
        self.tokens = {"prompt": 0, "completion": 0}  # the usage of every answer sent

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

    def count_tokens(self, prompt: int, completion: int) -> None:
        with self.lock:
            self.tokens["prompt"] += prompt
            self.tokens["completion"] += completion

    def snapshot(self) -> dict:
        with self.lock:
            span = (self.last_done - self.first) if self.first is not None else 0.0
            to_epoch = time.time() - time.monotonic()  # the busy period on the wall clock, for a client's
            return {"requests": self.requests, "max_in_flight": self.max_in_flight,  # start-up and wrap-up
                    "mean_in_flight": (self.area / span) if span > 0 else 0.0, "busy_s": span,
                    "by_status": dict(self.by_status), "tokens": dict(self.tokens),
                    "first_arrival_epoch": None if self.first is None else self.first + to_epoch,
                    "last_done_epoch": None if self.first is None else self.last_done + to_epoch}


class QuietHTTPServer(ThreadingHTTPServer):
    """A threaded http.server for small canned doubles that does not print a traceback when the
    client hangs up first (kdc closes its connections as soon as a fatal answer stops a run): in
    an in-process test that traceback would land in the captured stderr of kdc itself."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class TeacherServer:
    """`with TeacherServer(latency=0.05) as srv: ... srv.url ...`; see the module docstring.

    An aiohttp (asyncio) server on its own thread: one event loop serves every connection, so
    the server itself adds well under a millisecond per request and its in-flight count is what
    the client keeps in flight, not what a thread pool manages to pick up."""

    def __init__(self, *, responder: Callable[[dict, int], dict | str] = default_responder,
                 latency: float = 0.0, capacity: int | None = None, overflow: str = "429",
                 retry_after: float = 0.05, faults: FaultPlan | None = None, hang_s: float = 30.0,
                 model: str = "teacher-test", port: int = 0,
                 logprob: Callable[[str], float] = lambda content: -0.1, refuse_json_schema: str | None = None,
                 rpm: int | None = None, tpm: int | None = None, window_s: float = 60.0, limit_headers: bool = True):
        self.responder = responder
        self.rpm, self.tpm, self.window_s, self.limit_headers = rpm, tpm, window_s, limit_headers
        self._window: deque[list[float]] = deque()  # [arrival, tokens] of the admitted requests in the window
        # a provider that rejects `response_format: json_schema` with this 400 message (json_object works)
        self.refuse_json_schema = refuse_json_schema
        self.logprob = logprob  # the per-token logprob reported for an answer, when the client asks
        self.latency = latency
        self.capacity = capacity
        self.overflow = overflow  # "429": answer 429 + Retry-After beyond capacity; "queue": wait
        self.retry_after = retry_after
        self.faults = faults or FaultPlan()
        self.hang_s = hang_s
        self.model = model
        self.stats = _Stats()
        self.log: list[dict] = []  # one entry per chat request: number, fault, auth, body
        self._log_lock = threading.Lock()
        self._want_port = port
        self._port = 0
        self._busy = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._queue: asyncio.Semaphore | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "TeacherServer":
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._stopping = asyncio.Event()
            if self.capacity and self.overflow == "queue":
                self._queue = asyncio.Semaphore(self.capacity)
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("POST", "/{tail:.*}", self._post)
            app.router.add_route("GET", "/{tail:.*}", self._get)
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
            try:
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, "127.0.0.1", self._want_port, backlog=1024)
                loop.run_until_complete(site.start())
                self._port = site._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # e.g. port in use
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_until_complete(self._stopping.wait())
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

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
    async def _get(self, request: "web.Request") -> "web.Response":
        path = request.path.rstrip("/")
        if path.endswith("/models"):
            return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})
        if path.endswith("/stats"):
            return web.json_response(self.stats.snapshot())
        return web.json_response({"error": {"message": "not found"}}, status=404)

    async def _post(self, request: "web.Request") -> "web.StreamResponse":
        # in flight from the arrival of the request's headers to the end of its answer
        number = self.stats.enter()
        status = 599
        try:
            status, response = await self._chat(request, number)
            return response
        finally:
            self.stats.leave(status)

    async def _chat(self, request: "web.Request", number: int) -> tuple[int, "web.StreamResponse"]:
        if not request.path.rstrip("/").endswith("/chat/completions"):
            return 404, web.json_response({"error": {"message": "not found"}}, status=404)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return 400, web.json_response({"error": {"message": "request is not JSON"}}, status=400)
        if self.rpm or self.tpm:
            status, response = await self._limited(request, body, number)
            response.headers.update(self._limit_headers())
            return status, response
        return await self._admitted(request, body, number)

    async def _admitted(self, request: "web.Request", body: dict, number: int) -> tuple[int, "web.StreamResponse"]:
        if self._queue is not None:
            await self._queue.acquire()
        elif self.capacity and self._busy >= self.capacity:
            with self._log_lock:
                self.log.append({"number": number, "fault": "capacity", "body": body, "auth": None})
            return 429, web.json_response({"error": {"message": "over capacity", "type": "rate_limit"}},
                                          status=429, headers={"Retry-After": f"{self.retry_after}"})
        self._busy += 1
        try:
            fault = self.faults.pick(body, number)
            with self._log_lock:
                self.log.append({"number": number, "fault": fault, "body": body, "at": time.monotonic(),
                                 "auth": request.headers.get("Authorization")})
            return await self._answer(request, body, number, fault)
        finally:
            self._busy -= 1
            if self._queue is not None:
                self._queue.release()

    # -- the rate limit (rpm / tpm) -----------------------------------------------------------
    async def _limited(self, request, body: dict, number: int) -> tuple[int, "web.StreamResponse"]:
        now = time.monotonic()
        while self._window and self._window[0][0] <= now - self.window_s:
            self._window.popleft()
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        entry = [now, prompt + int(body.get("max_tokens") or 0)]
        waits = []
        if self.rpm and len(self._window) >= self.rpm:
            waits.append(self._window[len(self._window) - self.rpm][0] + self.window_s - now)
        if self.tpm:
            excess = sum(e[1] for e in self._window) + entry[1] - self.tpm
            for e in self._window:
                if excess <= 0:
                    break
                excess -= e[1]
                waits.append(e[0] + self.window_s - now)
        if waits:
            with self._log_lock:
                self.log.append({"number": number, "fault": "rate-limit", "body": body, "auth": None, "at": now})
            return 429, web.json_response({"error": {"message": "rate limit reached", "type": "requests"}}, status=429,
                                          headers={"Retry-After": f"{max(waits):.3f}"})
        self._window.append(entry)
        status, response = await self._admitted(request, body, number)
        if status == 200 and isinstance(response, web.Response) and response.body:
            usage = json.loads(response.body).get("usage") or {}
            entry[1] = int(usage.get("total_tokens") or entry[1])
        return status, response

    def _limit_headers(self) -> dict[str, str]:
        if not self.limit_headers:
            return {}
        now, out = time.monotonic(), {}
        last = (self._window[-1][0] + self.window_s - now) if self._window else 0.0
        for name, limit, used in (("requests", self.rpm, len(self._window)),
                                  ("tokens", self.tpm, sum(e[1] for e in self._window))):
            if limit:
                out.update({f"x-ratelimit-limit-{name}": str(limit),
                            f"x-ratelimit-remaining-{name}": str(max(0, limit - used)),
                            f"x-ratelimit-reset-{name}": f"{max(0.0, last):.3f}s"})
        return out

    def _respond(self, body: dict, number: int) -> dict | str:
        """The responder's answer. kdc asks a real teacher to judge its own samples by default
        (response_format `judge_scores`): a responder that only writes records (it fails, or its
        reply has no scores) gets a passing verdict in its place, as a willing teacher would give."""
        fmt = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        system = str((body.get("messages") or [{}])[0].get("content", ""))
        if fmt != "judge_scores" and not system.startswith("You grade"):  # json_object mode has no name
            return self.responder(body, number)
        try:
            made = self.responder(body, number)
        except Exception:
            made = None
        if isinstance(made, str) or (isinstance(made, dict) and "faithfulness" in made):
            return made
        return {"faithfulness": 5, "relevance": 5, "format": 5, "standalone": 5, "rationale": "default judge"}

    async def _answer(self, request, body: dict, number: int, fault: str | None):
        def error(status: int, message: str, kind: str, headers: dict | None = None):
            return status, web.json_response({"error": {"message": message, "type": kind}}, status=status,
                                             headers=headers)

        if self.refuse_json_schema and (body.get("response_format") or {}).get("type") == "json_schema":
            return error(400, self.refuse_json_schema, "invalid_request_error")
        if fault == "hang":
            try:
                await asyncio.wait_for(self._stopping.wait(), self.hang_s)
            except asyncio.TimeoutError:
                pass
            return error(504, "hung", "timeout")
        if fault == "429":
            return error(429, "rate limited", "rate_limit", {"Retry-After": f"{self.retry_after}"})
        if fault == "401":
            return error(401, "Incorrect API key provided", "invalid_request_error")
        if fault == "500":
            return error(500, "internal error", "server_error")
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault == "drop":
            if request.transport is not None:
                request.transport.close()
            return 599, web.Response(status=500)
        if fault == "malformed-json":
            content = '{"question": "unterminated'
        elif fault == "schema":
            content = json.dumps({"question": "Where is the answer?", "reasoning": "not a list"})
        elif fault == "empty":
            content = ""
        elif fault == "refusal":
            content = "I cannot help with that request."
        else:
            made = self._respond(body, number)
            content = made if isinstance(made, str) else json.dumps(made)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = len(content.split())
        self.stats.count_tokens(prompt_tokens, completion_tokens)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
        if body.get("logprobs"):  # OpenAI's shape: one entry per token (here: per whitespace word)
            lp = self.logprob(content)
            choice["logprobs"] = {"content": [{"token": w, "logprob": lp, "bytes": list(w.encode()), "top_logprobs": []}
                                              for w in content.split()]}
        return 200, web.json_response({
            "id": f"chatcmpl-{number}", "object": "chat.completion", "created": 1700000000,
            "model": body.get("model", self.model), "system_fingerprint": "fp_test",
            "choices": [choice],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--capacity", type=int, default=None)
    ap.add_argument("--overflow", choices=("429", "queue"), default="429")
    ap.add_argument("--judge", action="store_true", help="answer as a judge: rubric scores from a prompt hash")
    args = ap.parse_args()
    srv = TeacherServer(latency=args.latency, capacity=args.capacity, overflow=args.overflow, port=args.port,
                        responder=hash_judge if args.judge else default_responder)
    srv.start()
    print(f"PORT {srv.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
