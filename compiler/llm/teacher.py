"""The one LLM client: teacher, LLM judge, eval judge and any new kind of request go through
`Teacher.complete` (async), whatever the provider; litellm itself is reached only through
compiler/llm/backend.py.

Why our own retry loop instead of litellm's: we need Retry-After honoured, exponential backoff
with jitter (per-attempt timeouts), an attempt count for provenance, and a reason code when a
request finally fails — and none of it may hide a failure. Why our own endpoint balancing
instead of litellm's Router: one `acompletion(api_base=...)` per call to the least busy
endpoint (a retry moves to another endpoint) is a few lines, adds no cool-down state that
would fight Retry-After, and keeps the per-request CPU low.

API keys are read by litellm from each provider's usual environment variable; kdc never
receives, logs or stores them, and scrubs anything key-like from error details
(compiler/llm/secrets.py). The litellm call itself runs in this process or in forked workers
(compiler/llm/transport.py: why, how and when); use the Teacher as a context manager (`with
teacher:`) to start and stop them. `transport` (auto|http|litellm) picks who makes the HTTP call:
litellm, or kdc's own aiohttp client (compiler/llm/httpclient.py: when and why).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

from compiler.errors import TeacherError
from compiler.llm import backend, httpclient, ratelimit
from compiler.llm.formats import response_format, response_schema  # noqa: F401 - re-exported
from compiler.llm.schemafallback import JSON_OBJECT, schema_feature, schema_refusal
from compiler.llm.secrets import scrub
from compiler.llm.transport import InProcess, Outcome, WorkerPool, can_fork

__all__ = ["Completion", "Teacher", "TeacherFailure", "TeacherStats", "response_format", "response_schema"]

log = logging.getLogger("kdc.teacher")

BACKOFF_BASE = 0.5  # seconds; attempt n waits ~base * 2**n (jittered), capped below
BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 120.0
WORKERS_FROM = 128  # auto: forked workers only from this many requests in flight (transport.py: why)
WORKER_SHARE = 64  # auto: then one worker per this many in flight, up to the cores
_ZERO_PRICED: set[str] = set()  # models kdc registered with litellm at price 0 (their cost is unknown)


@dataclass
class Completion:
    """A teacher answer: the raw text plus what provenance and the manifest need."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None: litellm has no price for this model
    attempts: int
    model: str
    latency_s: float = 0.0
    logprobs: list[float] | None = None  # per token, for the low-confidence gate
    cached: bool = False  # read back from the build's cache, not asked in this run

    def to_cache(self) -> dict[str, Any]:
        d = {"text": self.text, "finish_reason": self.finish_reason, "prompt_tokens": self.prompt_tokens,
             "completion_tokens": self.completion_tokens, "cost_usd": self.cost_usd,
             "attempts": self.attempts, "model": self.model}
        if self.logprobs:
            d["logprobs"] = self.logprobs
        return d

    @classmethod
    def from_cache(cls, d: dict[str, Any]) -> "Completion":
        return cls(d["text"], d.get("finish_reason"), int(d.get("prompt_tokens") or 0),
                   int(d.get("completion_tokens") or 0), d.get("cost_usd"), int(d.get("attempts") or 1),
                   d.get("model") or "", logprobs=d.get("logprobs") or None, cached=True)


class TeacherFailure(Exception):
    """A request that failed for good after its retries: becomes a Rejection with `reason`."""

    def __init__(self, reason: str, detail: str, attempts: int, transport: bool = True):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.attempts = attempts
        self.transport = transport  # True: the endpoint misbehaved (not cached, counts for the breaker)


