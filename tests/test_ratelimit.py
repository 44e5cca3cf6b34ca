"""Rate limits (compiler/llm/ratelimit.py): kdc.yaml's rpm/tpm kept client-side, the server's
x-ratelimit-* and Retry-After headers honoured, AIMD on 429, against a teacher server that enforces
a sliding-window limit and says so in its headers.

Time is compressed: the limiter's window (rpm/tpm are per minute) and the server's are both set to
WINDOW seconds, so "rpm: 6" means 6 requests in any WINDOW seconds on both sides; the algorithm
does not depend on the window's length.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from compiler.config import load_config
from compiler.errors import ConfigError
from compiler.llm import ratelimit
from compiler.llm.backend import Outcome, rate_headers
from test_compile import compile_args, kdc, read_jsonl, tax, _env  # noqa: F401  (fixtures)
from teacher_server import TeacherServer

WINDOW = 2.0
TOTAL = 18  # the example taxonomy: 6 leaves x 3 samples


@pytest.fixture
def fast_window(monkeypatch):
    monkeypatch.setattr(ratelimit, "WINDOW_S", WINDOW)
    monkeypatch.setattr(ratelimit, "MARGIN_S", 0.05)


def most_in_any_window(times: list[float], weights: list[int] | None = None) -> int:
    """The largest count (or weight sum) of entries arriving within one window (the server's own log)."""
    weights = weights or [1] * len(times)
    pairs = sorted(zip(times, weights))
    best = 0
    for i, (t, _) in enumerate(pairs):
        best = max(best, sum(w for u, w in pairs[i:] if u < t + WINDOW))
    return best


def admitted(srv: TeacherServer) -> list[dict]:
    return [e for e in srv.log if e["fault"] != "rate-limit"]


def no_failed_sample(out) -> dict:
    m = json.loads((out / "manifest.json").read_text())
    assert m["totals"]["accepted"] == TOTAL and m["totals"]["shortfall"] == 0
    for n in m["nodes"].values():
        assert not [r for r in read_jsonl(out / n["files"]["rejected"]) if r["reason"] == "http-error"]
    return m


# --------------------------------------------------------------------------- end to end
def test_compile_keeps_the_configured_rpm_and_tpm_without_a_single_429(tax, tmp_path, kdc, fast_window):
    (tax / "kdc.yaml").write_text((tax / "kdc.yaml").read_text() + "rpm: 6\ntpm: 12000\n")
    out = tmp_path / "out"
    started = time.monotonic()
    with TeacherServer(rpm=6, tpm=12000, window_s=WINDOW) as srv:
        code, _, err = kdc(*compile_args(tax, out, srv))
        log = admitted(srv)
        limited = len(srv.log) - len(log)
    assert code == 0, err
    no_failed_sample(out)
    assert limited == 0  # the limiter knew the limit: the server never had to refuse
    times = [e["at"] for e in log]
    assert most_in_any_window(times) <= 6
    # the server's charge at admission (its words + max_tokens) is under kdc's estimate (chars / 4 + max_tokens)
    charge = [sum(len(m["content"].split()) for m in e["body"]["messages"]) + e["body"]["max_tokens"] for e in log]
    assert most_in_any_window(times, charge) <= 12000
    assert time.monotonic() - started >= (len(log) / 6 - 1) * WINDOW  # it did wait: 18+ requests, 6 a window


def test_the_servers_headers_alone_slow_kdc_down_with_no_failed_sample(tax, tmp_path, kdc, fast_window):
    out = tmp_path / "out"
    with TeacherServer(rpm=5, window_s=WINDOW) as srv:
        code, _, err = kdc(*compile_args(tax, out, srv))  # no rpm in kdc.yaml, 8 in flight
        log, limited = admitted(srv), [e for e in srv.log if e["fault"] == "rate-limit"]
    assert code == 0, err
    no_failed_sample(out)
    assert most_in_any_window([e["at"] for e in log]) <= 5
    # 429s only from the first burst, before any answer's headers were in (8 sent at once, 5 admitted,
    # a retry or two racing the first headers); without the headers kdc meets the limit again and again
    assert len(limited) <= 8, [round(e["at"] - log[0]["at"], 2) for e in limited]


def test_without_the_headers_aimd_and_retry_after_still_lose_no_sample(tax, tmp_path, kdc, fast_window):
    out = tmp_path / "out"
    with TeacherServer(rpm=5, window_s=WINDOW, limit_headers=False) as srv:
        code, _, err = kdc(*compile_args(tax, out, srv))
        limited = [e for e in srv.log if e["fault"] == "rate-limit"]
    assert code == 0, err
    no_failed_sample(out)
    assert limited  # the server had to say no this time, and Retry-After + AIMD recovered


# --------------------------------------------------------------------------- the limiter alone
def run(coro):
    return asyncio.run(coro)


def test_a_429_halves_the_window_once_a_round_and_answers_grow_it_back():
    lim = ratelimit.RateLimiter(ratelimit.Limits(), 8)
    lim.add_client(8)

    async def round_of(n, kind):
        entries = [await lim.admit(10) for _ in range(n)]
        for e in entries:
            lim.settle(e, Outcome(kind, status=429 if kind == "rate-limit" else 200))

    run(round_of(4, "rate-limit"))  # four 429s of one round: one cut
    assert lim.window == 4.0 and lim.cuts == 1 and lim.rate_limited == 4
    run(round_of(2, "rate-limit"))
    assert lim.window == 2.0 and lim.cuts == 2
    run(round_of(2, "ok"))
    assert 2.0 < lim.window < 3.0  # +1 per window's worth of answers
    for _ in range(40):
        run(round_of(2, "ok"))
    assert lim.window == 8.0  # back to the client's concurrency, never above


def test_retry_after_and_an_exhausted_server_budget_pause_every_request():
    lim = ratelimit.RateLimiter(ratelimit.Limits(), 4)
    lim.add_client(4)

    async def go():
        first = await lim.admit(10)
        lim.settle(first, Outcome("ok", headers={"x-ratelimit-remaining-requests": "0",
                                                 "x-ratelimit-reset-requests": "300ms"}))
        t = time.monotonic()
        second = await lim.admit(10)
        waited = time.monotonic() - t
        lim.settle(second, Outcome("error", status=503, retry_after=0.3))
        t = time.monotonic()
        await lim.admit(10)
        return waited, time.monotonic() - t

    reset_wait, pause = run(go())
    assert 0.25 <= reset_wait < 1.0 and 0.25 <= pause < 1.0


def test_tokens_are_estimated_then_corrected_by_the_usage_answered(monkeypatch):
    monkeypatch.setattr(ratelimit, "WINDOW_S", 0.5)
    monkeypatch.setattr(ratelimit, "MARGIN_S", 0.0)
    lim = ratelimit.RateLimiter(ratelimit.Limits(tpm=1000), 8)
    lim.add_client(8)
    kwargs = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 500}
    assert ratelimit.estimate(kwargs) == 100 + 4 + 500

    async def go():
        a = await lim.admit(ratelimit.estimate(kwargs))
        lim.settle(a, Outcome("ok", prompt_tokens=90, completion_tokens=10))  # 100 used, not 604
        t = time.monotonic()
        b = await lim.admit(ratelimit.estimate(kwargs))  # 100 + 604 <= 1000: at once
        now = time.monotonic() - t
        lim.settle(b, Outcome("error", status=500, sent=time.monotonic()))  # no usage: the estimate stays
        t = time.monotonic()
        await lim.admit(ratelimit.estimate(kwargs))  # 100 + 604 + 604 > 1000: after the window
        return now, time.monotonic() - t

    at_once, later = run(go())
    assert at_once < 0.1 and later >= 0.3


