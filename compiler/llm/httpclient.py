"""The direct path: one OpenAI-compatible `POST {api_base}/chat/completions` on aiohttp, reduced to
the same `backend.Outcome` as the litellm path, without importing litellm.

Why: litellm spends ~12 ms of CPU per request (the openai SDK's transforms, pydantic responses,
cost and logging hooks) and ~6 s to import; against a fast teacher the client, not the teacher,
then sets the pace (benchmarks/bench_client_cpu.py). For `openai/...` and `hosted_vllm/...` models
the protocol is one JSON POST, so kdc speaks it itself (`transport: auto|http`, llm/teacher.py
chooses). Errors are classified by the rules the litellm path uses (status first, then litellm's
own substrings for context-window and content-policy 400s; llm/schemafallback.py reads the
message of a schema refusal), every message is scrubbed, and the rate-limit headers are kept on
every response (`Outcome.headers`) for the rate limiter.

Prices come from litellm's own offline price map, read as a JSON file from the installed package
(located with importlib, never imported): the same figures the litellm path reports.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import json
import os
import time
import weakref
from functools import lru_cache
from pathlib import Path
from typing import Any

from compiler.errors import TeacherError
from compiler.llm.backend import Outcome, retry_after_seconds
from compiler.llm.secrets import scrub

__all__ = ["DIRECT_PROVIDERS", "TRANSPORTS", "HttpClient", "choose_transport", "key_variable", "model_price",
           "set_default_transport", "supports"]

# provider prefix -> the key variable litellm reads for it (the same variable here)
DIRECT_PROVIDERS = {"openai": "OPENAI_API_KEY", "hosted_vllm": "HOSTED_VLLM_API_KEY"}
# what litellm sends to a vLLM server when no key is set (vLLM without --api-key accepts any)
_VLLM_PLACEHOLDER = "fake-api-key"
# litellm-only request options: not part of the OpenAI body
_NOT_BODY = ("model", "api_base", "api_key", "timeout", "max_retries", "drop_params")
# the substrings litellm's exception mapping reads as a context-window 400 (exception_mapping_utils)
_CONTEXT = ("exceed context limit", "this model's maximum context length is",
            "requested token count exceeds the model's maximum context length", "model's maximum context limit",
            "is longer than the model's context length", "input tokens exceed the configured limit",
            "`inputs` tokens + `max_new_tokens` must be", "exceeds the available context size",
            "exceeds the maximum number of tokens allowed", "context_length_exceeded", "prompt is too long")
_POLICY = ("content_policy_violation", "violating our usage policy", "request was rejected as a result of the safety system",
           "responsibleaipolicyviolation", "content_filter_policy")
_HEADER_PREFIXES = ("x-ratelimit-", "retry-after")


def provider_of(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else ""


def supports(model: str) -> bool:
    """Whether the direct path speaks this model's protocol (OpenAI chat completions)."""
    return provider_of(model) in DIRECT_PROVIDERS and len(model.split("/", 1)[1]) > 0


def key_variable(model: str) -> str:
    return DIRECT_PROVIDERS[provider_of(model)]


def default_base(model: str) -> str | None:
    """The endpoint when none is given: OpenAI's, as litellm picks it (its variables first)."""
    if provider_of(model) == "openai":
        return (os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
                or "https://api.openai.com/v1")
    return os.environ.get("HOSTED_VLLM_API_BASE") or None


TRANSPORTS = ("auto", "http", "litellm")
_DEFAULT_TRANSPORT = ["auto"]  # the run's `transport` setting: clients built without one (the judges) follow it


def set_default_transport(name: str) -> None:
    """The transport of every client built afterwards without one (compile sets the run's)."""
    if name not in TRANSPORTS:
        raise TeacherError(f"unknown transport {name!r}", hint="use one of: " + ", ".join(TRANSPORTS))
    _DEFAULT_TRANSPORT[0] = name


def choose_transport(model: str, api_bases: list[str], asked: str | None = None) -> str:
    """`http` or `litellm` for a model: auto takes the direct path only where kdc knows the
    protocol (OpenAI chat completions) and the endpoint was given (a local or fleet server: the
    endpoint is the maintainer's, never a taxonomy's, compiler/trust.py). None: the run's setting."""
    asked = asked or _DEFAULT_TRANSPORT[0]
    if asked not in TRANSPORTS:
        raise TeacherError(f"unknown transport {asked!r}", hint="use one of: " + ", ".join(TRANSPORTS))
    if model.startswith("kdc/") or asked == "litellm":
        return "litellm"
    if asked == "http":
        if not supports(model):
            raise TeacherError(f"transport http speaks the OpenAI protocol only; {model} is not an openai/... "
                               "or hosted_vllm/... model", hint="use --transport auto or litellm for this model")
        return "http"
    return "http" if supports(model) and api_bases else "litellm"


