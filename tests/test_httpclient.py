"""The direct OpenAI-compatible client (compiler/llm/httpclient.py) against real HTTP servers on
127.0.0.1: the project's test teacher (its fault injection) and, for answers that teacher cannot
give (403, a context-window or content-policy 400, rate-limit headers), a small aiohttp server
that answers one canned response. Each outcome kind, the scrubbed key echo, the headers, the
routing rules, byte identity with the litellm path, and a run that never imports litellm."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from aiohttp import web

from compiler.errors import ConfigError, TeacherError
from compiler.llm import httpclient
from compiler.llm.httpclient import HttpClient, choose_transport
from compiler.llm.schemafallback import schema_refusal
from compiler.llm.teacher import Teacher, response_format
from teacher_server import FaultPlan, TeacherServer

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-SECRET-9d2e7b41"


class Canned:
    """An HTTP server answering every POST with (status, JSON body, headers); the body may name
    `{auth}` to echo the Authorization header the client sent (as some providers' 401s do)."""

    def __init__(self, status: int, body: dict, headers: dict | None = None):
        self.status, self.body, self.headers = status, body, headers or {}
        self.port = 0
        self._ready = threading.Event()

    async def _post(self, request: web.Request) -> web.Response:
        text = json.dumps(self.body).replace("{auth}", request.headers.get("Authorization", ""))
        return web.Response(status=self.status, text=text, content_type="application/json", headers=self.headers)

    def __enter__(self) -> "Canned":
        def serve():
            self.loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_route("POST", "/{tail:.*}", self._post)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            self.loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            self._ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(runner.cleanup())

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def one(url: str, *, model: str = "openai/teacher-test", timeout: float = 10.0, **extra):
    """One attempt of a fresh client on a fresh event loop."""
    client = HttpClient(4)

    async def go():
        try:
            return await client.attempt({"model": model, "api_base": url, "messages": [{"role": "user", "content": "hi"}],
                                         "timeout": timeout, "max_retries": 0, "drop_params": True, **extra}, timeout + 5)
        finally:
            await client.aclose()
    return asyncio.run(go())


def error(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "code": code}}


@pytest.mark.parametrize("status, body, kind", [
    (403, error("Project does not have access to model"), "auth"),
    (404, error("The model `nope` does not exist", code="model_not_found"), "not-found"),
    (400, error("This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens",
                code="context_length_exceeded"), "context-window"),
    (400, error("Your request was rejected as a result of our safety system", code="content_policy_violation"), "refusal"),
    (400, error("Invalid value for 'temperature': must be at most 2"), "bad-request"),
    (422, error("unprocessable"), "bad-request"),
    (503, error("overloaded", "server_error"), "error"),
])
def test_every_status_becomes_the_litellm_paths_outcome_kind(status, body, kind):
    with Canned(status, body) as srv:
        out = one(srv.url)
    assert (out.kind, out.status) == (kind, status)
    assert body["error"]["message"][:40] in out.message
    assert 0 < out.sent <= out.answered


def test_a_schema_refusal_is_a_bad_request_the_fallback_recognises():
    with TeacherServer(refuse_json_schema="response_format json_schema: minItems is not supported") as srv:
        out = one(srv.url, response_format=response_format("freeform_skill"))
        ok = one(srv.url, response_format={"type": "json_object"})
    assert out.kind == "bad-request" and out.status == 400 and schema_refusal(out)
    assert ok.kind == "ok"


