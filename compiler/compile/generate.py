"""One generation request: prompt -> teacher (or cache) -> parse -> validate -> Sample | Rejection.

The teacher's answer is validated with jsonschema even when the provider enforced the schema,
and every failure keeps the raw text with a reason code, so nothing is dropped silently.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from compiler.llm.cache import Cache, request_key
from compiler.chat import assistant_turn, user_turn
from compiler.compile.plan import LeafPlan, Task
from compiler.compile.prompts import Prompts, Rendered
from compiler.records import Record, Rejection, Sample
from compiler.gates.refusal import find_refusal
from compiler.llm.formats import response_format, response_schema
from compiler.llm.teacher import Completion, Teacher, TeacherFailure

if TYPE_CHECKING:  # jsonschema (~60 ms to import) loads with the first answer, not before the first request
    from jsonschema import Draft202012Validator

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?```\s*$", re.S)


@dataclass(frozen=True)
class Request:
    """A rendered task, ready to send: its cache key doubles as the sample id."""

    task: Task
    rendered: Rendered
    key: str
    response_format: dict
    teacher_model: str
    sampling: dict[str, Any]  # temperature, top_p, max_tokens and this request's seed
    prompt_sha256: str
    item: int | None = None  # typed mode: which of the call's K records this request stands for

    @property
    def sample_id(self) -> str:
        if self.item is None:
            return self.key[:32]
        return hashlib.sha256(f"{self.key}#{self.item}".encode()).hexdigest()[:32]


@lru_cache(maxsize=None)
def _validator(kind: str, reasoning: bool = True) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(response_schema(kind, reasoning))


def ready_validators(leaves: list[LeafPlan]) -> None:
    """The answer validators of these leaves, built ahead of the first answer (jsonschema's
    import included)."""
    for kind, reasoning in sorted({(lp.kind, lp.reasoning) for lp in leaves}):
        _validator(kind, reasoning)


@lru_cache(maxsize=None)
def _format_sha256(kind: str, reasoning: bool = True) -> str:
    return request_key(response_format(kind, reasoning))


@lru_cache(maxsize=None)
def typed_format(k: int, types: tuple[str, ...], reasoning: bool = True) -> dict:
    """Typed mode's response_format: {"questions": [K records, each with its "type"]}."""
    item = copy.deepcopy(response_schema("knowledge", reasoning))
    item["properties"] = {"type": {"type": "string", "enum": list(types)}, **item["properties"]}
    item["required"] = ["type", *item["required"]]
    schema = {"type": "object", "properties": {"questions": {"type": "array", "minItems": k, "maxItems": k,
                                                             "items": item}},
              "required": ["questions"], "additionalProperties": False}
    return {"type": "json_schema", "json_schema": {"name": "kdc_knowledge_questions", "schema": schema,
                                                   "strict": True}}


@lru_cache(maxsize=None)
def _item_validator(types: tuple[str, ...], reasoning: bool) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(typed_format(1, types, reasoning)["json_schema"]["schema"]["properties"]
                                ["questions"]["items"])


def _types(task: Task) -> tuple[str, ...]:
    """The types this call asks for (its schema's enum: the teacher must label each record)."""
    return tuple(dict.fromkeys(task.variables.get("question_types") or ()))


def _format_of(task: Task) -> tuple[dict, str]:
    if task.questions:
        fmt = typed_format(task.questions, _types(task), task.reasoning)
        return fmt, request_key(fmt)
    return response_format(task.kind, task.reasoning), _format_sha256(task.kind, task.reasoning)


def prepare(task: Task, prompts: Prompts, teacher_model: str, sampling: dict[str, Any],
            logprobs: bool = False) -> Request:
    """The request for a task and its cache key. The key hashes the prompt's and the schema's own
    hashes (each prompt is serialized once; the schema, the same for a whole kind, once per run).
    Typed mode (task.questions = K) asks for K records, each labelled with one of the call's types.
    Asking for logprobs changes the answer (it carries them), so it is in the key; the parser and
    the gates are not: answers are cached raw and re-parsed and re-gated on every run."""
    rendered = prompts.render(task)
    fmt, fmt_sha = _format_of(task)
    sampling = {**sampling, "seed": task.request_seed}
    prompt_sha = request_key(rendered.messages)
    parts = {"v": 2, "prompt": prompt_sha, "template": rendered.template_sha256,
             "teacher": teacher_model, "sampling": sampling, "schema": fmt_sha,
             "node": task.node_id, "index": task.sample_index}
    if logprobs:
        parts["logprobs"] = True  # absent when off: caches written before this key part stay valid
    key = request_key(parts)
    return Request(task, rendered, key, fmt, teacher_model, sampling, prompt_sha)