# ------------------------------------------------------------------------------- prices
@lru_cache(maxsize=1)
def _price_map() -> dict[str, Any]:
    """litellm's offline price map (the JSON file its package ships), or {} when not installed."""
    try:
        spec = importlib.util.find_spec("litellm")  # locates the package; imports nothing
    except (ImportError, ValueError):
        return {}
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "model_prices_and_context_window_backup.json"
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return {}
    return {}


def model_price(model: str) -> tuple[float, float] | None:
    """(USD per prompt token, USD per completion token) for `model`, as litellm prices it; None
    when its map does not know the model (e.g. any hosted_vllm model)."""
    provider, _, name = model.partition("/")
    table = _price_map()
    for key in (model, name):
        entry = table.get(key)
        if isinstance(entry, dict) and entry.get("litellm_provider") == provider:
            try:
                return float(entry["input_cost_per_token"]), float(entry["output_cost_per_token"])
            except (KeyError, TypeError, ValueError):
                return None
    return None


def price(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    unit = model_price(model)
    return prompt_tokens * unit[0] + completion_tokens * unit[1] if unit else None


def missing_keys(model: str) -> list[str]:
    """The key variable litellm would require: OpenAI's; a vLLM server needs none."""
    var = key_variable(model)
    return [var] if provider_of(model) == "openai" and not os.environ.get(var) else []


# ------------------------------------------------------------------------------- the client
class HttpClient:
    """One attempt per call; one aiohttp session (and connector of `concurrency` connections) per
    event loop it is used on, closed with `close()`."""

    def __init__(self, concurrency: int = 8):
        import aiohttp  # noqa: F401 - here, in the set-up, not on the I/O thread when the first request goes

        self.concurrency = max(1, concurrency)
        self._sessions: dict[asyncio.AbstractEventLoop, Any] = {}
        self._inflight: set[asyncio.Task] = set()  # attempts running now, cancelled before a session closes
        self._prices: dict[str, tuple[float, float] | None] = {}
        _OPEN.add(self)  # closed at exit if nobody did (no "Unclosed client session" on stderr)

    def _session(self):
        import aiohttp

        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=0, ttl_dns_cache=300)
            session = aiohttp.ClientSession(connector=connector, json_serialize=json.dumps,
                                            timeout=aiohttp.ClientTimeout(total=None))
            for lp in [lp for lp in self._sessions if lp.is_closed()]:
                _discard(self._sessions.pop(lp))
            self._sessions[loop] = session
        return session

    async def attempt(self, kwargs: dict[str, Any], deadline: float) -> Outcome:
        """One POST, never raising: every failure is an Outcome kind, its message scrubbed."""
        import aiohttp

        model = kwargs["model"]
        base = kwargs.get("api_base") or default_base(model)
        key = kwargs.get("api_key") or os.environ.get(key_variable(model)) or (
            _VLLM_PLACEHOLDER if provider_of(model) == "hosted_vllm" else None)
        if not base:
            return Outcome("not-found", message=f"no api_base for {model}", error_type="NoEndpoint")
        body = {k: v for k, v in kwargs.items() if k not in _NOT_BODY}
        body["model"] = model.split("/", 1)[1]
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limit = min(float(kwargs.get("timeout") or deadline), deadline)
        url = base.rstrip("/") + "/chat/completions"
        session = self._session()
        sent = time.monotonic()
        got: dict[str, str] = {}

        async def exchange() -> tuple[int, bytes]:
            async with session.post(url, data=json.dumps(body), headers=headers) as resp:
                got.update((k.lower(), v) for k, v in resp.headers.items() if k.lower().startswith(_HEADER_PREFIXES))
                return resp.status, await resp.read()

        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            status, raw = await asyncio.wait_for(exchange(), limit)
        except RuntimeError as exc:  # the session closed under an attempt that had not started: kdc is stopping
            return Outcome("error", message=f"the HTTP client was closed ({exc})", error_type="Closed",
                           sent=sent, answered=time.monotonic())
        except asyncio.TimeoutError:
            return Outcome("timeout", message=f"no answer within {limit:g}s", error_type="Timeout",
                           headers=got or None, sent=sent, answered=time.monotonic())
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # refused, reset, dropped, bad URL
            text = " ".join(str(exc).split())[:300] or type(exc).__name__
            return Outcome("error", message=scrub(f"connection error: {text}", key), error_type=type(exc).__name__,
                           headers=got or None, sent=sent, answered=time.monotonic())
        finally:
            self._inflight.discard(task)
        answered = time.monotonic()
        if status == 200:
            return self._ok(model, raw, got, sent, answered, key)
        return _failure(status, raw, got, sent, answered, key)

    def _ok(self, model: str, raw: bytes, got: dict, sent: float, answered: float, key: str | None) -> Outcome:
        try:
            data = json.loads(raw)
            choice = (data.get("choices") or [None])[0] or {}
            message = choice.get("message") or {}
            usage = data.get("usage") or {}
        except (ValueError, AttributeError, TypeError):
            return Outcome("error", message=scrub(f"200 with a body that is not a chat completion: {raw[:200]!r}", key),
                           status=200, error_type="BadResponse", headers=got or None, sent=sent, answered=answered)
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        if model not in self._prices:
            self._prices[model] = model_price(model)
        unit = self._prices[model]
        return Outcome("ok", text=message.get("content") or "", finish_reason=choice.get("finish_reason"),
                       prompt_tokens=prompt, completion_tokens=completion,
                       cost_usd=prompt * unit[0] + completion * unit[1] if unit else None,
                       logprobs=_token_logprobs(choice.get("logprobs")), headers=got or None,
                       sent=sent, answered=answered)

    async def _shut(self, session: Any) -> None:
        """Cancel this loop's attempts, then close its session: an attempt left running would meet
        a closed session and end in an exception nobody reads ("Task exception was never retrieved"
        and a traceback on stderr)."""
        loop = asyncio.get_running_loop()
        mine = [t for t in self._inflight if t.get_loop() is loop and t is not asyncio.current_task()]
        for t in mine:
            t.cancel()
        await asyncio.gather(*mine, return_exceptions=True)
        if not session.closed:
            await session.close()

    async def aclose(self) -> None:
        for session in list(self._sessions.values()):
            await self._shut(session)
        self._sessions.clear()

    def close(self) -> None:
        """Close the sessions on their own loops (each session belongs to one loop)."""
        for loop, session in list(self._sessions.items()):
            if session.closed or loop.is_closed():
                _discard(session)
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                loop.create_task(self._shut(session))
            elif loop.is_running():
                try:
                    asyncio.run_coroutine_threadsafe(self._shut(session), loop).result(5)
                except Exception:
                    pass
            else:
                loop.run_until_complete(self._shut(session))
        self._sessions.clear()


