"""Client-side rate limits: one limiter per endpoint (model + api_base), shared by every client of
that endpoint in the process (the teacher and a teacher that judges itself draw on one budget).

Before each attempt `RateLimiter.call` waits until the request fits
- the configured `rpm`/`tpm` (kdc.yaml; `judge_rpm`/`judge_tpm` for a judge on its own endpoint):
  a sliding window of WINDOW_S + MARGIN_S seconds holding each request sent and its tokens.
  Tokens are estimated as a provider's limiter does before it has seen the answer (the prompt's
  characters / 4 plus max_tokens) and corrected to the usage the answer reports;
- what the server said last: `x-ratelimit-remaining-requests/-tokens` (less what kdc sent since
  the answer that carried them) hold until `x-ratelimit-reset-requests/-tokens` (the time to a
  full reset, as OpenAI defines it); `Retry-After` pauses every request to the endpoint;
- a concurrency window, AIMD as TCP does: halved on a 429 (once per round of requests: a 429 of a
  request sent before the last cut does not cut again), +1 per window's worth of answers, up to
  the client's concurrency. Why multiplicative: when the real limit is far below what kdc
  assumed, an additive decrease needs many rounds of 429s to get there; halving needs a few.

Why a sliding window and not a token bucket: a sliding window never lets more than `rpm` through
in any minute, which satisfies both a sliding-window server and a token-bucket server whose burst
is its per-minute limit (OpenAI's); a bucket refilled at rpm/60 can send 2 x rpm in one minute.
A 429 is still retried by the client (Retry-After honoured); the limiter's job is that it does
not happen when the limit is known.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from compiler.llm.backend import retry_after_seconds

__all__ = ["RateLimiter", "declare", "limiter_for", "parse_reset"]

log = logging.getLogger("kdc.teacher")

WINDOW_S = 60.0  # rpm and tpm are per minute
MARGIN_S = 1.0  # a server stamps a request on arrival: count a slightly longer window than it does
POLL_S = 0.02  # re-check of a full concurrency window (answers free it)
MAX_SLEEP_S = 1.0  # re-check at least this often: new headers may open the way earlier
PAUSE_CAP_S = 120.0  # the longest Retry-After honoured (the client's own cap)
UNKNOWN_COMPLETION = 512  # tokens counted for an answer when the request sets no max_tokens


@dataclass(frozen=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None

    def tighter(self, other: "Limits") -> "Limits":
        def low(a, b):
            return b if a is None else a if b is None else min(a, b)
        return Limits(low(self.rpm, other.rpm), low(self.tpm, other.tpm))


_DECLARED: dict[tuple[str, str], Limits] = {}
_LIMITERS: "weakref.WeakValueDictionary[tuple[str, str], RateLimiter]" = weakref.WeakValueDictionary()
_LOCK = threading.Lock()


def declare(endpoints: list[tuple[str | None, list[str] | None, int | None, int | None]]) -> None:
    """The endpoints of a run, (model, api_bases, rpm, tpm) each, replacing any declared before.
    Clients created after this share one limiter per declared endpoint; an endpoint named twice
    (the teacher judging itself) gets the tighter of both limits. A new run starts from fresh
    limiters: nothing (a pause, a cut window) carries over from an earlier run in this process."""
    table: dict[tuple[str, str], Limits] = {}
    for model, bases, rpm, tpm in endpoints:
        if not model:
            continue
        for base in bases or [""]:
            key = (model, base or "")
            table[key] = table.get(key, Limits()).tighter(Limits(rpm, tpm))
    with _LOCK:
        _DECLARED.clear()
        _DECLARED.update(table)
        _LIMITERS.clear()


def limiter_for(model: str, base: str | None, concurrency: int) -> "RateLimiter":
    """The endpoint's limiter: shared while any client holds it when the run declared the
    endpoint (each client adds its concurrency to the window's ceiling: two clients of one
    endpoint may each fill their own slots), else the client's own."""
    key = (model, base or "")
    with _LOCK:
        limiter = _LIMITERS.get(key)
        if limiter is None:
            limiter = RateLimiter(_DECLARED.get(key, Limits()), 0, name=f"{model}@{base}" if base else model)
            if key in _DECLARED:
                _LIMITERS[key] = limiter
        limiter.add_client(concurrency)
        return limiter


