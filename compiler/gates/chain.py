"""Quality gates between generation and mixing: every candidate is accepted or rejected with a
reason code (docs/build-layout.md), cheapest gate first.

Order: sanity -> confidence -> PII -> contamination -> seed copy -> exact dup -> near dup (node,
then siblings) -> grounding -> judge. An accepted sample joins the dedup indexes, so later
near-copies are rejected; the compile loop calls `check` one sample at a time in a fixed order,
which makes the decisions reproducible. The gates live in sanity, dedup, grounding, piigate and
judge; this module chains them.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from compiler.gates.config import GROUNDED_KINDS, GateConfig
from compiler.gates.dedup import Dedup, exact_key_ids
from compiler.gates.diversity import Fingerprint, shingles_of_ids, token_ids
from compiler.gates.grounding import support_score
from compiler.gates.piigate import redact_teacher_text, teacher_pii
from compiler.gates.sanity import NodeNorms, check_sanity
from compiler.llm.cache import Cache
from compiler.records import Sample, Seed
from compiler.taxonomy.tree import Taxonomy

__all__ = ["GateConfig", "Gatekeeper", "Screened", "Verdict", "support_score"]

@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str | None  # rejection code, None when accepted
    detail: str
    scores: dict  # -> metadata.gates
    sample: Sample  # possibly PII-redacted
    evidence: dict = field(default_factory=dict)  # what the rejecting gate saw: span, score, threshold


@dataclass(frozen=True)
class Screened:
    """A candidate after the order-independent gates (Gatekeeper.screen), awaiting `decide`."""

    sample: Sample
    scores: dict  # the scores known before the dedup gates
    early: tuple[str, str, dict] | None  # first failure before the dedup against accepted samples
    key: bytes = b""
    sh: Any = None
    late: tuple[str, str, dict] | None = None  # first failure after it (grounding, judge)
    late_scores: dict | None = None
    redacted: bool = False


class Gatekeeper:
    """Stateful gate chain for one build: holds the dedup indexes (gates/dedup.py) and the
    per-node counts."""

    def __init__(self, config: GateConfig, taxonomy: Taxonomy, train_seeds: dict[str, list[Seed]],
                 eval_seeds: dict[str, list[Seed]], judge_cache: Cache | None = None):
        self.config = config
        self.taxonomy = taxonomy
        self._kinds = {leaf.node_id: leaf.kind for leaf in taxonomy.leaves()}
        self._stats: dict[str, Counter] = {}
        self._dedup = Dedup(config, taxonomy, self._kinds, train_seeds, eval_seeds)
        self._norms = {node_id: NodeNorms.of(seeds) for node_id, seeds in train_seeds.items()}
        self._judge = None
        if config.judge:
            from compiler.gates.judge import Judge  # litellm is heavy: only with a judge
            self._judge = Judge(config.judge, api_base=config.judge_api_base,
                                api_key_env=config.judge_api_key_env, timeout=config.judge_timeout,
                                thresholds=config.judge_thresholds, cache=judge_cache,
                                concurrency=config.judge_concurrency or 8, workers=None)

    def judging(self):
        """Context for a build: starts and stops the judge's client (its worker processes)."""
        return self._judge if self._judge is not None else contextlib.nullcontext()

    @property
    def judge_calls(self) -> int:
        """Requests sent to the judge in this build (cached verdicts are not asked again)."""
        return self._judge.calls if self._judge is not None else 0

    # -- helpers -----------------------------------------------------------------------------
    def _kind(self, sample: Sample) -> str:
        return self._kinds.get(sample.node_id) or sample.metadata.get("kind") or "freeform_skill"

    def _count(self, node_id: str, key: str, n: int = 1) -> None:
        self._stats.setdefault(node_id, Counter())[key] += n

    def _reject(self, sample: Sample, reason: str, detail: str, evidence: dict, scores: dict) -> Verdict:
        self._count(sample.node_id, "checked")
        self._count(sample.node_id, "rejected:" + reason)
        return Verdict(False, reason, detail, scores, sample, evidence)

    # -- the chain ---------------------------------------------------------------------------
    async def check(self, sample: Sample, *, context: str | None = None,
                    logprobs: list[float] | None = None) -> Verdict:
        """Run every gate on one candidate. `context` is the text the answer must be grounded in
        (a knowledge chunk, or a grounded skill's context); `logprobs` the teacher's token logprobs."""
        return self.decide(await self.screen(sample, context=context, logprobs=logprobs))

    async def screen(self, sample: Sample, *, context: str | None = None,
                     logprobs: list[float] | None = None) -> Screened:
        """Every gate whose verdict does not depend on which samples were accepted before: safe to
        run for many candidates at once, in any order (the judge included). `decide` then applies
        the dedup against accepted samples in the build's fixed order and picks the first failure
        in gate order, so the reasons are those of a one-at-a-time chain."""
        cfg = self.config
        kind = self._kind(sample)
        node = sample.node_id
        scores: dict[str, Any] = {}

        def early(reason: str, detail: str, evidence: dict | None = None) -> Screened:
            return Screened(sample, dict(scores), (reason, detail, evidence or {}))

        bad = check_sanity(sample.record, cfg, self._norms.get(node, NodeNorms()),
                      reasoning=sample.metadata.get("reasoning") is not False)
        if bad:
            return early(bad[0], bad[1])

        if logprobs:
            mean = sum(logprobs) / len(logprobs)
            if math.isfinite(mean):
                scores["confidence"] = round(mean, 4)
                if cfg.min_mean_logprob is not None and mean < cfg.min_mean_logprob:
                    return early("low-confidence", f"mean token logprob {mean:.3f} < {cfg.min_mean_logprob}",
                                 {"score": round(mean, 4), "threshold": cfg.min_mean_logprob})

        redacted = False
        if cfg.pii != "off":
            found = teacher_pii(sample.record, kind, context, cfg.pii_kinds)
            if found:
                kinds = sorted({f.finding.kind for f in found})
                if cfg.pii == "drop":
                    return early("pii", "personal data: " + ", ".join(kinds),
                                 {"matches": [f.to_json() for f in found[:10]]})
                sample = redact_teacher_text(sample, kind, context, cfg.pii_kinds)
                scores["pii_redacted"] = kinds
                redacted = True

        # one tokenisation serves all: the probe (question [+ grounded context]) is a prefix of the text
        rec = sample.record
        ctx_ids = token_ids(rec.context) if kind == "grounded_skill" and rec.context else []
        probe_ids = token_ids(rec.question) + ctx_ids
        ids = probe_ids + token_ids(rec.answer)
        key, sh = exact_key_ids(ids), shingles_of_ids(ids)
        dup = self._dedup.static(node, key, sh, shingles_of_ids(probe_ids))  # eval and seed copies: static
        if dup:
            return early(dup[0], dup[1], {"match": dup[1]})
        out = Screened(sample, dict(scores), None, key, sh, redacted=redacted)

        late: tuple[str, str, dict] | None = None
        if kind in GROUNDED_KINDS:
            ctx = context if context is not None else sample.record.context
            if not ctx or not ctx.strip():
                late = ("ungrounded", "no context to ground the answer in", {})
            else:
                score = support_score(sample.record.answer, ctx, sample.record.question)
                scores["grounding"] = round(score, 4)
                if score < cfg.grounding_threshold:
                    late = ("ungrounded", f"{score:.0%} of the answer's content words are in the context "
                                          f"(threshold {cfg.grounding_threshold:.0%})",
                            {"score": round(score, 4), "threshold": cfg.grounding_threshold})

        if late is None and self._judge is not None:
            ctx = context if context is not None else sample.record.context
            result = await self._judge.score(sample.record, ctx, kind)
            scores["judge"] = result.scores
            if result.error:
                late = ("judge", result.error, {})
            else:
                low = {r: v for r, v in result.scores.items() if v < cfg.judge_thresholds.get(r, 1)}
                if low:
                    late = ("judge", "judge scores under threshold: " + ", ".join(
                        f"{r} {v} < {cfg.judge_thresholds[r]}" for r, v in sorted(low.items()))
                        + (f" ({result.rationale})" if result.rationale else ""),
                        {"scores": result.scores, "thresholds": dict(cfg.judge_thresholds),
                         "rationale": result.rationale})
        return replace(out, late_scores=scores, late=late)

    def decide(self, s: Screened) -> Verdict:
        """The ordered half of the chain: call in the build's fixed order. An accepted sample
        joins the dedup indexes, so later copies of it are rejected."""
        sample, node = s.sample, s.sample.node_id
        if s.early is not None:
            if s.early[0] == "pii":
                self._count(node, "pii_dropped")
            return self._reject(sample, *s.early, s.scores)
        fp = Fingerprint.of_shingles(s.sh, self.config.num_perm)
        dup = self._dedup.accepted(node, s.key, fp)
        if dup:
            return self._reject(sample, dup[0], dup[1], {"match": dup[1]}, s.scores)
        scores = s.late_scores if s.late_scores is not None else s.scores
        if s.late is not None:
            return self._reject(sample, *s.late, scores)
        self._dedup.add(node, sample.id, s.key, fp)
        self._count(node, "checked")
        self._count(node, "accepted")
        if s.redacted:
            self._count(node, "pii_redacted")
        return Verdict(True, None, "", scores, sample)

    def stats(self, node_id: str) -> dict:
        """Counts for the manifest: checked, accepted, pii_redacted, pii_dropped, rejected by reason."""
        c = self._stats.get(node_id, Counter())
        return {"checked": c["checked"], "accepted": c["accepted"],
                "pii_redacted": c["pii_redacted"], "pii_dropped": c["pii_dropped"],
                "rejected": {k.split(":", 1)[1]: v for k, v in sorted(c.items()) if k.startswith("rejected:")}}
