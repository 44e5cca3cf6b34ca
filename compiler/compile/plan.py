"""The plan: which leaves to compile, their quotas, held-out eval seeds, document chunks, and the
generation task for any sample index of a leaf.

Everything random here is drawn from a generator seeded by (seed, node id, sample index), never
from global state, so a task is a pure function of the taxonomy, the settings and its index:
that is what makes the cache hit on a re-run and lets quota top-up ask for "the next index".
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from compiler.config import CompileConfig
from compiler.taxonomy.documents import chunks_for
from compiler.errors import DocumentError, KdcError
from compiler.records import Chunk, Leaf, Seed
from compiler.taxonomy.tree import Taxonomy

COMPILED_KINDS = ("freeform_skill", "grounded_skill", "knowledge")
TEMPLATES = {"freeform_skill": "generate_freeform.j2", "grounded_skill": "generate_grounded.j2",
             "knowledge": "generate_knowledge.j2",
             # issue 15: K typed questions per call, and the augmentation views (compile/augment.py)
             "knowledge_typed": "generate_knowledge_typed.j2",
             "augment_detailed_summary": "augment_detailed_summary.j2",
             "augment_extractive_summary": "augment_extractive_summary.j2",
             "augment_atomic_facts": "augment_atomic_facts.j2"}


def _rng(*parts: Any) -> random.Random:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def split_indexes(n: int, share: float, seed: int, node_id: str) -> tuple[list[int], list[int]]:
    """(train indexes, eval indexes) of n seeds: round(share * n) held out, at least one, and at
    least one left for training. Deterministic in (seed, node id, n)."""
    if n < 2:
        return list(range(n)), []
    k = min(n - 1, max(1, round(share * n)))
    held = sorted(_rng("eval-split", seed, node_id).sample(range(n), k))
    return [i for i in range(n) if i not in held], held


def split_seeds(leaf: Leaf, share: float, seed: int) -> tuple[list[Seed], list[Seed]]:
    """A leaf's seeds split into those the teacher may see and the held-out eval set."""
    seeds = leaf.seeds()
    train, held = split_indexes(len(seeds), share, seed, leaf.node_id)
    return [seeds[i] for i in train], [seeds[i] for i in held]


def draw_diversity(lists: dict[str, list[str]], seed: int, node_id: str, index: int) -> dict[str, str]:
    rng = _rng("diversity", seed, node_id, index)
    return {"persona": rng.choice(lists["personas"]), "difficulty": rng.choice(lists["difficulties"]),
            "style": rng.choice(lists["styles"])}


@dataclass(frozen=True)
class Unit:
    """What one typed-question call is about: a chunk itself, or an accepted view of it (a
    summary, the key passages, a group of atomic facts). `chunk` is always the source section:
    samples are grounded in it and keep it as their provenance."""

    kind: str  # "chunk" or a view kind (compile/augconfig.VIEW_KINDS)
    chunk: Chunk
    text: str
    view_sha256: str | None = None
    part: int = 0  # the group number of atomic facts


@dataclass
class LeafPlan:
    """One leaf to compile: its quota and budget, its seeds split, its document chunks."""

    leaf: Leaf
    target: int
    budget: int  # max sample indexes to try
    train_seeds: list[Seed]
    eval_seeds: list[Seed]
    eval_indexes: list[int]  # into leaf.seeds()
    chunks: list[Chunk] = field(default_factory=list)
    reasoning: bool = True
    questions: int = 0  # typed mode (issue 15): K questions per call over `units`; 0: one Q&A per call
    question_types: tuple[str, ...] = ()
    units: list[Unit] = field(default_factory=list)  # the chunks, then (after augmentation) their views
    views: list[Any] = field(default_factory=list)  # augment.View / augment.ViewRejection, for the build dir
    avoid: tuple[tuple[str, str], ...] = ()  # (chunk sha256, question) accepted before this round
    seed_avoid: tuple[str, ...] = ()  # typed mode: the training seeds' questions, listed from round 1 on
    view_run: dict[str, int] = field(default_factory=lambda: {"teacher_calls": 0, "cache_hits": 0})  # views, this run

    def note_accepted(self, samples: list) -> None:
        """Called at the start of each round: the questions accepted so far become the next
        prompts' "do not repeat" list. Earlier rounds only, never whatever finished first in this
        one, so prompts (and cache keys) are the same at any concurrency."""
        if self.questions:
            self.avoid = tuple(((s.metadata.get("document") or {}).get("sha256", ""), s.record.question)
                               for s in samples)

    @property
    def node_id(self) -> str:
        return self.leaf.node_id

    @property
    def kind(self) -> str:
        return self.leaf.kind

    @property
    def template(self) -> str:
        return TEMPLATES["knowledge_typed" if self.questions else self.leaf.kind]


