"""The one module that talks to litellm: importing it offline, one `acompletion` attempt reduced to a
plain `Outcome`, key checks, prices and token counts, and the registration of kdc's own providers
(the embedded model) as litellm custom providers.

Why one module: litellm is a large, fast-moving dependency whose exception classes, response shapes
and registration hooks change between releases. Everything above this file (the client's retries,
the worker processes, the judge, the eval judge, the embedded model) sees only `Outcome` and plain
values, so a litellm upgrade is checked here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from compiler.errors import TeacherError
from compiler.llm.secrets import KEY_VARS, scrub

__all__ = ["ContextTooLong", "Outcome", "attempt", "load", "missing_keys", "register_provider", "retry_after"]


@dataclass
class Outcome:
    """One litellm attempt, reduced to what the client needs (picklable, no exception objects).

    kind: ok | auth | not-found | context-window | refusal | bad-request | timeout | rate-limit | error
    `sent`/`answered`: time.monotonic() (system-wide on Linux, so comparable across forked workers)
    of the HTTP exchange: just before the request went out and just after the answer was read
    (`_stamped_send`): the stretch a server sees the request. litellm's own work before and after
    is outside it; a provider that is not HTTP (the embedded model) is stamped around the call."""

    kind: str
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    message: str = ""
    status: int | None = None
    error_type: str = ""
    retry_after: float | None = None
    logprobs: list[float] | None = None  # per generated token, when asked for and returned
    # rate-limit response headers, names lower-cased: x-ratelimit-* and retry-after (ok or not)
    headers: dict[str, str] | None = None
    sent: float = 0.0
    answered: float = 0.0


class ContextTooLong(Exception):
    """Raised by a kdc provider (the embedded model) when a prompt is over its window; becomes
    litellm's ContextWindowExceededError, so the client treats it like any provider's."""


def load():
    """litellm, imported offline: the local cost map, no telemetry, quiet loggers."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    try:
        import litellm
    except ImportError as exc:
        raise TeacherError("litellm is not installed", hint="pip install 'kdc[compile]'") from exc
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx", "openai"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _stamp_http()
    return litellm


_EXCHANGE: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("kdc_http_exchange", default=None)


def _stamp_http() -> None:
    """Wrap httpx.AsyncClient.send (the one door of every litellm HTTP call, openai SDK or not) so
    that the attempt running in this task learns when its request went out and its answer was in.
    Why not litellm's callbacks: they run around its own processing (and cost CPU on every call)."""
    import httpx

    send = httpx.AsyncClient.send
    if getattr(send, "_kdc_stamped", False):
        return

    async def _stamped_send(self, request, *args, **kwargs):
        stamps = _EXCHANGE.get()
        if stamps is not None:
            stamps[:] = [time.monotonic()]
        try:
            return await send(self, request, *args, **kwargs)
        finally:
            if stamps is not None:
                stamps.append(time.monotonic())

    _stamped_send._kdc_stamped = True  # type: ignore[attr-defined]
    httpx.AsyncClient.send = _stamped_send  # type: ignore[method-assign]


async def attempt(lt: Any, kwargs: dict[str, Any], deadline: float) -> Outcome:
    """One `litellm.acompletion` call, its exceptions classified (the order matters: litellm's
    context-window and content-policy errors are subclasses of its BadRequestError)."""
    stamps: list[float] = []
    _EXCHANGE.set(stamps)  # seen by _stamped_send inside this call (tasks copy the context)
    sent = time.monotonic()
    try:
        resp = await asyncio.wait_for(lt.acompletion(**kwargs), deadline)
    except (lt.AuthenticationError, lt.PermissionDeniedError) as exc:
        kind, exc_ = "auth", exc
    except lt.NotFoundError as exc:
        kind, exc_ = "not-found", exc
    except lt.ContextWindowExceededError as exc:
        kind, exc_ = "context-window", exc
    except lt.ContentPolicyViolationError as exc:
        kind, exc_ = "refusal", exc
    except (lt.BadRequestError, lt.UnprocessableEntityError) as exc:
        kind, exc_ = "bad-request", exc
    except (asyncio.TimeoutError, lt.Timeout) as exc:
        kind, exc_ = "timeout", exc
    except lt.RateLimitError as exc:
        kind, exc_ = "rate-limit", exc
    except Exception as exc:  # 5xx, connection refused/reset, unexpected provider errors
        kind, exc_ = "error", exc
    else:
        sent, answered = _exchange(stamps, sent)
        choice = resp.choices[0] if resp.choices else None
        message = choice.message if choice is not None else None
        usage = getattr(resp, "usage", None)
        hidden = getattr(resp, "_hidden_params", None) or {}
        cost = hidden.get("response_cost")
        return Outcome("ok", text=(message.content if message is not None else None) or "",
                       finish_reason=getattr(choice, "finish_reason", None),
                       prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                       completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                       cost_usd=float(cost) if cost is not None else None,
                       logprobs=_token_logprobs(getattr(choice, "logprobs", None)), sent=sent, answered=answered,
                       headers=rate_headers(getattr(resp, "_response_headers", None) or hidden.get("additional_headers")))
    sent, answered = _exchange(stamps, sent)
    status = getattr(exc_, "status_code", None)
    return Outcome(kind, message=scrub(short_message(exc_)), status=status if isinstance(status, int) else None,
                   error_type=type(exc_).__name__, retry_after=retry_after(exc_), sent=sent, answered=answered,
                   headers=rate_headers(_exc_headers(exc_)))