def test_reset_durations_and_header_capture():
    assert ratelimit.parse_reset("6m0s") == 360.0 and ratelimit.parse_reset("20ms") == pytest.approx(0.02)
    assert ratelimit.parse_reset("1h2m3.5s") == pytest.approx(3723.5) and ratelimit.parse_reset("2") == 2.0
    assert ratelimit.parse_reset("soon") is None and ratelimit.parse_reset("1x") is None
    raw = {"LLM_Provider-X-RateLimit-Remaining-Requests": "3", "content-type": "application/json", "Retry-After": "1"}
    assert rate_headers(raw) == {"x-ratelimit-remaining-requests": "3", "retry-after": "1"}
    assert rate_headers({"server": "x"}) is None


def test_the_teacher_and_its_self_judge_share_one_budget_per_endpoint():
    ratelimit.declare([("openai/m", ["http://a/v1"], 100, None), ("openai/m", ["http://a/v1"], 40, 9000),
                       ("openai/j", [], None, 500)])
    a = ratelimit.limiter_for("openai/m", "http://a/v1", 8)
    b = ratelimit.limiter_for("openai/m", "http://a/v1", 4)
    assert a is b and a.limits == ratelimit.Limits(40, 9000) and a.ceiling == 12
    assert ratelimit.limiter_for("openai/j", None, 2).limits == ratelimit.Limits(None, 500)
    assert ratelimit.limiter_for("openai/other", None, 2) is not ratelimit.limiter_for("openai/other", None, 2)
    ratelimit.declare([])  # the next run starts afresh: no state shared with the last one's clients
    assert ratelimit.limiter_for("openai/m", "http://a/v1", 8) is not a


@pytest.mark.parametrize("line,message", [("rpm: 0", "rpm must be at least 1"),
                                          ("judge_tpm: lots", "judge_tpm must be a positive integer")])
def test_a_bad_limit_in_kdc_yaml_is_a_located_error(tmp_path, line, message):
    (tmp_path / "kdc.yaml").write_text(f"seed: 1\n{line}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path, None, {})
    assert message in exc.value.message and exc.value.line == 2