@dataclass(frozen=True)
class Task:
    """One generation request before rendering: all the leaf-specific inputs of a prompt."""

    node_id: str
    kind: str
    sample_index: int
    template: str
    variables: dict[str, Any]
    seeds_shown: tuple[int, ...]  # indexes into the leaf's training seeds
    chunk: Chunk | None
    diversity: dict[str, str]
    request_seed: int  # the teacher's sampling seed for this request
    reasoning: bool = True  # ask for chain-of-thought steps (plan.reasoning_for)
    questions: int = 0  # typed mode: K questions in one call (generate.typed_format); 0: one record
    view: dict[str, Any] | None = None  # typed mode: the unit asked about, when it is a view


def make_plan(taxonomy: Taxonomy, cfg: CompileConfig, *, keep_going: bool = False,
              broken: dict[str, dict[str, str]] | None = None) -> list[LeafPlan]:
    """A LeafPlan for every compilable leaf, documents resolved and chunked. Every leaf whose
    documents cannot be loaded is reported in one DocumentError (each line names its qna.yaml);
    with keep_going they are left out and recorded in `broken` (node id -> file, error)."""
    unknown = sorted(set(cfg.nodes) - {leaf.node_id for leaf in taxonomy.leaves()})
    if unknown:
        raise KdcError(f"kdc.yaml `nodes:` names unknown node(s): {', '.join(unknown)}",
                       hint="use node ids as shown by --dry-run (folder paths from the taxonomy root)",
                       path=str(cfg.config_file) if cfg.config_file else None)
    plans: list[LeafPlan] = []
    failed: list[tuple[Leaf, DocumentError]] = []
    for leaf in taxonomy.leaves():
        if leaf.kind not in COMPILED_KINDS:
            continue
        seeds = leaf.seeds()
        train_idx, eval_idx = split_indexes(len(seeds), cfg.eval_share, cfg.seed, leaf.node_id)
        chunks: list[Chunk] = []
        if leaf.kind == "knowledge":
            try:
                chunks = chunks_for(leaf.content.get("document"), Path(taxonomy.root), chunk_words=cfg.chunk_words,
                                    fetch=cfg.fetch_documents, where=leaf.file, allow=tuple(cfg.allow_repos),
                                    pdf_converter=cfg.pdf_converter)
            except DocumentError as exc:
                failed.append((leaf, exc))
                continue
        target = max(cfg.target(leaf.node_id), cfg.per_chunk * len(chunks))  # the quota grows with the documents
        lp = LeafPlan(leaf=leaf, target=target, budget=cfg.attempts_budget(leaf.node_id, target),
                      train_seeds=[seeds[i] for i in train_idx], eval_seeds=[seeds[i] for i in eval_idx],
                      eval_indexes=eval_idx, chunks=chunks, reasoning=reasoning_for(leaf, cfg))
        if leaf.kind == "knowledge" and cfg.augment.active(cfg.teacher):
            lp.questions, lp.question_types = cfg.augment.questions_per_call, tuple(cfg.augment.question_types)
            set_units(lp, [Unit("chunk", c, c.text) for c in chunks], cfg)
            lp.seed_avoid = tuple(dict.fromkeys(sd.question.strip() for sd in lp.train_seeds if sd.question.strip()))
        plans.append(lp)
    if failed and keep_going:
        if broken is not None:
            broken.update({leaf.node_id: {"file": leaf.file, "error": exc.located()} for leaf, exc in failed})
    elif len(failed) == 1:
        raise failed[0][1]
    elif failed:
        lines = "\n".join(f"  {exc.located()}" for _, exc in failed)
        raise DocumentError(f"{len(failed)} knowledge leaves cannot be compiled:\n{lines}",
                            hint="fix their `document:` sections, or pass --keep-going to compile the rest "
                                 "(they are then listed under `broken` in the build manifest)")
    return plans


