"""The optional LLM judge: rubric scores (faithfulness, relevance, format; 1-5) as structured
output from any litellm model, asked through the one LLM client (compiler/llm/teacher.py: its
retries, Retry-After, breaker and scrub; the only retry here is a second ask when the reply is not
valid scores).

The prompts are templates/judge_system.j2 (rubric + few-shot, checked against the golden cases
in tests/golden/) and templates/judge.j2 (the example), rendered in a sandbox with the sample's
text passed as data. A judge that cannot be reached stops the build (JudgeError); a judge that
answers nonsense twice rejects only that sample (reason `judge`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from compiler.llm.cache import Cache, request_key
from compiler.llm.secrets import scrub
from compiler.errors import TeacherError
from compiler.records import Record
from compiler.resources import data_dir, load_schema

SYSTEM_TEMPLATE = "judge_system.j2"
SAMPLE_TEMPLATE = "judge.j2"
RUBRICS = ("faithfulness", "relevance", "format", "standalone")
DEFAULT_THRESHOLDS = {r: 3 for r in RUBRICS}


class JudgeError(TeacherError):
    """The judge model cannot be reached or refuses the request (auth, unknown model, network)."""


@dataclass(frozen=True)
class JudgeResult:
    scores: dict[str, int] = field(default_factory=dict)
    rationale: str = ""
    error: str | None = None  # the judge answered, but not with valid scores


def _env() -> SandboxedEnvironment:
    return _env_for(str(data_dir("templates")))


@functools.lru_cache(maxsize=8)
def _env_for(directory: str) -> SandboxedEnvironment:
    """One environment per template folder: Jinja2 compiles each template once per environment, and
    compiling them for every judged sample cost more CPU than the judge's HTTP call."""
    return SandboxedEnvironment(loader=FileSystemLoader(directory), autoescape=False,
                                undefined=StrictUndefined, keep_trailing_newline=False)


@functools.lru_cache(maxsize=1)
def _reply_validator() -> Any:
    """schemas/judge.json, checked once: `jsonschema.validate` re-checks the schema itself against
    the meta-schema on every call, which was half of a judged build's CPU."""
    schema = load_schema("judge.json")
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def template_hashes() -> dict[str, str]:
    """sha256 of the judge templates, for the manifest's `templates` section."""
    root = data_dir("templates")
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest()
            for name in (SYSTEM_TEMPLATE, SAMPLE_TEMPLATE)}


def render_messages(record: Record, context: str | None, kind: str) -> list[dict[str, str]]:
    """The chat messages sent to the judge for one example (no thresholds: kdc applies them)."""
    env = _env()
    system = env.get_template(SYSTEM_TEMPLATE).render()
    user = env.get_template(SAMPLE_TEMPLATE).render(kind=kind, context=context or "", question=record.question,
                                                    reasoning=list(record.reasoning), answer=record.answer)
    return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]


def parse_scores(content: str) -> JudgeResult:
    """The judge's reply as scores, or an error saying what was wrong with it."""
    text = (content or "").strip()
    fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.S)
    if fence:
        text = fence.group(1)
    try:
        data = json.loads(text)
    except ValueError:
        return JudgeResult(error=f"judge reply is not JSON: {text[:80]!r}")
    error = jsonschema.exceptions.best_match(_reply_validator().iter_errors(data))
    if error is not None:
        return JudgeResult(error=f"judge reply does not match schemas/judge.json: {error.message}")
    return JudgeResult({r: int(data[r]) for r in RUBRICS}, str(data.get("rationale", "")))


