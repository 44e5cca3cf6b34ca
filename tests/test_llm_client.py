"""The one LLM client, from outside: only compiler/llm/backend.py imports litellm; the eval judge
gets the client's retry policy (Retry-After) and scrub; the "in flight" figure kdc reports (API and
manifest.json) is the one the teacher server counts itself."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from compiler.errors import TeacherError
from compiler.llm.teacher import Teacher, TeacherFailure, response_format
from compiler.train.evaljudge import Judge, judge_pair
from compiler.train.evaluate import EvalItem
from teacher_server import FaultPlan, QuietHTTPServer, TeacherServer
from test_compile import compile_args, kdc, tax  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent
ITEM = EvalItem("n", "Which moons has Mars?", "Phobos and Deimos.", None, 0)
# kdc stamps each HTTP exchange in the process that makes it, so its figure still holds that
# process's scheduling lag (tens of ms on a loaded 2-core machine) where the server's holds its own;
# with 500 ms answers it must agree with the server's count within 15 % plus a quarter of a request.
REL, ABS = 0.15, 0.25


def longer_wins(request: dict, number: int) -> str:
    text = request["messages"][-1]["content"]
    a = text.split("<answer_a>\n", 1)[1].split("\n</answer_a>", 1)[0]
    b = text.split("<answer_b>\n", 1)[1].split("\n</answer_b>", 1)[0]
    return json.dumps({"winner": "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"})


def test_exactly_one_module_imports_litellm():
    importers = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "compiler").rglob("*.py")
                       if re.search(r"^\s*(import litellm\b|from litellm\b)", p.read_text(encoding="utf-8"), re.M))
    assert importers == ["compiler/llm/backend.py"]


def test_the_eval_judge_honours_retry_after_and_asks_both_orders(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-evaljudge")
    # the first request is rate limited with Retry-After: 1.5 s (longer than the client's first
    # backoff, 0.25-0.75 s, and than the old eval judge's fixed 1 s sleep)
    with TeacherServer(responder=longer_wins, faults=FaultPlan(by_request={1: "429"}), retry_after=1.5) as srv:
        started = time.monotonic()
        verdict = judge_pair(Judge("openai/judge-test", srv.url), ITEM, "a longer tuned answer", "short")
        elapsed = time.monotonic() - started
        statuses = srv.stats.snapshot()["by_status"]
        bodies = [entry["body"] for entry in srv.log]
    assert verdict == "model"
    assert statuses == {429: 1, 200: 2}  # both orders answered, the rate-limited one once more
    assert elapsed >= 1.5
    assert all(b["temperature"] == 0.0 and b["max_tokens"] == 300 and "response_format" not in b for b in bodies)


class _Echo(BaseHTTPRequestHandler):
    """Answers 400 with the request's Authorization header in the error text (as some providers do)."""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"error": {"message": f"bad request from {self.headers.get('Authorization')}",
                                     "type": "invalid_request_error"}}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def echo():
    server = QuietHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_errors_are_scrubbed_for_the_eval_judge_and_for_a_key_under_any_variable_name(echo, monkeypatch):
    secret = "hunter2-eval-judge-credential-77"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    with pytest.raises(TeacherError) as exc:
        judge_pair(Judge("openai/judge-test", echo, retries=0), ITEM, "x", "y")
    assert "--judge" in exc.value.hint and "bad request" in exc.value.message
    assert secret not in exc.value.message + exc.value.hint
    # a key handed to the client by value (the gate judge's judge_api_key_env may be named anything)
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("MY_JUDGE_CRED", "cred-value-9f8e7d6c5b")
    client = Teacher("openai/judge-test", api_bases=[echo], max_retries=0, workers=1)
    client._api_key = "cred-value-9f8e7d6c5b"
    with pytest.raises(TeacherFailure) as failure:
        asyncio.run(client.complete([{"role": "user", "content": "hi"}], None))
    assert "bad request from" in failure.value.detail and "cred-value" not in failure.value.detail


def _close(kdc_figure: float, server_figure: float) -> bool:
    return abs(kdc_figure - server_figure) <= REL * server_figure + ABS


@pytest.fixture
def own_process_server():
    """tests/teacher_server.py in its own process (as in benchmarks: no GIL shared with kdc, which
    would delay the server's own clock), answering in 500 ms; yields (url, stats())."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "teacher_server.py"), "--latency", "0.5"],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline().split()[1])
        url = f"http://127.0.0.1:{port}/v1"

        def stats() -> dict:
            with urllib.request.urlopen(f"{url}/stats", timeout=10) as resp:
                return json.loads(resp.read())
        yield url, stats
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "2-workers"])
def test_the_in_flight_figure_is_the_servers(workers, own_process_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-occupancy")
    url, stats = own_process_server
    fmt = response_format("freeform_skill")
    teacher = Teacher("openai/teacher-test", api_bases=[url], concurrency=8, workers=workers, timeout=10)

    async def go():
        return await asyncio.gather(*(teacher.complete([{"role": "user", "content": f"q{i}"}], fmt, seed=i)
                                      for i in range(48)))
    with teacher:
        asyncio.run(go())
    server = stats()
    assert server["requests"] == 48 and server["mean_in_flight"] > 2
    assert _close(teacher.stats.mean_in_flight, server["mean_in_flight"]), (teacher.stats.mean_in_flight, server)


def test_manifest_mean_in_flight_is_what_the_teacher_server_counted(tax, tmp_path, kdc, own_process_server):  # noqa: F811
    url, stats = own_process_server
    code, _, err = kdc(*compile_args(tax, tmp_path / "out", url, "--samples-per-node", "8"))
    server = stats()
    assert code == 0, err
    totals = json.loads((tmp_path / "out" / "manifest.json").read_text())["totals"]
    assert totals["http_attempts"] == server["requests"]
    assert _close(totals["mean_in_flight"], server["mean_in_flight"]), (totals["mean_in_flight"], server)