def _discard(session: Any) -> None:
    """Let go of a session whose loop is gone: its sockets closed without that loop."""
    try:
        connector = session.connector
        session.detach()
        if connector is not None:
            connector._close()
    except Exception:
        pass


_OPEN: "weakref.WeakSet[HttpClient]" = weakref.WeakSet()
atexit.register(lambda: [client.close() for client in list(_OPEN)])


def _failure(status: int | None, raw: bytes, got: dict, sent: float, answered: float, key: str | None) -> Outcome:
    """A non-200 answer, classified as the litellm path classifies it."""
    text = raw.decode("utf-8", "replace")
    try:
        err = json.loads(text).get("error")
        detail = err.get("message") if isinstance(err, dict) else (err if isinstance(err, str) else None)
    except (ValueError, AttributeError):
        detail = None
    detail = " ".join(str(detail or text or "").split())[:300]
    low = text.lower()
    if status in (401, 403):
        kind = "auth"
    elif status == 404 or (status == 400 and "model_not_found" in low):
        kind = "not-found"
    elif status == 429:
        kind = "rate-limit"
    elif status in (400, 413, 422) and any(s in low for s in _CONTEXT) and "string_above_max_length" not in low:
        kind = "context-window"
    elif status == 400 and any(s in low for s in _POLICY):
        kind = "refusal"
    elif status in (400, 422):
        kind = "bad-request"
    elif status == 408:
        kind = "timeout"
    else:
        kind = "error"
    return Outcome(kind, message=scrub(f"{status}: {detail}", key), status=status, error_type=f"HTTP{status}",
                   retry_after=retry_after_seconds(got), headers=got or None, sent=sent, answered=answered)


def _token_logprobs(lp: Any) -> list[float] | None:
    content = lp.get("content") if isinstance(lp, dict) else None
    if not content:
        return None
    out = [round(float(t["logprob"]), 4) for t in content
           if isinstance(t, dict) and isinstance(t.get("logprob"), (int, float))]
    return out or None


def count_tokens(messages: list[dict[str, str]]) -> int:
    """An estimate for --dry-run / --max-cost without a tokenizer (litellm's own fallback rule)."""
    return sum(len(m["content"]) for m in messages) // 4 + 4 * len(messages)
