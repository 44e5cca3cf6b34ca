"""Can the judge be trusted on this taxonomy? Expert review verdicts set against the judge's
scores on the same samples (issue 12 §6).

Reviewed samples come from train.jsonl, so the judge kept every one of them: each expert reject
is a judge false positive, each accept an agreement. Per rubric, the mean score of the samples the
expert kept and of those the expert rejected shows which rubric fails to separate them. The result
goes into the build manifest (`review_calibration`) and the `kdc review --apply` output.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from compiler.io.buildrecords import Provenance


def judge_scores(samples: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """id -> {node_id, scores} for every sample that carries the judge's rubric scores."""
    out: dict[str, dict[str, Any]] = {}
    for node_id, rows in samples.items():
        for row in rows:
            scores = Provenance.from_json(row.get("metadata")).judge_scores
            if scores:
                out[str(row.get("id"))] = {"node_id": node_id, "scores": scores}
    return out


def calibrate(judged: dict[str, dict[str, Any]], verdicts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Agreement rate, confusion (judge kept x expert verdict), per-rubric means by verdict and
    the disagreeing samples (expert rejected what the judge kept), in id order."""
    confusion: Counter = Counter()
    sums: dict[str, dict[str, list[float]]] = {}
    disagree = []
    for sid in sorted(verdicts):
        entry = judged.get(sid)
        verdict = str(verdicts[sid].get("verdict"))
        if entry is None or verdict not in ("accept", "reject", "edit"):
            continue
        confusion[verdict] += 1
        for rubric, score in entry["scores"].items():
            if isinstance(score, (int, float)):
                sums.setdefault(rubric, {}).setdefault(verdict, []).append(float(score))
        if verdict == "reject":
            disagree.append({"id": sid, "node_id": entry["node_id"], "judge": entry["scores"],
                             "why": verdicts[sid].get("why") or ""})
    compared = sum(confusion.values())
    return {
        "compared": compared,
        "agreement": round((confusion["accept"] + confusion["edit"]) / compared, 3) if compared else None,
        "confusion": {"judge_kept": {k: confusion[k] for k in ("accept", "edit", "reject")}},
        "mean_scores": {r: {v: round(sum(x) / len(x), 2) for v, x in sorted(by.items())}
                        for r, by in sorted(sums.items())},
        "disagreements": disagree,
    }
