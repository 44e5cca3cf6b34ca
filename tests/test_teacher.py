"""The teacher client against a real OpenAI-protocol HTTP server on 127.0.0.1, and the answer
parser. Every teacher test runs three times: kdc's direct HTTP client in this process and in two
forked worker processes (compiler/llm/transport.py), and litellm - the behaviour must not differ."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from jsonschema import Draft202012Validator

from compiler.errors import TeacherError
from compiler.compile.generate import parse
from compiler.llm.secrets import scrub
from compiler.llm.teacher import Teacher, TeacherFailure, response_format, response_schema
from teacher_server import FaultPlan, TeacherServer

MESSAGES = [{"role": "system", "content": "You write data."}, {"role": "user", "content": "Write one example."}]
FMT = response_format("freeform_skill")


WORKERS = {"n": 1, "transport": "http"}  # set per test by the `workers` fixture below


def ask(teacher: Teacher, n: int = 1, fmt: dict = FMT):
    async def go():
        return await asyncio.gather(*(teacher.complete(MESSAGES, fmt, seed=i) for i in range(n)),
                                    return_exceptions=True)
    with teacher:  # starts and stops the worker processes, if any
        return asyncio.run(go())


def make(url, **kw) -> Teacher:
    kw.setdefault("max_retries", 3)
    kw.setdefault("timeout", 5)
    kw.setdefault("workers", WORKERS["n"])
    kw.setdefault("transport", WORKERS["transport"])
    return Teacher("openai/teacher-test", api_bases=[url] if isinstance(url, str) else url, **kw)


@pytest.fixture(autouse=True, params=[(1, "http"), (2, "http"), (1, "litellm")],
                ids=["in-process", "2-workers", "litellm"])
def workers(request):
    WORKERS["n"], WORKERS["transport"] = request.param
    yield request.param[0]
    WORKERS.update(n=1, transport="http")


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-teacher")


def test_valid_answer_carries_usage_and_the_schema_reaches_the_server():
    with TeacherServer() as srv:
        [done] = ask(make(srv.url))
        body = srv.log[0]["body"]
    record = json.loads(done.text)
    Draft202012Validator(response_schema("freeform_skill")).validate(record)
    assert done.attempts == 1 and done.prompt_tokens > 0 and done.completion_tokens > 0
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == response_schema("freeform_skill")
    assert body["seed"] == 0 and body["messages"] == MESSAGES


def test_429_honours_retry_after_then_succeeds():
    with TeacherServer(retry_after=0.6, faults=FaultPlan(by_request={1: "429"})) as srv:
        t0 = time.monotonic()
        [done] = ask(make(srv.url))
        elapsed = time.monotonic() - t0
    assert done.attempts == 2
    assert elapsed >= 0.6  # waited as told, not the 0.25-0.75 s jittered backoff floor


def test_500_and_dropped_connection_are_retried():
    with TeacherServer(faults=FaultPlan(by_request={1: "500", 2: "drop"})) as srv:
        teacher = make(srv.url)
        [done] = ask(teacher)
    assert done.attempts == 3
    assert teacher.stats.retries == 2 and teacher.stats.failures == {"http-error": 2}


def test_hang_past_the_timeout_fails_with_reason_timeout():
    with TeacherServer(faults=FaultPlan(rates={"hang": 1.0}), hang_s=10) as srv:
        t0 = time.monotonic()
        [failure] = ask(make(srv.url, timeout=0.5, max_retries=1))
        assert time.monotonic() - t0 < 6
    assert isinstance(failure, TeacherFailure)
    assert failure.reason == "timeout" and failure.attempts == 2
    assert "gave up after 2 attempts" in failure.detail


def test_connection_refused_fails_with_http_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    [failure] = ask(make(f"http://127.0.0.1:{port}/v1", max_retries=1))
    assert isinstance(failure, TeacherFailure) and failure.reason == "http-error"


def test_bad_credentials_stop_the_run_without_leaking_the_key():
    with TeacherServer(faults=FaultPlan(rates={"401": 1.0})) as srv:
        [err] = ask(make(srv.url))
        assert srv.log[0]["auth"] == "Bearer sk-test-SECRET-teacher"  # the key was sent...
    assert isinstance(err, TeacherError)
    assert "SECRET" not in err.message and "SECRET" not in (err.hint or "")  # ...and never echoed


def test_requests_are_balanced_across_api_bases_and_a_dead_one_is_routed_around():
    with TeacherServer() as a, TeacherServer() as b:
        teacher = make([a.url, b.url])
        answers = ask(teacher, 20)
        assert all(not isinstance(x, Exception) for x in answers)
        assert a.chat_requests >= 5 and b.chat_requests >= 5 and a.chat_requests + b.chat_requests == 20
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with TeacherServer() as live:
        answers = ask(make([dead, live.url], max_retries=2), 6)
        assert all(not isinstance(x, Exception) for x in answers)
        assert live.chat_requests == 6


def test_concurrency_bound_is_respected():
    with TeacherServer(latency=0.15) as srv:
        teacher = make(srv.url, concurrency=4)
        ask(teacher, 16)
        stats = srv.stats.snapshot()
    assert stats["max_in_flight"] == 4 and teacher.stats.max_in_flight == 4
    # the slots are kept busy (not one request at a time); the server shares this process's GIL, so
    # on a loaded machine it counts ~2.5-3.5 (how close kdc's own figure is: tests/test_llm_client.py)
    assert stats["mean_in_flight"] > 2.0


def test_breaker_marks_the_teacher_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    teacher = make(f"http://127.0.0.1:{port}/v1", max_retries=0, concurrency=1)
    results = ask(teacher, 12)
    assert teacher.unavailable
    reasons = [r.reason for r in results]
    assert reasons.count("http-error") == 8 and reasons.count("teacher-unavailable") == 4


def test_missing_key_without_api_base_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(TeacherError) as exc:
        Teacher("openai/gpt-4o-mini")
    assert "OPENAI_API_KEY" in exc.value.message


# ------------------------------------------------------------------------- parsing
GOOD = {"question": "What is 2+2?", "reasoning": ["Add two and two."], "answer": "4"}


@pytest.mark.parametrize("text,reason", [
    ("", "empty"),
    ("   \n", "empty"),
    ('{"question": "unterminated', "invalid-json"),
    ("I cannot help with that request.", "refusal"),
    ("As an AI language model, I won't.", "refusal"),
    (json.dumps({**GOOD, "answer": "I'm sorry, but I can't answer that."}), "refusal"),
    (json.dumps({"question": "Q?", "reasoning": "not a list", "answer": "A"}), "schema"),
    (json.dumps({"question": "Q?", "answer": "A"}), "schema"),
    (json.dumps({**GOOD, "extra": 1}), "schema"),
    (json.dumps({**GOOD, "reasoning": []}), "schema"),
    (json.dumps({**GOOD, "answer": "  "}), "empty"),
    ("[1, 2]", "schema"),
])
def test_parse_rejects_with_a_reason(text, reason):
    out = parse(text, "freeform_skill")
    assert isinstance(out, tuple) and out[0] == reason, out


def test_parse_accepts_fenced_and_prefixed_json_and_checks_grounded_context():
    assert parse("```json\n" + json.dumps(GOOD) + "\n```", "freeform_skill") == GOOD
    assert parse("Here it is: " + json.dumps(GOOD), "freeform_skill") == GOOD
    assert parse(json.dumps(GOOD), "grounded_skill")[0] == "schema"  # grounded needs a context
    assert parse(json.dumps({"context": "Notes.", **GOOD}), "grounded_skill")["context"] == "Notes."
    assert parse(json.dumps({"context": "Notes.", **GOOD}), "knowledge")[0] == "schema"  # kdc supplies it
    assert parse('{"question": "Q', "freeform_skill", "length")[1].endswith("truncated at max_tokens")


def test_scrub_removes_keys(monkeypatch):
    monkeypatch.setenv("MY_PROVIDER_API_KEY", "abcdef123456")
    text = scrub("key abcdef123456 and sk-proj-ABCDEFGH1234 at https://user:pw@host/v1, Bearer eyJhbGciOiJIUzI1")
    assert "abcdef123456" not in text and "ABCDEFGH1234" not in text and "user:pw" not in text
    assert "eyJhbGciOiJIUzI1" not in text


def test_over_capacity_429s_are_absorbed_by_retries():
    with TeacherServer(latency=0.1, capacity=2, retry_after=0.05) as srv:
        teacher = make(srv.url, concurrency=6, max_retries=10)
        answers = ask(teacher, 12)
        stats = srv.stats.snapshot()
    assert all(not isinstance(a, Exception) for a in answers)
    assert stats["by_status"][200] == 12 and stats["by_status"].get(429, 0) >= 4
    assert teacher.stats.retries == stats["by_status"][429]