async def ask(req: Request, teacher: Teacher, cache: Cache, should_run=None,
              read_cache: bool = True) -> tuple[Completion | TeacherFailure | None, bool]:
    """(answer, failure or None when not sent; came from cache). Answers are cached the moment
    they arrive; transport failures are not (a re-run asks again); content-level failures are
    (their raw text is the answer, and parsing it again gives the same verdict)."""
    hit = cache.get(req.key) if read_cache else None
    if hit is not None:
        return Completion.from_cache(hit), True
    try:
        done = await teacher.complete(req.rendered.messages, req.response_format, seed=req.task.request_seed,
                                      label=f"{req.task.node_id}#{req.task.sample_index}", should_run=should_run)
    except TeacherFailure as failure:
        return failure, False
    if done is not None:
        cache.put(req.key, req.task.node_id, req.task.sample_index, done.to_cache())
    return done, False


def json_object(text: str, finish_reason: str | None = None) -> dict | tuple[str, str]:
    """The JSON object a teacher answered (fences and chatter around it tolerated), or (reason,
    detail) — reasons: empty, refusal, invalid-json, schema."""
    raw = (text or "").strip()
    if not raw:
        return "empty", "the teacher returned an empty answer"
    fenced = _FENCE.match(raw)
    if fenced:
        raw = fenced.group(1).strip()
    if not raw.startswith("{") and find_refusal(raw):
        return "refusal", raw[:200]
    try:
        data = json.loads(raw)
    except ValueError as exc:
        start, end = raw.find("{"), raw.rfind("}")
        data = None
        if 0 <= start < end:
            try:
                data = json.loads(raw[start:end + 1])
            except ValueError:
                data = None
        if data is None:
            why = "truncated at max_tokens" if finish_reason == "length" else str(exc)
            return "invalid-json", f"not JSON: {why}"
    if not isinstance(data, dict):
        return "schema", f"expected a JSON object, got {type(data).__name__}"
    return data


def parse(text: str, kind: str, finish_reason: str | None = None, reasoning: bool = True,
          validator: Draft202012Validator | None = None) -> dict | tuple[str, str]:
    """The record dict, or (reason, detail) — reasons: empty, refusal, invalid-json, schema."""
    data = json_object(text, finish_reason)
    return data if isinstance(data, tuple) else check_record(data, kind, reasoning, validator)