def set_units(lp: LeafPlan, units: list[Unit], cfg: CompileConfig) -> None:
    """Typed mode: every unit is asked per_chunk times (K questions a call), so the quota is
    per_chunk x K x units, with samples_per_node still the floor."""
    lp.units = units
    lp.target = max(cfg.target(lp.node_id), cfg.per_chunk * lp.questions * len(units))
    lp.budget = cfg.attempts_budget(lp.node_id, lp.target)


REASONING_PATHS = ("reasoning", "math", "arithmetic", "logic", "coding", "programming")


def reasoning_for(leaf: Leaf, cfg: CompileConfig) -> bool:
    """Whether a leaf's samples carry reasoning steps: `nodes: {id: {reasoning: ..}}`, else
    kdc.yaml `reasoning:` (true/false, or per kind), else the default — knowledge and grounded
    skills yes (find the facts, then answer), freeform skills only under a reasoning-like folder
    (word problems yes, a haiku no: steps invented for a poem teach nothing)."""
    over = cfg.nodes.get(leaf.node_id, {}).get("reasoning")
    if isinstance(over, bool):
        return over
    setting = cfg.reasoning
    if isinstance(setting, bool):
        return setting
    if isinstance(setting, dict) and isinstance(setting.get(leaf.kind), bool):
        return setting[leaf.kind]
    if leaf.kind == "freeform_skill":
        return any(part in REASONING_PATHS for part in leaf.ancestors)
    return True


def _example(seed: Seed, kind: str) -> dict[str, str]:
    ex = {"question": seed.question, "answer": seed.answer}
    if kind == "grounded_skill" and seed.context:
        ex = {"context": seed.context, **ex}
    return ex


def chunk_order(lp: LeafPlan, index: int, seed: int, n: int | None = None) -> int:
    """The chunk of sample `index`: pass p = index // n over the n chunks visits every chunk once,
    in a permutation seeded by (seed, node, p) — never file order, so a leaf short of its quota
    is not short on the last pages only, and a retry after rejections lands on other chunks.
    (Typed mode passes n = the number of units: the same walk over chunks and views.)"""
    n = len(lp.chunks) if n is None else n
    p, i = divmod(index, n)
    order = sorted(range(n), key=lambda j: hashlib.sha256(f"{seed}\0{lp.node_id}\0{p}\0{j}".encode()).digest())
    return order[i]


def task_for(lp: LeafPlan, index: int, cfg: CompileConfig) -> Task:
    """The request for sample `index` of a leaf: a few-shot sample of its training seeds, a
    persona/difficulty/style draw, and (knowledge) the chunks in turn."""
    leaf = lp.leaf
    rng = _rng("few-shot", cfg.seed, leaf.node_id, index)
    k = min(cfg.few_shot, len(lp.train_seeds))
    shown = tuple(sorted(rng.sample(range(len(lp.train_seeds)), k))) if k else ()
    chunk = lp.chunks[chunk_order(lp, index, cfg.seed)] if lp.chunks else None
    diversity = draw_diversity(cfg.diversity, cfg.seed, leaf.node_id, index)
    content = leaf.content
    variables: dict[str, Any] = {
        "node_id": leaf.node_id,
        "kind": leaf.kind,
        "leaf_path": list(leaf.ancestors),
        "path_text": " > ".join(p.replace("_", " ") for p in leaf.ancestors),
        "task_description": str(content.get("task_description") or "").strip(),
        "domain": str(content.get("domain") or "").strip(),
        "document_outline": str(content.get("document_outline") or "").strip(),
        "examples": [_example(lp.train_seeds[i], leaf.kind) for i in shown],
        "chunk": chunk.text if chunk else None,
        "diversity": diversity,
        "reasoning": lp.reasoning,
    }
    request_seed = _rng("request", cfg.seed, leaf.node_id, index).randrange(2**31)
    if lp.questions and lp.units:
        return _typed_task(lp, index, cfg, variables, shown, diversity, request_seed)
    return Task(node_id=leaf.node_id, kind=leaf.kind, sample_index=index, template=lp.template,
                variables=variables, seeds_shown=shown, chunk=chunk, diversity=diversity,
                request_seed=request_seed, reasoning=lp.reasoning)