def parse_reset(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a reset header: OpenAI's durations ("1s", "6m0s", "20ms", "1h2m3.5s"), plain
    seconds, or a Unix time (some providers send one)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    try:
        number = float(text)
    except ValueError:
        parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
        if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
            return None
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(n) * scale[u] for n, u in parts)
    if number > 1e9:  # a timestamp
        return max(0.0, number - (time.time() if now is None else now))
    return max(0.0, number)


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


@dataclass
class _Sent:
    at: float
    tokens: int
    seq: int
    tokens_before: int  # every token estimate sent before this one (for the server's view)
    done: bool = False  # answered: `at` is then when the request went out (Outcome.sent)


@dataclass
class _Server:
    """What the last answer's headers said of one budget (requests or tokens)."""

    remaining: float = 0.0
    until: float = 0.0  # monotonic time of the full reset; no constraint after it
    seq: int = -1  # the request whose answer said it (an older answer never overrides)


class RateLimiter:
    """See the module docstring. Safe to share between event loops and threads (a lock guards the
    state; waiting is by sleeping, never on a loop-bound primitive)."""

    def __init__(self, limits: Limits, concurrency: int, *, name: str = ""):
        self.limits = limits
        self.name = name
        self.ceiling = max(1, concurrency)
        self.window = float(self.ceiling)
        self.in_flight = 0
        self._sent: deque[_Sent] = deque()  # in admission order
        self._window_tokens = 0
        self._seq = 0
        self._tokens_sent = 0
        self._paused_until = 0.0
        self._requests = _Server()
        self._tokens = _Server()
        self._last_cut = -1
        self._clients = 0
        self._lock = threading.Lock()
        # counters, for tests and logs
        self.waited_s = 0.0
        self.rate_limited = 0
        self.cuts = 0

    def add_client(self, concurrency: int) -> None:
        self.ceiling = max(1, concurrency) if not self._clients else self.ceiling + max(1, concurrency)
        self._clients += 1
        self.window = float(self.ceiling)

    # -- the one entry point ----------------------------------------------------------------
    async def call(self, send: Callable[[dict[str, Any], float], Awaitable[Any]], kwargs: dict[str, Any],
                   deadline: float) -> Any:
        """`send(kwargs, deadline)` (one transport attempt, returning an Outcome) once the request
        fits every limit; its outcome then updates the limits."""
        sent = await self.admit(estimate(kwargs))
        out = None
        try:
            out = await send(kwargs, deadline)
            return out
        finally:
            self.settle(sent, out)

    async def admit(self, tokens: int) -> _Sent:
        started = time.monotonic()
        while True:
            with self._lock:
                now = time.monotonic()
                wait = self._wait(tokens, now)
                if wait == 0.0:
                    self._seq += 1
                    entry = _Sent(now, tokens, self._seq, self._tokens_sent)
                    self._tokens_sent += tokens
                    self._sent.append(entry)
                    self._window_tokens += tokens
                    self.in_flight += 1
                    if now < self._requests.until:
                        self._requests.remaining -= 1
                    if now < self._tokens.until:
                        self._tokens.remaining -= tokens
                    self.waited_s += now - started
                    return entry
            await asyncio.sleep(POLL_S if wait is None else min(wait, MAX_SLEEP_S))

    def _wait(self, tokens: int, now: float) -> float | None:
        """0.0: send now; None: the concurrency window is full; else seconds until it may fit.
        A request in flight has no known expiry yet (it may go out later than it was admitted:
        litellm's first call, a busy machine): it counts until its answer stamps when it was sent."""
        if self.in_flight >= max(1, int(self.window)):
            return None
        span = WINDOW_S + MARGIN_S
        while self._sent and self._sent[0].done and self._sent[0].at <= now - span:
            self._window_tokens -= self._sent.popleft().tokens
        waits = [self._paused_until - now]
        rpm, tpm = self.limits.rpm, self.limits.tpm
        if rpm and len(self._sent) >= rpm:
            waits.append(self._expiry(self._sent[len(self._sent) - rpm], now, span))
        if tpm and self._window_tokens + min(tokens, tpm) > tpm:  # one over the limit: into an empty window
            excess = self._window_tokens + min(tokens, tpm) - tpm
            for s in self._sent:
                if excess <= 0:
                    break
                excess -= s.tokens
                waits.append(self._expiry(s, now, span))
        if now < self._requests.until and self._requests.remaining < 1:
            waits.append(self._requests.until - now)
        if now < self._tokens.until and self._tokens.remaining < tokens:
            waits.append(self._tokens.until - now)
        wait = max(waits)
        return 0.0 if wait <= 0 else wait

    @staticmethod
    def _expiry(entry: _Sent, now: float, span: float) -> float:
        return entry.at + span - now if entry.done else MAX_SLEEP_S  # in flight: look again soon

    def settle(self, entry: _Sent, out: Any) -> None:
        """The attempt is over: usage, headers, Retry-After and AIMD from its outcome (None: the
        attempt was cancelled; its request still counts)."""
        with self._lock:
            self.in_flight -= 1
            entry.done = True
            now = time.monotonic()
            if out is None:
                entry.at = now  # cancelled: it may have gone out at any time until now
                return
            entry.at = max(entry.at, float(getattr(out, "sent", 0.0) or 0.0))
            headers = getattr(out, "headers", None) or {}
            self._server_says(entry, headers, now)
            used = int(getattr(out, "prompt_tokens", 0) or 0) + int(getattr(out, "completion_tokens", 0) or 0)
            if getattr(out, "kind", "") == "ok" and used > 0:
                self._window_tokens += used - entry.tokens
                entry.tokens = used
            pause = getattr(out, "retry_after", None)
            if pause is None:
                pause = retry_after_seconds(headers)
            if pause:
                self._paused_until = max(self._paused_until, now + min(pause, PAUSE_CAP_S))
            if getattr(out, "kind", "") == "rate-limit" or getattr(out, "status", None) == 429:
                self.rate_limited += 1
                if entry.seq > self._last_cut:
                    self._last_cut = self._seq
                    self.window = max(1.0, self.window / 2)
                    self.cuts += 1
                    log.info("%s: rate limited (429); at most %d request(s) in flight now, growing back as answers "
                             "come", self.name, int(self.window))
            elif getattr(out, "kind", "") == "ok":
                self.window = min(float(self.ceiling), self.window + 1.0 / self.window)

    def _server_says(self, entry: _Sent, headers: dict[str, str], now: float) -> None:
        """The server's remaining budgets, less what was sent after this request (not yet seen
        by the server when it answered this one)."""
        for budget, name, sent_since in (
                (self._requests, "requests", self._seq - entry.seq),
                (self._tokens, "tokens", self._tokens_sent - entry.tokens_before - entry.tokens)):
            remaining = _int(headers.get(f"x-ratelimit-remaining-{name}"))
            reset = parse_reset(headers.get(f"x-ratelimit-reset-{name}"))
            if remaining is None or reset is None or entry.seq <= budget.seq:
                continue
            budget.remaining, budget.until, budget.seq = remaining - sent_since, now + reset, entry.seq


def estimate(kwargs: dict[str, Any]) -> int:
    """Tokens a provider's limiter counts for a request before it is answered: the prompt's
    characters / 4 (rounded up; no tokenizer call on every request) plus max_tokens."""
    chars = sum(len(str(m.get("content") or "")) for m in kwargs.get("messages") or [])
    return -(-chars // 4) + 4 * len(kwargs.get("messages") or []) + int(kwargs.get("max_tokens") or UNKNOWN_COMPLETION)