@dataclass
class TeacherStats:
    """Counters of one run.

    `in_flight`/`max_in_flight` count the client's slots held (a slot is held from before the
    request is handed to the transport until its outcome is back). `mean_in_flight` is what a
    server sees instead: the time-weighted mean number of attempts between `litellm.acompletion`
    called and returned (each attempt's `Outcome.sent`..`answered`, stamped in the process that
    made the call), from the first call to the last answer; slot queueing, worker pipes and the
    main loop's lag are outside it. It still holds litellm's own few milliseconds per call."""

    calls: int = 0  # HTTP attempts made
    retries: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    _area: float = 0.0
    _first: float | None = None
    _last: float = 0.0

    def change(self, delta: int) -> None:
        self.in_flight += delta
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def attempt(self, out: Outcome) -> None:
        """Count one attempt's time at the server (nothing when the transport never called litellm)."""
        if out.sent <= 0 or out.answered < out.sent:
            return
        self._area += out.answered - out.sent
        self._first = out.sent if self._first is None else min(self._first, out.sent)
        self._last = max(self._last, out.answered)

    @property
    def mean_in_flight(self) -> float:
        span = self._last - self._first if self._first is not None else 0.0
        return self._area / span if span > 0 else 0.0


class Teacher:
    """Async, bounded-concurrency client for one litellm model on one or more endpoints: one
    retry policy (Retry-After, jittered backoff, endpoint balancing, breaker), one scrub, one
    transport, for every kind of request (`complete`)."""

    def __init__(self, model: str, *, api_bases: list[str] | None = None, timeout: float = 120.0,
                 max_retries: int = 4, concurrency: int = 8, sampling: dict[str, Any] | None = None,
                 workers: int | None = 1, logprobs: bool = False, transport: str | None = None):
        self.model = model
        self.api_bases = list(api_bases or [])
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.sampling = dict(sampling or {})
        self.logprobs = logprobs  # ask for token logprobs (the low-confidence gate needs them)
        self.stats = TeacherStats()
        # circuit breaker: after this many requests in a row failed for good, stop asking
        self.breaker = max(8, 2 * concurrency)
        self._consecutive_failures = 0
        self.unavailable = False
        self.schema_fallback: str | None = None  # why the provider refused json_schema (then: json_object)
        self._busy = [0] * max(1, len(self.api_bases))
        self._next = 0
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None
        self._jitter = random.Random()
        self.transport = httpclient.choose_transport(model, self.api_bases, transport)
        self._direct = httpclient.HttpClient(concurrency) if self.transport == "http" else None
        self._litellm = backend.load() if self._direct is None else None  # the direct path never imports it
        if model.startswith("kdc/"):
            from compiler.llm.embedded import check_available, register

            check_available()  # a missing package or model file is a clear error now, not retries later
            register(self._litellm)
            self.concurrency = 1  # one in-process model: more requests would only queue on it
        self._api_key = self._check_environment()
        if self._direct is None:  # registered before litellm's first call; the direct path's on first use
            self.price_known
        self.workers = self._worker_count(workers)
        self._transport: InProcess | WorkerPool = InProcess(self._litellm, self._direct)
        self._limiters = [ratelimit.limiter_for(model, b, self.concurrency) for b in self.api_bases or [None]]

    def _worker_count(self, asked: int | None) -> int:
        """None means auto: litellm in this process below WORKERS_FROM requests in flight (workers only
        pay above ~300 requests/s: transport.py), then one worker per WORKER_SHARE in flight, up to the
        cores (1 = no workers); the direct client (~1 ms a request) never needs them. The embedded
        model lives in this process, and workers need fork."""
        if self.model.startswith("kdc/") or not can_fork() or (asked is None and self._direct is not None):
            return 1
        if asked is None:
            asked = 1 if self.concurrency < WORKERS_FROM else min(os.cpu_count() or 1, 8,
                                                                  self.concurrency // WORKER_SHARE)
        return max(1, min(asked, self.concurrency))

    def __enter__(self) -> "Teacher":  # worker processes start before any event loop runs: they fork
        if self.workers > 1 and isinstance(self._transport, InProcess):
            self._transport = WorkerPool(self._litellm, self.workers, self._direct)
        return self

    def __exit__(self, *exc) -> None:
        self._transport.close()
        self._transport = InProcess(self._litellm, self._direct)

    def _check_environment(self) -> str | None:
        """Fail early, with the variable's name, when the provider needs a key that is not set.
        Local OpenAI-compatible servers (an --api-base) get a placeholder key instead."""
        if self.model.startswith("kdc/"):
            return None
        direct = self._direct is not None
        missing = httpclient.missing_keys(self.model) if direct else backend.missing_keys(self._litellm, self.model)
        if not missing:
            return None
        if self.api_bases:
            return "no-key"  # vLLM, llama.cpp, LM Studio...: any key is accepted
        raise TeacherError(f"teacher {self.model} needs {', '.join(missing)} in the environment",
                           hint=f"export {missing[0]}=..., or point --api-base at a local server")

    @functools.cached_property
    def price_known(self) -> bool:
        """Whether litellm's offline price map knows the model. If not, it is registered at price
        zero: litellm then stops searching its map on every response (~2 ms of CPU per call),
        and kdc reports the cost as unknown (None), never as zero. The direct path reads the map
        as a file (~30 ms): on first use, once the first requests are out."""
        if self.model.startswith("kdc/"):
            return True
        if self._direct is not None:  # litellm's price map, read as a file (httpclient.model_price)
            return httpclient.model_price(self.model) is not None
        if self.model in _ZERO_PRICED:
            return False
        if backend.price_known(self._litellm, self.model):
            return True
        _ZERO_PRICED.add(self.model)
        backend.register_zero_price(self._litellm, self.model)
        return False

    def _pick_base(self, avoid: int | None) -> int | None:
        if not self.api_bases:
            return None
        n = len(self.api_bases)
        order = [(self._next + i) % n for i in range(n)]
        self._next = (self._next + 1) % n
        candidates = [i for i in order if i != avoid] or order
        return min(candidates, key=lambda i: self._busy[i])

    async def complete(self, messages: list[dict[str, str]], response_format: dict | None, *,
                       seed: int | None = None, label: str = "", should_run=None,
                       params: dict[str, Any] | None = None) -> Completion | None:
        """One answer, retried on 429/5xx/timeouts/connection errors; raises TeacherFailure when it
        fails for good and TeacherError when the teacher cannot be used at all (auth, unknown model).
        Returns None without asking when `should_run()` turns false before the request starts.
        `response_format` None asks for free text; `params` (e.g. max_tokens) override the
        client's sampling for this request only."""
        try:
            done = await self._complete(messages, response_format, seed, label, should_run, params)
        except TeacherFailure as failure:
            if failure.transport and failure.reason != "teacher-unavailable":
                self._consecutive_failures += 1
                if self._consecutive_failures >= self.breaker and not self.unavailable:
                    self.unavailable = True
                    log.warning("teacher unavailable: %d requests in a row failed (%s); stopping",
                                self._consecutive_failures, failure.detail)
            raise
        if done is not None:
            self._consecutive_failures = 0
        return done

    async def _complete(self, messages, response_format, seed, label, should_run, params) -> Completion | None:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:  # a semaphore belongs to one event loop
            self._sem, self._sem_loop = asyncio.Semaphore(self.concurrency), loop
        attempt = 0
        avoid: int | None = None
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "timeout": self.timeout,
                                  "max_retries": 0, "drop_params": True, **self.sampling, **(params or {})}
        if response_format is not None:
            kwargs["response_format"] = response_format
        schema_mode = (response_format or {}).get("type") == "json_schema"
        if seed is not None:
            kwargs["seed"] = seed
        if self.logprobs:
            kwargs["logprobs"] = True  # dropped by litellm (drop_params) where a provider has none
        if self._api_key:
            kwargs["api_key"] = self._api_key
        started = time.monotonic()
        while True:
            attempt += 1
            base = self._pick_base(avoid)
            if base is not None:
                kwargs["api_base"] = self.api_bases[base]
            delay: float | None = None
            async with self._sem:
                if self.unavailable:
                    raise TeacherFailure("teacher-unavailable", "the teacher stopped answering", attempt - 1)
                if attempt == 1 and should_run is not None and not should_run():
                    return None
                if self.schema_fallback and schema_mode:
                    kwargs["response_format"] = JSON_OBJECT  # decided while this request waited
                self.stats.calls += 1
                self.stats.change(+1)
                if base is not None:
                    self._busy[base] += 1
                try:
                    out = await self._limiters[base or 0].call(self._transport.call, kwargs, self.timeout * 1.5 + 5)
                    self.stats.attempt(out)
                    if out.kind == "ok":
                        return self._completion(out, attempt, started)
                    if (kwargs.get("response_format") or {}).get("type") == "json_schema" and schema_refusal(out):
                        self._fall_back(scrub(out.message, self._api_key))
                        kwargs["response_format"] = JSON_OBJECT
                        continue  # at once, in json_object mode; kdc validates the schema itself
                    failure, delay = self._failure(out, messages, label, attempt)
                finally:
                    self.stats.change(-1)
                    if base is not None:
                        self._busy[base] -= 1
            # failed attempt: the slot is released while we wait
            self.stats.failures[failure[0]] = self.stats.failures.get(failure[0], 0) + 1
            if attempt > self.max_retries:
                raise TeacherFailure(failure[0], f"{failure[1]} (gave up after {attempt} attempts)", attempt)
            self.stats.retries += 1
            avoid = base
            if delay is None:
                delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) * (0.5 + self._jitter.random())
            else:
                delay = min(delay, RETRY_AFTER_CAP) * (1 + 0.1 * self._jitter.random())
            log.debug("%s: attempt %d failed (%s); retrying in %.2fs", label, attempt, failure[0], delay)
            await asyncio.sleep(delay)

    def _fall_back(self, message: str) -> None:
        if self.schema_fallback is None:
            self.schema_fallback = message[:300] or "400 on response_format"
            log.warning("the teacher refused the JSON schema in response_format (%s: %s); falling back to "
                        "response_format json_object, every answer still checked against the schema by kdc",
                        schema_feature(message), self.schema_fallback)

    def _failure(self, out: Outcome, messages, label: str, attempt: int) -> tuple[tuple[str, str], float | None]:
        """A failed attempt: raises when it is final, else returns (reason, detail) and the delay
        the server asked for (None: back off exponentially)."""
        msg = scrub(out.message, self._api_key)  # a key given by value (a judge's own variable) too
        if out.kind == "auth":
            raise TeacherError(f"the teacher rejected the credentials: {msg}",
                               hint="check the provider's API key variable (e.g. OPENAI_API_KEY)")
        if out.kind == "not-found":
            raise TeacherError(f"teacher model {self.model} not found: {msg}", hint="check --teacher and --api-base")
        if out.kind == "context-window":
            chars = sum(len(m["content"]) for m in messages)
            raise TeacherFailure("context-window", f"{label}: prompt of {chars} characters is over the "
                                 f"model's context window: {msg}", attempt, False)
        if out.kind == "refusal":
            raise TeacherFailure("refusal", f"content policy: {msg}", attempt, False)
        if out.kind == "bad-request":
            raise TeacherFailure("http-error", f"bad request: {msg}", attempt)
        if out.kind == "timeout":
            return ("timeout", f"no answer within {self.timeout:g}s" + (f" ({msg})" if msg else "")), None
        if out.kind == "rate-limit":
            return ("http-error", f"429 rate limited: {msg}"), out.retry_after
        return ("http-error", f"{out.status or out.error_type}: {msg}"), out.retry_after

    def _completion(self, out: Outcome, attempts: int, started: float) -> Completion:
        cost = None
        if self.model.startswith("kdc/"):
            cost = 0.0  # runs on this machine
        elif self.price_known:
            cost = out.cost_usd
        return Completion(text=out.text, finish_reason=out.finish_reason, prompt_tokens=out.prompt_tokens,
                          completion_tokens=out.completion_tokens, cost_usd=cost, attempts=attempts,
                          model=self.model, latency_s=time.monotonic() - started, logprobs=out.logprobs)

    # -- estimates for --dry-run and --max-cost --------------------------------------------
    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        direct = self._direct is not None
        return httpclient.count_tokens(messages) if direct else backend.count_tokens(self._litellm, self.model, messages)

    def price(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for a request of that size, by litellm's offline price map; None when unknown."""
        if self.model.startswith("kdc/"):
            return 0.0
        if not self.price_known:
            return None
        if self._direct is not None:
            return httpclient.price(self.model, prompt_tokens, completion_tokens)
        return backend.price(self._litellm, self.model, prompt_tokens, completion_tokens)

