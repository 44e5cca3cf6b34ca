"""The provider's batch API (OpenAI's files + batches interface) through litellm: upload a JSONL of
chat requests, create the batch, poll it, read its output and errors files back as plain values.

Why litellm's `acreate_file` / `acreate_batch` / `aretrieve_batch` / `afile_content`: the same
library, keys and endpoint settings as the live teacher, so a batch reaches exactly the server a
live call would. litellm is passed in as `lt` (compiler/llm/backend.py is the one module that
imports it). Every provider error becomes a `BatchError` with a scrubbed message: the build falls
back to live requests instead of showing a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from compiler.llm import backend
from compiler.llm.schemafallback import JSON_OBJECT
from compiler.llm.secrets import scrub
from compiler.llm.teacher import Completion, Teacher

# litellm's OpenAI-compatible files + batches providers (the request body is OpenAI's)
PROVIDERS = ("openai", "hosted_vllm", "litellm_proxy")
ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "expired", "failed", "cancelled")


class BatchError(Exception):
    """A batch call the provider refused or could not answer (status when it gave one)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class BatchState:
    """What a retrieve says about a batch."""

    id: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    errors: str = ""  # batch-level errors (e.g. a malformed input file), when `failed`

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


@dataclass
class ItemFailure:
    """One request of a batch that has no usable answer (errors file, non-200, or absent)."""

    code: str
    message: str


def provider_of(lt: Any, model: str) -> tuple[str, str]:
    """(model name as the provider knows it, litellm provider) of a litellm model string."""
    try:
        name, provider, _, _ = lt.get_llm_provider(model)
    except Exception:
        return model.split("/", 1)[-1], model.split("/", 1)[0]
    return name, provider


def supports_batch(lt: Any, model: str) -> bool:
    return provider_of(lt, model)[1] in PROVIDERS


def request_line(lt: Any, teacher: Teacher, custom_id: str, messages: list[dict[str, str]], response_format: dict | None,
                 sampling: dict[str, Any]) -> dict[str, Any]:
    """One JSONL line: the body a live `acompletion` of the same request sends (llm/teacher.py)."""
    body: dict[str, Any] = {"model": provider_of(lt, teacher.model)[0], "messages": messages,
                            **teacher.sampling, **sampling}
    if response_format is not None:
        schema_mode = response_format.get("type") == "json_schema"
        body["response_format"] = JSON_OBJECT if schema_mode and teacher.schema_fallback else response_format
    if teacher.logprobs:
        body["logprobs"] = True
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


class BatchClient:
    """The four batch calls against the teacher's provider and first endpoint."""

    def __init__(self, lt: Any, teacher: Teacher):
        self.lt = lt
        self.provider = provider_of(lt, teacher.model)[1]
        self.kwargs: dict[str, Any] = {"custom_llm_provider": self.provider}
        if teacher.api_bases:
            self.kwargs["api_base"] = teacher.api_bases[0]  # one batch, one endpoint
        key = getattr(teacher, "_api_key", None)  # the placeholder for a keyless local server, if any
        if key:
            self.kwargs["api_key"] = key

    async def _call(self, what: str, fn, **kw: Any) -> Any:
        try:
            return await fn(**kw, **self.kwargs)
        except Exception as exc:  # litellm's and the openai SDK's errors alike
            status = getattr(exc, "status_code", None)
            raise BatchError(f"{what}: {scrub(backend.short_message(exc))}",
                             status if isinstance(status, int) else None) from None

    async def submit(self, lines: list[dict[str, Any]], metadata: dict[str, str]) -> str:
        """Upload the requests and create the batch; its id."""
        data = "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in lines).encode("utf-8")
        upload = await self._call("upload of the batch file", self.lt.acreate_file,
                                  file=("kdc-batch.jsonl", data, "application/jsonl"), purpose="batch")
        batch = await self._call("batch create", self.lt.acreate_batch, completion_window="24h",
                                 endpoint=ENDPOINT, input_file_id=upload.id, metadata=metadata)
        return str(batch.id)

    async def retrieve(self, batch_id: str) -> BatchState:
        b = await self._call(f"batch {batch_id} retrieve", self.lt.aretrieve_batch, batch_id=batch_id)
        counts = getattr(b, "request_counts", None)
        errors = getattr(b, "errors", None)
        data = getattr(errors, "data", None) or []
        return BatchState(str(b.id), str(b.status), b.output_file_id, b.error_file_id,
                          {k: int(getattr(counts, k, 0) or 0) for k in ("total", "completed", "failed")},
                          "; ".join(scrub(str(getattr(e, "message", e))) for e in data)[:300])

    async def lines(self, file_id: str | None) -> list[dict[str, Any]]:
        """A result file's JSON lines (unparseable lines are skipped: their requests count as absent)."""
        if not file_id:
            return []
        resp = await self._call(f"file {file_id} content", self.lt.afile_content, file_id=file_id)
        out = []
        for raw in resp.content.decode("utf-8", errors="replace").splitlines():
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if isinstance(item, dict) and isinstance(item.get("custom_id"), str):
                out.append(item)
        return out


def answer_of(lt: Any, item: dict[str, Any], teacher: Teacher) -> Completion | ItemFailure:
    """An output/errors-file line as the Completion a live call would have given, or why not."""
    err = item.get("error")
    resp = item.get("response") or {}
    body = resp.get("body") if isinstance(resp, dict) else None
    if err or not isinstance(body, dict) or resp.get("status_code") != 200:
        if isinstance(err, dict):
            return ItemFailure(str(err.get("code") or "error"), scrub(str(err.get("message") or ""))[:300])
        detail = (body or {}).get("error") if isinstance(body, dict) else None
        message = detail.get("message") if isinstance(detail, dict) else ""
        return ItemFailure(f"http-{resp.get('status_code')}", scrub(str(message or ""))[:300])
    choices = body.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ItemFailure("no-choice", "the batch answer has no choices")
    choice = choices[0]
    usage = body.get("usage") or {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return Completion(text=(choice.get("message") or {}).get("content") or "", finish_reason=choice.get("finish_reason"),
                      prompt_tokens=prompt, completion_tokens=completion,
                      cost_usd=batch_price(lt, teacher.model, prompt, completion) if teacher.price_known else None,
                      attempts=1, model=teacher.model,
                      logprobs=backend._token_logprobs(choice.get("logprobs")) if teacher.logprobs else None)


def batch_price(lt: Any, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """USD by litellm's `*_batches` prices for the model; None when its map has none."""
    try:
        info = lt.get_model_info(model)
    except Exception:
        return None
    p, c = info.get("input_cost_per_token_batches"), info.get("output_cost_per_token_batches")
    if p is None or c is None:
        return None
    return float(p) * prompt_tokens + float(c) * completion_tokens