def question_types_for(lp: LeafPlan, index: int, seed: int) -> list[str]:
    """The K types asked in call `index`: distinct when there are enough, seeded per call."""
    types, k = list(lp.question_types), lp.questions
    rng = _rng("question-types", seed, lp.node_id, index)
    if k <= len(types):
        return rng.sample(types, k)
    return [types[(rng.randrange(len(types)) + j) % len(types)] for j in range(k)]


def do_not_repeat(lp: LeafPlan, chunk_sha: str, limit: int) -> list[str]:
    """Up to `limit` questions not to ask again: those accepted in earlier rounds (waves) about
    the same source section (the likeliest repeats), then the leaf's training seed questions
    (known before any call, so round 1 has a list too; a repeat of one is a wasted call), then
    the leaf's most recent other accepted questions."""
    if limit <= 0:
        return []
    same = [q for sha, q in lp.avoid if sha == chunk_sha][-limit:]
    taken = set(same)
    seeds = [q for q in lp.seed_avoid if q not in taken][:limit - len(same)]
    taken.update(seeds)
    rest = limit - len(same) - len(seeds)
    others = [q for sha, q in lp.avoid if sha != chunk_sha and q not in taken][-rest:] if rest else []
    return same + seeds + others


def round_calls(lp: LeafPlan, wanted: int, wave: int) -> int:
    """How many calls a typed leaf launches this round: at most one wave of `wave` calls (0: all
    it wants), so wave w's prompts list the questions accepted in waves < w. The wave size is a
    setting, not the concurrency, so the rounds — and every prompt — are the same at any
    concurrency; all leaves' waves run side by side in a round, which keeps the teacher busy."""
    return min(wanted, wave) if lp.questions and wave > 0 else wanted


def _typed_task(lp: LeafPlan, index: int, cfg: CompileConfig, variables: dict[str, Any], shown: tuple[int, ...],
                diversity: dict[str, str], request_seed: int) -> Task:
    unit = lp.units[chunk_order(lp, index, cfg.seed, len(lp.units))]
    types = question_types_for(lp, index, cfg.seed)
    chunk = unit.chunk
    variables = {**variables, "chunk": unit.text, "unit_kind": unit.kind, "questions": lp.questions,
                 "question_types": types, "section": chunk.heading, "title": chunk.title,
                 "avoid": do_not_repeat(lp, chunk.sha256, cfg.augment.do_not_repeat)}
    view = None if unit.kind == "chunk" else {"kind": unit.kind, "sha256": unit.view_sha256, "part": unit.part}
    return Task(node_id=lp.node_id, kind=lp.kind, sample_index=index, template=TEMPLATES["knowledge_typed"],
                variables=variables, seeds_shown=shown, chunk=chunk, diversity=diversity,
                request_seed=request_seed, reasoning=lp.reasoning, questions=lp.questions, view=view)


def prefix_share(lp: LeafPlan, cfg: CompileConfig, render: Callable[[Task], list[dict[str, str]]],
                 limit: int = 64) -> float:
    """The share of a leaf's prompt characters that is common to all its requests (the first
    `limit` of them, the messages joined in order): the prefix a provider's prompt cache can
    reuse on every request after the first. Characters, not tokens: no tokenizer needed, and the
    ratio is much the same. The templates put the shared part first for this (README)."""
    calls = -(-lp.target // lp.questions) if lp.questions else lp.target
    texts = ["\n".join(m["content"] for m in render(task_for(lp, i, cfg))) for i in range(max(1, min(calls, limit)))]
    prefix = os.path.commonprefix(texts)
    mean = sum(map(len, texts)) / len(texts)
    return round(len(prefix) / mean, 4) if mean else 0.0
