"""Per-node figures of a build for the report and the card, read off its typed manifest.

The manifest is the compiler's own summary, checked when the build is read
(compiler/io/builddir.py), so nothing here re-derives or second-guesses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compiler.io.builddir import BuildDir

REASON_HELP = {
    "invalid-json": "the teacher's answer was not JSON", "schema": "JSON that broke the record schema",
    "empty": "an empty field", "refusal": "the teacher refused", "http-error": "the teacher call failed",
    "timeout": "the teacher call timed out", "sanity-length": "too short or too long",
    "sanity-markup": "template or markup debris", "dup-exact": "an exact duplicate",
    "dup-near": "a near duplicate (MinHash)", "dup-seed": "a copy of a seed example",
    "dup-sibling": "a duplicate of a sibling node's sample", "contaminated": "overlaps held-out eval seeds",
    "ungrounded": "not supported by its source chunk", "judge": "scored low by the judge",
    "pii": "personal data found", "low-confidence": "low teacher confidence",
    "review-rejected": "rejected by a human reviewer (kdc review)",
}


@dataclass
class NodeStat:
    node_id: str
    kind: str
    target: int
    accepted: int
    shortfall: int
    rejected: dict[str, int]
    eval_seeds: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None: the teacher's price is unknown
    diversity: dict[str, float]
    grounding: list[float]
    judge: list[float]
    question_words: list[int]
    answer_words: list[int]
    review: dict[str, Any] = field(default_factory=dict)
    coverage: dict[str, Any] = field(default_factory=dict)  # knowledge: chunks, covered, share

    @property
    def flagged(self) -> bool:
        return bool(self.review.get("flagged"))


def node_stats(view: BuildDir) -> list[NodeStat]:
    """One NodeStat per manifest node, in node order; reasons with a zero count left out."""
    return [NodeStat(
        node_id=node_id, kind=m.kind, target=m.target, accepted=m.accepted, shortfall=m.shortfall,
        rejected={k: v for k, v in sorted(m.rejected.items()) if v > 0}, eval_seeds=m.eval_seeds,
        prompt_tokens=m.tokens["prompt"], completion_tokens=m.tokens["completion"], cost_usd=m.cost_usd,
        diversity=dict(m.diversity), grounding=list(m.scores.get("grounding", [])),
        judge=list(m.scores.get("judge", [])), question_words=list(m.lengths["question_words"]),
        answer_words=list(m.lengths["answer_words"]), review=dict(m.review), coverage=dict(m.coverage or {}))
        for node_id, m in sorted(view.nodes.items())]


def total_usd(stats: list[NodeStat]) -> str:
    costs = [s.cost_usd for s in stats]
    return "unknown" if any(c is None for c in costs) else f"{sum(costs):.4f}"