def rate_headers(raw: Any) -> dict[str, str] | None:
    """The rate-limit headers of a response (x-ratelimit-*, retry-after[-ms]), names lower-cased;
    litellm's `additional_headers` copy carries them prefixed with `llm_provider-`."""
    try:
        items = dict(raw).items() if raw else ()
    except Exception:
        return None
    out = {}
    for key, value in items:
        name = str(key).lower().removeprefix("llm_provider-")
        if name.startswith("x-ratelimit-") or name in ("retry-after", "retry-after-ms"):
            out[name] = str(value)
    return out or None


def _exc_headers(exc: BaseException) -> Any:
    headers = getattr(exc, "litellm_response_headers", None)
    return headers if headers is not None else getattr(getattr(exc, "response", None), "headers", None)


def _exchange(stamps: list[float], called: float) -> tuple[float, float]:
    """(sent, answered) of the last HTTP exchange of an attempt, else of the whole call."""
    if len(stamps) == 2:
        return stamps[0], stamps[1]
    return called, time.monotonic()


def _token_logprobs(lp: Any) -> list[float] | None:
    """The tokens' logprobs from an OpenAI-shaped `choice.logprobs` (object or dict), if any."""
    content = lp.get("content") if isinstance(lp, dict) else getattr(lp, "content", None)
    if not content:
        return None
    out = []
    for token in content:
        value = token.get("logprob") if isinstance(token, dict) else getattr(token, "logprob", None)
        if isinstance(value, (int, float)):
            out.append(round(float(value), 4))
    return out or None


def short_message(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(str(text).split())[:300]


def retry_after(exc: BaseException) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header on a litellm exception, if any."""
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        resp = getattr(exc, "response", None)
        headers = getattr(resp, "headers", None)
    if not headers:
        return None
    try:
        low = {str(k).lower(): v for k, v in dict(headers).items()}
    except Exception:
        return None
    return retry_after_seconds(low)


def retry_after_seconds(low: dict[str, Any]) -> float | None:
    """Seconds from lower-cased response headers: retry-after-ms, or retry-after in seconds or as an
    HTTP date (the litellm path and the direct client both read them here)."""
    try:
        if "retry-after-ms" in low:
            return max(0.0, float(low["retry-after-ms"]) / 1000)
        if "retry-after" in low:
            return max(0.0, float(low["retry-after"]))
    except (TypeError, ValueError):
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(str(low["retry-after"]))
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError):
            return None
    return None


# ------------------------------------------------------------------------------- model facts
def missing_keys(lt: Any, model: str) -> list[str]:
    """The key variables the provider of `model` needs and the environment lacks ([] when unknown)."""
    try:
        env = lt.validate_environment(model=model)
    except Exception:  # unknown provider shapes: let the first call say what is wrong
        return []
    return [k for k in env.get("missing_keys") or [] if KEY_VARS.search(k)]


def price_known(lt: Any, model: str) -> bool:
    """Whether litellm's offline price map knows the model."""
    try:
        lt.cost_per_token(model=model, prompt_tokens=1, completion_tokens=1)
        return True
    except Exception:
        return False


def register_zero_price(lt: Any, model: str) -> None:
    """Register a model at price zero: litellm then stops searching its map on every response
    (~2 ms of CPU per call); the client reports the cost as unknown, never as zero."""
    try:
        lt.register_model({model: {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
                                   "litellm_provider": model.split("/", 1)[0], "mode": "chat"}})
    except Exception:
        pass


def count_tokens(lt: Any, model: str, messages: list[dict[str, str]]) -> int:
    try:
        return int(lt.token_counter(model=model, messages=messages))
    except Exception:
        return sum(len(m["content"]) for m in messages) // 4 + 4 * len(messages)


def price(lt: Any, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    try:
        p, c = lt.cost_per_token(model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        return float(p) + float(c)
    except Exception:
        return None


# ------------------------------------------------------------------------------- kdc's providers
Generate = Callable[[list[dict[str, str]], dict[str, Any]], dict[str, Any]]


def register_provider(provider: str, model: str, generate: Generate, lt: Any = None) -> None:
    """Make `litellm.acompletion(model="<provider>/<model>")` call `generate(messages, params)` (run
    in a thread), which returns {text, finish_reason, prompt_tokens, completion_tokens} or raises
    ContextTooLong. Idempotent: the first registration of a provider wins."""
    lt = lt or load()
    if any(item.get("provider") == provider for item in lt.custom_provider_map):
        return
    handler = _custom_llm_class(lt)(provider, model, generate)
    lt.custom_provider_map = [*lt.custom_provider_map, {"provider": provider, "custom_handler": handler}]


def _custom_llm_class(lt: Any):
    class KdcProvider(lt.CustomLLM):
        """A litellm custom provider backed by a plain Python function."""

        def __init__(self, provider: str, model: str, generate: Generate):
            super().__init__()
            self.provider, self.model, self.generate = provider, model, generate

        def completion(self, model, messages, api_base, custom_prompt_dict, model_response, print_verbose, encoding,
                       api_key, logging_obj, optional_params, *args, **kwargs):
            name = f"{self.provider}/{self.model}"
            if model != self.model:
                raise lt.NotFoundError(message=f"unknown {self.provider} model {model!r}; use {name}",
                                       model=model, llm_provider=self.provider)
            try:
                res = self.generate(messages, optional_params)
            except ContextTooLong as exc:
                raise lt.ContextWindowExceededError(message=str(exc), model=name, llm_provider=self.provider) from None
            return lt.ModelResponse(
                model=name,
                choices=[{"index": 0, "finish_reason": res["finish_reason"],
                          "message": {"role": "assistant", "content": res["text"]}}],
                usage={"prompt_tokens": res["prompt_tokens"], "completion_tokens": res["completion_tokens"],
                       "total_tokens": res["prompt_tokens"] + res["completion_tokens"]})

        async def acompletion(self, *args, **kwargs):
            return await asyncio.to_thread(self.completion, *args, **kwargs)

    return KdcProvider