def check_record(data: dict, kind: str, reasoning: bool = True,
                 validator: Draft202012Validator | None = None) -> dict | tuple[str, str]:
    """One record checked: no empty field, the schema, no refusal as the answer."""
    if not isinstance(data, dict):
        return "schema", f"expected a JSON object, got {type(data).__name__}"
    for name in ("question", "answer", "context"):
        value = data.get(name)
        if isinstance(value, str) and not value.strip() and (name != "context" or kind == "grounded_skill"):
            return "empty", f"the {name} is empty"
    if isinstance(data.get("reasoning"), list) and data["reasoning"] and \
            all(isinstance(s, str) and not s.strip() for s in data["reasoning"]):
        return "empty", "the reasoning steps are empty"
    errors = sorted((validator or _validator(kind, reasoning)).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(record)"
        return "schema", f"{where}: {err.message}"[:300]
    answer = str(data.get("answer", ""))
    found = find_refusal(answer)
    if found:
        return "refusal", f"the answer is a refusal ({found.span!r}): {answer[:160]}"
    return data


def typed_items(text: str, finish_reason: str | None = None) -> list | tuple[str, str]:
    """Typed mode: the answer's list of records (unchecked), or why there is none."""
    data = json_object(text, finish_reason)
    if isinstance(data, tuple):
        return data
    items = data.get("questions")
    if not isinstance(items, list):
        return "schema", "questions: expected a list of records"
    return items if items else ("empty", "the list of questions is empty")


def split_typed(req: Request, answer: Completion) -> list[tuple[Request, Completion]]:
    """One (request, answer) per record of a typed answer, at most K; an answer with no usable
    list stands as one (its rejection). The call's usage is carried by its first record only, so
    node totals count each call once."""
    items = typed_items(answer.text, answer.finish_reason)
    n = min(req.task.questions, len(items)) if isinstance(items, list) else 1
    zero = replace(answer, prompt_tokens=0, completion_tokens=0,
                   cost_usd=None if answer.cost_usd is None else 0.0)
    return [(replace(req, item=j), answer if j == 0 else zero) for j in range(n)]


def _parse_item(req: Request, lp: LeafPlan, answer: Completion) -> dict | tuple[str, str]:
    items = typed_items(answer.text, answer.finish_reason)
    if isinstance(items, tuple):
        return items
    validator = _item_validator(_types(req.task), req.task.reasoning)
    return check_record(items[req.item or 0], req.task.kind, req.task.reasoning, validator)


def _leaf_name(lp: LeafPlan) -> str:
    return lp.leaf.ancestors[-1].replace("_", " ")


def chat_messages(lp: LeafPlan, record: Record) -> list[dict[str, str]]:
    """The training example in chat form: system names the skill/domain; the user asks (with the
    context for grounded skills and knowledge); the assistant reasons, then answers."""
    if lp.kind == "knowledge":
        domain = str(lp.leaf.content.get("domain") or "").strip() or _leaf_name(lp)
        system = f"You are a helpful assistant with expert knowledge of {domain} ({_leaf_name(lp)})."
    else:
        system = f"You are a helpful assistant skilled in {_leaf_name(lp)}."
    return [{"role": "system", "content": system},
            {"role": "user", "content": user_turn(record.question, record.context)},
            {"role": "assistant", "content": assistant_turn(record.reasoning, record.answer)}]


def build(req: Request, lp: LeafPlan, answer: Completion) -> Sample | Rejection:
    """Turn a teacher answer into a Sample with full provenance, or a Rejection with its reason."""
    task = req.task
    meta = provenance(req, lp, answer)
    if task.questions:
        parsed = _parse_item(req, lp, answer)
        if isinstance(parsed, dict):
            meta["question_type"] = parsed["type"]
    else:
        parsed = parse(answer.text, task.kind, answer.finish_reason, task.reasoning)
    if isinstance(parsed, tuple):
        return Rejection(req.sample_id, task.node_id, parsed[0], parsed[1], answer.text, meta)
    context = task.chunk.text if task.chunk is not None else parsed.get("context")
    record = Record(question=parsed["question"].strip(),
                    reasoning=tuple(s.strip() for s in parsed.get("reasoning", ()) if s.strip()),
                    answer=parsed["answer"].strip(), context=context.strip() if context else None)
    return Sample(req.sample_id, task.node_id, record, chat_messages(lp, record), meta)


def provenance(req: Request, lp: LeafPlan, answer: Completion | None, attempts: int | None = None) -> dict:
    task = req.task
    meta: dict[str, Any] = {
        "node_id": task.node_id, "leaf_path": list(lp.leaf.ancestors), "kind": task.kind,
        "leaf_sha256": lp.leaf.content_hash, "seeds_shown": list(task.seeds_shown),
    }
    if not task.reasoning:
        meta["reasoning"] = False  # the leaf asks for no steps (plan.reasoning_for); gates skip that check
    if task.chunk is not None:
        c = task.chunk
        meta["document"] = {"repo": c.repo, "commit": c.commit, "file": c.file, "start": c.start,
                            "end": c.end, "sha256": c.sha256}
        if c.page:  # PDFs: the pages the chunk quotes
            meta["document"].update(page=c.page, page_end=c.page_end)
    if task.questions:  # typed mode: which record of the call, and the view it was asked about
        meta["item"] = req.item or 0
        if task.view is not None:
            meta["view"] = dict(task.view)
    meta.update({
        "template": {"name": req.rendered.template, "sha256": req.rendered.template_sha256},
        "teacher": {"model": req.teacher_model, "sampling": dict(req.sampling)},
        "prompt_sha256": req.prompt_sha256,
        "request_key": req.key,
        "sample_index": task.sample_index,
        "attempts": answer.attempts if answer else (attempts or 0),
        "usage": {"prompt_tokens": answer.prompt_tokens if answer else 0,
                  "completion_tokens": answer.completion_tokens if answer else 0},
        "cost_usd": answer.cost_usd if answer else None,
        "diversity": dict(task.diversity),
    })
    return meta
