"""`kdc review --apply`, the rows: what a filled sheet's rows say, checked against the build.

Every row is checked (known id, untouched provenance via its sha256, a valid verdict, edits only
with `edit`) before anything is written, and each problem is located. `check_rows` is the one
function from sheet rows to verdicts: the CSV and JSONL readers (compiler/review/sheet.py) and any
other sheet reader feed it the same `SheetRow`s.
"""

from __future__ import annotations

import getpass
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compiler.io.builddir import BuildDir, load_verdicts
from compiler.io.buildrecords import review_entry
from compiler.records import Seed
from compiler.review.sheet import (FROM_BUILD, READ_ONLY, VERDICTS, SheetRow, _Problems, _steps, _text, digest,
                                   sheet_row, training_seeds)

REVIEW_REJECTED = "review-rejected"



@dataclass(frozen=True)
class Verdict:
    """One line of reviews/verdicts.jsonl (docs/build-layout.md)."""

    id: str
    node_id: str
    verdict: str
    by: str
    at: str
    why: str
    edited: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ApplyResult:
    sheet: Path
    accepted: int = 0
    rejected: int = 0
    edited: int = 0
    unreviewed: int = 0
    already: int = 0  # rows whose verdict was applied before (the same sheet again)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> {reviewed, rejected, flagged}
    calibration: dict[str, Any] | None = None  # compiler/review/calibration.py, when the build was judged

    @property
    def flagged(self) -> list[str]:
        return sorted(n for n, r in self.nodes.items() if r.get("flagged"))



def review_stats(verdicts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per node: how many samples were reviewed, how many rejected, and the flag (most rejected)."""
    reviewed, rejected = Counter(), Counter()
    for v in verdicts.values():
        node = str(v.get("node_id"))
        reviewed[node] += 1
        rejected[node] += v.get("verdict") == "reject"
    return {n: review_entry(reviewed[n], rejected[n]) for n in sorted(reviewed)}


def _already_applied(v: dict[str, str], prior: dict[str, Any] | None, reviewer: str) -> bool:
    """This row's verdict is the one the verdict log already holds for the sample."""
    if not prior or v["verdict"].strip().lower() != prior.get("verdict"):
        return False
    if v["why"].strip() != (prior.get("why") or "") or (v["reviewer"].strip() or reviewer) != prior.get("by"):
        return False
    if prior.get("verdict") != "edit":
        return True
    done = prior.get("edited") or {}
    steps = [s.strip() for s in v["edited_reasoning"].split("\n") if s.strip()]
    return ((not v["edited_question"].strip() or v["edited_question"].strip() == done.get("question"))
            and (not v["edited_answer"].strip() or v["edited_answer"].strip() == done.get("answer"))
            and (not steps or steps == done.get("reasoning")))


def check_rows(view: BuildDir, rows: list[SheetRow], problems: _Problems, reviewer: str,
               at: str, already: list[str]) -> list[Verdict]:
    """The verdicts of a sheet's filled rows; each bad row becomes a located problem, a row whose
    verdict is already in the log goes to `already`, a blank verdict is skipped."""
    index = {str(s.get("id")): (node_id, s) for node_id, ss in view.train.items() for s in ss}
    gone = {str(r.get("id")) for rs in view.rejected.values() for r in rs if r.get("reason") == REVIEW_REJECTED}
    seen: dict[str, int] = {}
    seeds_cache: dict[str, list[Seed] | None] = {}
    recorded = load_verdicts(view.root)
    out = []
    for row in rows:
        v = row.values
        sid = v["id"].strip()
        if sid in seen:
            problems.add(row, "id", f"sample {sid} is already on line {seen[sid]}")
            continue
        seen[sid] = row.line
        if _already_applied(v, recorded.get(sid), reviewer):
            already.append(sid)  # the same sheet applied again: nothing to do for this row
            continue
        if sid not in index:
            problems.add(row, "id", f"sample {sid!r} was already rejected by an earlier review" if sid in gone
                         else f"unknown sample id {sid!r}: not in this build's train sets")
            continue
        node_id, sample = index[sid]
        if v["node_id"] != node_id:
            problems.add(row, "node_id", f"node_id {v['node_id']!r} is not the sample's node {node_id!r}")
            continue
        if node_id not in seeds_cache:
            seeds_cache[node_id] = training_seeds(view, node_id)
        expected = sheet_row(sample, seeds_cache[node_id])
        if digest(v) != v["sha256"].strip():
            changed = [c for c in READ_ONLY if v[c] != expected[c] and (c != "seed_examples" or expected[c])]
            if changed:
                problems.add(row, changed[0], "provenance was edited (read-only column); put corrections in "
                             "edited_question / edited_reasoning / edited_answer")
            else:
                problems.add(row, "sha256", "the integrity field (sha256) was altered")
            continue
        if any(v[c] != expected[c] for c in FROM_BUILD):
            problems.add(row, "id", "the sample changed in the build since this sheet was drawn; draw a new sheet")
            continue
        verdict = v["verdict"].strip().lower()
        if verdict not in ("",) + VERDICTS:
            problems.add(row, "verdict",
                         f"verdict {v['verdict']!r} is not accept, reject or edit (blank: not reviewed)")
            continue
        edits = {k: v[f"edited_{k}"].strip() for k in ("question", "reasoning", "answer")}
        if verdict != "edit" and any(edits.values()):
            first = next(k for k, e in edits.items() if e)
            problems.add(row, f"edited_{first}", f"edited_{first} is filled but the verdict is "
                         f"{verdict or 'blank'}; set the verdict to edit or clear it")
            continue
        if verdict == "edit" and not any(edits.values()):
            problems.add(row, "verdict", "verdict edit needs edited_question, edited_reasoning or edited_answer")
            continue
        who = (v["reviewer"].strip() or reviewer).strip()
        if "\n" in who or len(who) > 100:
            problems.add(row, "reviewer", "reviewer must be one short line")
            continue
        if not verdict:
            continue
        edited = None
        if verdict == "edit":
            rec = sample.get("record") or {}
            steps = [s.strip() for s in edits["reasoning"].split("\n") if s.strip()]
            edited = {"question": edits["question"] or _text(rec.get("question")),
                      "reasoning": steps or _steps(rec.get("reasoning")),
                      "answer": edits["answer"] or _text(rec.get("answer"))}
        out.append(Verdict(sid, node_id, verdict, who, at, v["why"].strip(), edited))
    return out


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"