class Judge:
    """Scores examples with one litellm model (`--judge MODEL`)."""

    def __init__(self, model: str, *, api_base: str | None = None, api_key_env: str | None = None,
                 timeout: float = 60.0, thresholds: dict[str, int] | None = None, num_retries: int = 2,
                 cache: Cache | None = None, concurrency: int = 8, workers: int | None = 1):
        self.model = model
        self.concurrency = max(1, concurrency)  # judge requests in flight (gates.judge_concurrency)
        self.workers = workers
        self._client = None
        self._key: str | None = None  # the judge's API key, scrubbed from every error
        self.cache = cache  # verdicts survive a resume or a re-run: the judge is not asked twice
        self.calls = 0  # requests actually sent (cache hits excluded)
        self.api_base = api_base
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
        self.num_retries = num_retries

    def _api_key(self) -> str | None:
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise JudgeError(f"the judge's API key variable {self.api_key_env} is not set",
                                 hint=f"export {self.api_key_env}=... (keys are never written to kdc.yaml)")
            return key
        # A local OpenAI-compatible server (vLLM, llama.cpp, a test double) needs no key, but the
        # client insists on one; any provider key in the environment is found by litellm itself.
        return "unused" if self.api_base else None

    async def score(self, record: Record, context: str | None, kind: str) -> JudgeResult:
        """Rubric scores for one example: from the cache, or asked (and then cached)."""
        messages = render_messages(record, context, kind)
        schema = load_schema("judge.json")
        # The key holds what changes the judge's reply (model, exact prompt, schema, sampling);
        # the thresholds are applied by kdc afterwards and the reply is re-parsed on every hit, so
        # a changed threshold or parser re-gates cached verdicts without asking the judge again.
        key = request_key({"v": 2, "judge": self.model, "messages": messages, "schema": schema,
                           "sampling": {"temperature": 0.0}})
        hit = self.cache.get_judgment(key) if self.cache is not None else None
        if hit is not None and "content" in hit:
            return parse_scores(hit["content"])
        result, content = await self._ask(messages, schema)
        if self.cache is not None:
            self.cache.put_judgment(key, {"content": content})
        return result

    def _teacher(self):
        """The judge's client: a Teacher (compiler/llm/teacher.py), so judge calls get the same retries,
        Retry-After, bounded concurrency, schema fallback and worker processes as generation."""
        if self._client is None:
            from compiler.llm.teacher import Teacher

            key = self._key = self._api_key()
            try:
                client = Teacher(self.model, api_bases=[self.api_base] if self.api_base else None,
                                 timeout=self.timeout, max_retries=self.num_retries, concurrency=self.concurrency,
                                 sampling={"temperature": 0.0}, workers=self.workers)
            except TeacherError as exc:
                raise JudgeError(f"judge {self.model}: {exc.message}", hint=exc.hint) from None
            if self.api_key_env and key:  # else the Teacher's own rule: the provider's variable, or a placeholder
                client._api_key = key
            self._client = client
        return self._client

    def __enter__(self) -> "Judge":
        """Start the client's worker processes (before any event loop runs: they are forked)."""
        self._teacher().__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._client is not None:
            self._client.__exit__(*exc)

    async def _ask(self, messages: list[dict[str, str]], schema: dict) -> tuple[JudgeResult, str]:
        from compiler.llm.teacher import TeacherFailure

        client = self._teacher()
        fmt = {"type": "json_schema", "json_schema": {"name": "judge_scores", "schema": schema, "strict": True}}
        result, content, asked = JudgeResult(error="judge not called"), "", messages
        for attempt in range(2):
            self.calls += 1
            try:
                done = await client.complete(asked, fmt, label="judge")
            except TeacherFailure as exc:
                raise JudgeError(f"judge {self.model} failed: {_short(exc.detail, self._key)}",
                                 hint="check --judge, gates.judge_api_base and the judge's API key") from None
            except TeacherError as exc:
                raise JudgeError(f"judge {self.model} failed: {_short(exc.message, self._key)}",
                                 hint="check --judge, gates.judge_api_base and the judge's API key") from None
            content = done.text if done is not None else ""
            result = parse_scores(content)
            if result.error is None:
                return result, content
            # one more try, telling the model what was wrong
            asked = messages + [{"role": "assistant", "content": content[:2000]},
                                {"role": "user", "content": result.error + ". Reply with the JSON object only."}]
        return result, content


def _short(exc: Exception | str, key: str | None = None) -> str:
    """The error's first line with secrets removed (a 401 body may echo the key it was sent; the
    judge's key variable may be named anything, so it is scrubbed by value too)."""
    text = scrub(str(exc), key)
    return (text.splitlines()[0] if text else "")[:300]