def test_rate_limit_keeps_retry_after_and_every_rate_limit_header_lower_cased():
    headers = {"Retry-After": "7", "X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset-Tokens": "6m0s",
               "X-Request-Id": "not-a-rate-limit-header"}
    with Canned(429, error("Rate limit reached", "requests"), headers) as srv:
        out = one(srv.url)
    assert out.kind == "rate-limit" and out.retry_after == 7.0
    assert out.headers == {"retry-after": "7", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-tokens": "6m0s"}
    with Canned(429, error("slow down"), {"retry-after-ms": "1500"}) as srv:
        assert one(srv.url).retry_after == 1.5


def test_headers_are_kept_on_an_ok_answer_too():
    body = {"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "x y"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    with Canned(200, body, {"x-ratelimit-limit-tokens": "90000", "x-ratelimit-remaining-tokens": "89990"}) as srv:
        out = one(srv.url)
    assert (out.kind, out.text, out.finish_reason, out.prompt_tokens, out.completion_tokens) == ("ok", "x y", "length", 3, 2)
    assert out.headers == {"x-ratelimit-limit-tokens": "90000", "x-ratelimit-remaining-tokens": "89990"}
    assert out.logprobs is None  # not asked, not returned


def test_the_test_teachers_faults_map_to_their_kinds():
    cases = {"429": "rate-limit", "500": "error", "401": "auth", "drop": "error"}
    for fault, kind in cases.items():
        with TeacherServer(faults=FaultPlan(rates={fault: 1.0})) as srv:
            out = one(srv.url)
        assert out.kind == kind, fault
        if fault == "429":
            assert out.retry_after == pytest.approx(0.05) and out.headers == {"retry-after": "0.05"}
    with TeacherServer(faults=FaultPlan(rates={"hang": 1.0}), hang_s=5) as srv:
        out = one(srv.url, timeout=0.3)
    assert out.kind == "timeout" and 0.25 < out.answered - out.sent < 2
    out = one("http://127.0.0.1:9/v1")  # nothing listens on the discard port: connection refused
    assert out.kind == "error" and "connection" in out.message


def test_an_ok_answer_has_usage_finish_reason_logprobs_and_the_model_name_without_provider():
    with TeacherServer(logprob=lambda content: -0.25) as srv:
        out = one(srv.url, model="hosted_vllm/teacher-test", logprobs=True, seed=3,
                  response_format=response_format("freeform_skill"))
        body = srv.log[0]["body"]
    assert out.kind == "ok" and json.loads(out.text)["question"]
    assert out.finish_reason == "stop" and out.completion_tokens == len(out.text.split()) and out.prompt_tokens == 1
    assert out.logprobs == [-0.25] * out.completion_tokens
    assert body["model"] == "teacher-test" and body["seed"] == 3 and body["logprobs"] is True
    assert not {"timeout", "max_retries", "drop_params", "api_base", "api_key"} & set(body)
    assert out.cost_usd is None  # hosted_vllm models have no price


def test_a_401_that_echoes_the_key_is_scrubbed_by_value():
    with Canned(401, error("Incorrect API key provided: {auth}")) as srv:
        out = one(srv.url, api_key=KEY)
    assert out.kind == "auth" and "Incorrect API key" in out.message
    assert KEY not in out.message and "SECRET" not in out.message
    with Canned(401, error("bad key {auth}")) as srv:
        with pytest.raises(TeacherError) as exc:
            t = Teacher("openai/teacher-test", api_bases=[srv.url], transport="http")
            t._api_key = "zz-plain-9f8e7d6c5b"  # a key of any shape, given by value (a judge's own variable)
            asyncio.run(t.complete([{"role": "user", "content": "hi"}], None))
    assert "zz-plain-9f8e7d6c5b" not in exc.value.message and "rejected the credentials" in exc.value.message


def test_prices_come_from_litellms_map_without_importing_it():
    import litellm

    for model in ("openai/gpt-4o-mini", "openai/gpt-4o"):
        p, c = litellm.cost_per_token(model=model, prompt_tokens=1000, completion_tokens=500)
        assert httpclient.price(model, 1000, 500) == pytest.approx(p + c)
    assert httpclient.model_price("hosted_vllm/my-model") is None
    assert httpclient.model_price("openai/no-such-model-xyz") is None


def test_routing_auto_takes_the_direct_path_only_for_openai_protocol_models_with_an_endpoint():
    base = ["http://127.0.0.1:1/v1"]
    assert choose_transport("openai/gpt-4o", base, "auto") == "http"
    assert choose_transport("hosted_vllm/llama", base, "auto") == "http"
    assert choose_transport("openai/gpt-4o", [], "auto") == "litellm"  # the provider's own endpoint: litellm
    assert choose_transport("anthropic/claude-3", base, "auto") == "litellm"
    assert choose_transport("kdc/gemma3-270m", [], "http") == "litellm"  # the embedded model is litellm's
    assert choose_transport("openai/gpt-4o", base, "litellm") == "litellm"
    with pytest.raises(TeacherError, match="OpenAI protocol"):
        choose_transport("anthropic/claude-3", base, "http")


def test_a_bad_transport_setting_is_a_located_config_error(tmp_path, example_taxonomy):
    from compiler.config import load_config

    cfg = tmp_path / "mine.yaml"
    cfg.write_text("concurrency: 4\ntransport: fast\n")
    with pytest.raises(ConfigError) as exc:
        load_config(example_taxonomy, cfg, {})
    assert "transport" in exc.value.message and exc.value.line == 2


# --------------------------------------------------------------------------- whole builds
@pytest.fixture
def tax(tmp_path, example_taxonomy) -> Path:
    shutil.copytree(example_taxonomy, tmp_path / "taxonomy")
    shutil.copytree(ROOT / "build" / "doc-repos", tmp_path / "build" / "doc-repos", symlinks=True)
    (tmp_path / ".git").mkdir()
    return tmp_path / "taxonomy"


def _hashes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".kdc" not in p.parts and p.name != "manifest.json"}


def _compile(tax: Path, out: Path, url: str, transport: str) -> subprocess.CompletedProcess:
    """`kdc compile` in a child process (a clean sys.modules), reporting whether litellm got imported."""
    code = textwrap.dedent(f"""
        import sys
        from compiler.cli import main
        sys.argv = ["kdc", "compile", {str(tax)!r}, "--out", {str(out)!r}, "--teacher", "openai/teacher-test",
                    "--api-base", {url!r}, "--concurrency", "8", "--samples-per-node", "2", "--transport", {transport!r}, "-q"]
        try:
            main()
        except SystemExit as exc:
            print("LITELLM", "litellm" in sys.modules, "EXIT", exc.code)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OPENAI_API_KEY": KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)


def test_a_build_is_byte_identical_through_either_transport_and_the_direct_one_never_imports_litellm(tax, tmp_path):
    out = tmp_path / "out"  # the same folder for both (report.html names it), the first run moved away
    with TeacherServer() as srv:  # the teacher judges its own samples too (the default): both clients used
        direct = _compile(tax, out, srv.url, "http")
        asked = srv.chat_requests
        judged = sum(1 for e in srv.log if (e["body"].get("response_format") or {}).get("json_schema", {})
                     .get("name") == "judge_scores")
        out.rename(tmp_path / "http")
        via = _compile(tax, out, srv.url, "litellm")
        out.rename(tmp_path / "litellm")
        assert srv.chat_requests == 2 * asked  # no cache: the litellm run asked everything again
    assert "LITELLM False EXIT 0" in direct.stdout, direct.stdout + direct.stderr
    assert "LITELLM True EXIT 0" in via.stdout, via.stdout + via.stderr
    assert judged > 0  # the judge went through the direct client as well
    a, b = _hashes(tmp_path / "http"), _hashes(tmp_path / "litellm")
    assert len(a) > 10 and a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    for name in ("http", "litellm"):
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert manifest["config"]["transport"] == manifest["totals"]["transport"] == name


def test_auto_forks_no_workers_on_the_direct_path_but_a_forced_count_still_holds(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    base = ["http://127.0.0.1:1/v1"]
    assert Teacher("openai/t", api_bases=base, concurrency=256, workers=None, transport="http").workers == 1
    assert Teacher("openai/t", api_bases=base, concurrency=256, workers=2, transport="http").workers == 2
    if (os.cpu_count() or 1) >= 2:  # litellm's rule: one worker per 64 in flight, up to the cores
        assert Teacher("openai/t", api_bases=base, concurrency=256, workers=None, transport="litellm").workers >= 2



def test_closing_the_client_under_an_attempt_leaves_no_unread_task_exception():
    """The CI failure of stop 18: a fatal 401 stopped a run while an attempt was starting on the
    I/O loop; the session closed before that attempt sent, the caller had gone (cancelled), and
    asyncio printed "Task exception was never retrieved" with a traceback on the user's stderr.
    Closing now cancels the attempts first; an attempt that still meets a closed session is an
    ordinary error outcome."""
    import gc
    import logging

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    kwargs = {"model": "openai/teacher-test", "timeout": 10.0, "messages": [{"role": "user", "content": "hi"}]}

    async def abandoned(url: str) -> str:
        client = HttpClient(4)
        client._session()
        task = asyncio.ensure_future(client.attempt({**kwargs, "api_base": url}, 15.0))
        closing = asyncio.ensure_future(client.aclose())
        await asyncio.sleep(0)  # the attempt reaches its POST; the session starts closing
        await asyncio.sleep(0)  # the POST runs against the closing session
        task.cancel()  # the caller gives up, as the scheduler does on a fatal error
        await closing
        await asyncio.sleep(0.05)
        state = "cancelled" if task.cancelled() else task.result().kind
        del task
        gc.collect()
        return state

    async def straggler(url: str) -> str:
        client = HttpClient(4)
        client._session()
        await client.aclose()
        client._sessions[asyncio.get_running_loop()] = type("Closed", (), {"closed": False, "post": _closed_post})()
        return (await client.attempt({**kwargs, "api_base": url}, 15.0)).kind

    keep = Keep(logging.ERROR)
    logging.getLogger("asyncio").addHandler(keep)
    try:
        with TeacherServer(latency=1.0) as srv:
            assert asyncio.run(abandoned(srv.url)) == "cancelled"
            assert asyncio.run(straggler(srv.url)) == "error"
        gc.collect()
    finally:
        logging.getLogger("asyncio").removeHandler(keep)
    assert [m for m in seen if "never retrieved" in m] == []


def _closed_post(*args, **kwargs):
    raise RuntimeError("Session is closed")  # what aiohttp raises for a post on a closed session
