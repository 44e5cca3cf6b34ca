"""The augmentation stage (issue 15 item 2): before any question is asked about a knowledge leaf,
the teacher writes views of each document section — a detailed summary, an extractive summary
(key passages verbatim) and a list of atomic facts — and typed questions are then asked over the
sections and every accepted view (plan.Unit), as InstructLab SDG 0.8 and sdg_hub do.

Why views are checked before use: a question about a hallucinated summary teaches the
hallucination. Each view is schema-checked (schemas/augment_*.json) and grounded in its section:
extractive passages must occur verbatim, a detailed summary and each atomic fact must have their
content words found in the section (augment.min_*_support). A rejected view is kept with its
reason (views.jsonl, manifest `views`), never asked about.

Cached and resumable exactly like teacher answers: the same cache, keyed by everything that
changes the answer (prompt, template, schema, teacher, sampling with its seed, source hash), put
the moment the answer arrives. The key names no leaf: two leaves over one document share views.
Views are decided in (node, chunk, view kind) order, never arrival order, so the units — and
every later prompt — are the same at any concurrency.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from compiler.compile.generate import json_object
from compiler.compile.plan import TEMPLATES, LeafPlan, Unit, _rng, set_units
from compiler.llm.cache import request_key
from compiler.llm.teacher import Completion, TeacherFailure
from compiler.compile.prompts import Prompts
from compiler.records import Chunk
from compiler.resources import load_schema

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

    from compiler.augconfig import AugmentConfig
    from compiler.compile.scheduler import Scheduler as Builder

log = logging.getLogger("kdc.augment")

_ITEMS = {"detailed_summary": "summary", "extractive_summary": "passages", "atomic_facts": "facts"}


@dataclass(frozen=True)
class View:
    """An accepted view of one section, with its provenance (source span and hash, request key)."""

    kind: str
    chunk: Chunk
    items: tuple[str, ...]  # the summary (one), the passages, or the supported facts
    key: str  # the cache key of the teacher answer that wrote it
    dropped: int = 0  # atomic facts left out as unsupported

    @property
    def text(self) -> str:
        return "\n".join(self.items)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "status": "accepted", "sha256": self.sha256, "source": _source(self.chunk),
                "items": list(self.items), "dropped": self.dropped, "request_key": self.key}


@dataclass(frozen=True)
class ViewRejection:
    """A view that failed its schema or its grounding check: never asked about."""

    kind: str
    chunk: Chunk
    reason: str  # empty | refusal | invalid-json | schema | not-verbatim | unsupported | teacher failure reason
    detail: str
    raw: str | None
    key: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "status": "rejected", "reason": self.reason, "detail": self.detail,
                "source": _source(self.chunk), "raw": self.raw, "request_key": self.key}


def _source(c: Chunk) -> dict[str, Any]:
    return {"repo": c.repo, "commit": c.commit, "file": c.file, "start": c.start, "end": c.end,
            "sha256": c.sha256, "heading": c.heading}


@lru_cache(maxsize=None)
def view_format(kind: str) -> dict:
    schema = {k: v for k, v in load_schema(f"augment_{kind}.json").items()
              if k not in ("$schema", "$id", "title", "description")}
    return {"type": "json_schema", "json_schema": {"name": f"kdc_{kind}", "schema": schema, "strict": True}}


@lru_cache(maxsize=None)
def _validator(kind: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(view_format(kind)["json_schema"]["schema"])


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def check_view(kind: str, chunk: Chunk, text: str, finish_reason: str | None, aug: "AugmentConfig",
               key: str) -> View | ViewRejection:
    """Schema, then grounding against the section. Pure: re-run on every build (answers are cached
    raw), so a changed threshold re-decides old answers without asking again."""
    from compiler.gates.chain import support_score  # heavy module: loaded once a build is on

    def reject(reason: str, detail: str) -> ViewRejection:
        return ViewRejection(kind, chunk, reason, detail[:300], text, key)

    data = json_object(text, finish_reason)
    if isinstance(data, tuple):
        return reject(*data)
    errors = sorted(_validator(kind).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(view)"
        return reject("schema", f"{where}: {errors[0].message}")
    value = data[_ITEMS[kind]]
    items = [" ".join(s.split()) for s in ([value] if isinstance(value, str) else value)]
    items = [s for s in items if s]
    if not items:
        return reject("empty", f"the {_ITEMS[kind]} are empty")
    if kind == "extractive_summary":
        source = _norm(chunk.text)
        for p in items:
            if len(p.split()) < aug.min_passage_words:
                return reject("not-verbatim", f"a passage of under {aug.min_passage_words} words: {p!r}")
            if _norm(p) not in source:
                return reject("not-verbatim", f"this passage is not in the section: {p[:200]!r}")
        return View(kind, chunk, tuple(items), key)
    if kind == "detailed_summary":
        score = support_score(items[0], chunk.text)
        if score < aug.min_summary_support:
            return reject("unsupported", f"{score:.2f} of the summary's content words are in the section "
                                         f"(augment.min_summary_support: {aug.min_summary_support})")
        return View(kind, chunk, (items[0],), key)
    kept = tuple(f for f in items if support_score(f, chunk.text) >= aug.min_fact_support)
    if not kept:
        return reject("unsupported", f"none of the {len(items)} facts is supported by the section "
                                     f"(augment.min_fact_support: {aug.min_fact_support})")
    return View(kind, chunk, kept, key, dropped=len(items) - len(kept))


@dataclass(frozen=True)
class ViewRequest:
    kind: str
    chunk: Chunk
    messages: list[dict[str, str]]
    key: str
    seed: int
    node_id: str


def view_request(builder: "Builder", lp: LeafPlan, chunk: Chunk, kind: str) -> ViewRequest:
    cfg = builder.cfg
    rendered = builder.prompts.render_vars(TEMPLATES[f"augment_{kind}"],
                                           {"title": chunk.title, "section": chunk.heading, "chunk": chunk.text},
                                           lp.node_id)
    seed = _rng("augment", cfg.seed, chunk.sha256, kind).randrange(2**31)
    key = request_key({"v": 1, "stage": "augment", "view": kind, "prompt": request_key(rendered.messages),
                       "template": rendered.template_sha256, "teacher": cfg.teacher,
                       "sampling": {**cfg.sampling, "seed": seed}, "schema": request_key(view_format(kind)),
                       "source": chunk.sha256})
    return ViewRequest(kind, chunk, rendered.messages, key, seed, lp.node_id)


async def _answer(builder: "Builder", vr: ViewRequest) -> tuple[Completion | TeacherFailure | None, bool]:
    """(answer, asked the teacher in this run). Cache first; put the moment it arrives."""
    hit = builder.cache.get(vr.key)
    if hit is not None:
        return Completion.from_cache(hit), False
    if builder.teacher.unavailable or builder.cost_stop:
        return None, False
    reserve = 0.0
    if builder.cfg.max_cost is not None:  # the same worst-case reservation as a Q&A request
        reserve = builder.teacher.price(builder.teacher.count_tokens(vr.messages), builder.cfg.max_tokens) or 0.0
        if builder.spent + builder.reserved + reserve > builder.cfg.max_cost:
            builder.cost_stop = True
            return None, False
        builder.reserved += reserve
    try:
        done = await builder.teacher.complete(vr.messages, view_format(vr.kind), seed=vr.seed,
                                              label=f"{vr.node_id}#augment:{vr.kind}")
    except TeacherFailure as failure:
        return failure, True
    finally:
        builder.reserved -= reserve
    if done is not None:
        builder.spent += done.cost_usd or 0.0
        builder.cache.put(vr.key, vr.node_id, -1, done.to_cache())
    return done, True


def units_of(chunks: list[Chunk], views: list[View], facts_per_group: int) -> list[Unit]:
    """The sections, then each accepted view (atomic facts in groups), in chunk then view order."""
    by_chunk: dict[str, list[View]] = {}
    for v in views:
        by_chunk.setdefault(v.chunk.sha256 + str(v.chunk.start), []).append(v)
    units: list[Unit] = []
    for c in chunks:
        units.append(Unit("chunk", c, c.text))
        for v in by_chunk.get(c.sha256 + str(c.start), []):
            if v.kind != "atomic_facts":
                units.append(Unit(v.kind, c, v.text, v.sha256))
                continue
            for part, at in enumerate(range(0, len(v.items), facts_per_group)):
                units.append(Unit(v.kind, c, "\n".join(v.items[at:at + facts_per_group]), v.sha256, part))
    return units


async def augment_leaves(builder: "Builder") -> None:
    """Run the stage for every knowledge leaf in typed mode with views configured; then each
    leaf's units (and so its quota) include its accepted views. Tokens and cost are the leaf's."""
    aug = builder.cfg.augment
    leaves = [st for _, st in sorted(builder.nodes.items()) if st.lp.questions and aug.views and st.lp.chunks]
    if not leaves:
        return
    requests = [(st, view_request(builder, st.lp, c, kind)) for st in leaves for c in st.lp.chunks
                for kind in aug.views]
    futures: dict[str, asyncio.Future] = {}
    for _, vr in requests:  # one call per key: leaves over the same document share its views
        if vr.key not in futures:
            futures[vr.key] = asyncio.ensure_future(_answer(builder, vr))
    try:
        await asyncio.gather(*futures.values())
    except BaseException:
        for fut in futures.values():
            fut.cancel()
        raise
    counted: set[str] = set()
    for st, vr in requests:  # decided in plan order, whatever finished first
        answer, asked = futures[vr.key].result()
        if isinstance(answer, Completion):
            if vr.key not in counted:
                counted.add(vr.key)
                st.prompt_tokens += answer.prompt_tokens
                st.completion_tokens += answer.completion_tokens
                st.cost_known &= answer.cost_usd is not None
                st.cost_usd += answer.cost_usd or 0.0
                st.lp.view_run["teacher_calls" if asked else "cache_hits"] += 1
                st.teacher_calls += asked  # (not st.cache_hits: Builder._ask waits on Q&A hits only)
                if asked:
                    st.teacher_tokens.update(prompt=answer.prompt_tokens, completion=answer.completion_tokens)
            st.lp.views.append(check_view(vr.kind, vr.chunk, answer.text, answer.finish_reason, aug, vr.key))
        elif isinstance(answer, TeacherFailure):
            st.lp.views.append(ViewRejection(vr.kind, vr.chunk, answer.reason, answer.detail, None, vr.key))
    for st in leaves:
        accepted = [v for v in st.lp.views if isinstance(v, View)]
        set_units(st.lp, units_of(st.lp.chunks, accepted, aug.facts_per_group), builder.cfg)
        st.progress.target = st.lp.target
        log.info("%s: %d views accepted, %d rejected; %d units", st.lp.node_id, len(accepted),
                 len(st.lp.views) - len(accepted), len(st.lp.units))


def view_summary(lp: LeafPlan) -> dict[str, Any]:
    """For the manifest: views accepted per kind, rejected per reason, facts dropped, units."""
    if not lp.questions:
        return {}
    accepted: dict[str, int] = {}
    rejected: dict[str, int] = {}
    dropped = 0
    for v in lp.views:
        if isinstance(v, View):
            accepted[v.kind] = accepted.get(v.kind, 0) + 1
            dropped += v.dropped
        else:
            rejected[v.reason] = rejected.get(v.reason, 0) + 1
    return {"views": {"accepted": dict(sorted(accepted.items())), "rejected": dict(sorted(rejected.items())),
                      "facts_dropped": dropped, "units": len(lp.units), "questions_per_call": lp.questions,
                      "run": dict(lp.view_run)}}


def dry_run_adjust(lp: LeafPlan, cfg: Any, prompts: Prompts, teacher: Any, p_tok: int, c_tok: int
                   ) -> tuple[int, int, dict[str, Any]]:
    """`kdc compile --dry-run` in typed mode: Q&A tokens for target / K calls of K records, plus
    every view call (prompt counted, answer estimated at half the section). The quota shown is
    the one before views are known; each accepted view adds per_chunk x K samples."""
    if not lp.questions:
        return p_tok, c_tok, {}
    calls = -(-lp.target // lp.questions)
    p_tok, c_tok = int(p_tok * calls / max(1, lp.target)), c_tok
    views = list(cfg.augment.views) if lp.chunks else []
    vp = vc = 0
    for c in lp.chunks:
        for kind in views:
            messages = prompts.render_vars(TEMPLATES[f"augment_{kind}"],
                                           {"title": c.title, "section": c.heading, "chunk": c.text}, lp.node_id).messages
            vp += teacher.count_tokens(messages)
            vc += min(cfg.max_tokens, len(c.text.split()) * 2 // 3 + 40)
    return p_tok + vp, c_tok + vc, {"view_requests": len(lp.chunks) * len(views), "questions_per_call": lp.questions,
                                    "est_view_prompt_tokens": vp, "est_view_completion_tokens": vc}
