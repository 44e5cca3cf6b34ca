"""`kdc review --apply`: the verdicts of a filled sheet applied to the build, all or nothing.

Review records the verdicts (reviews/verdicts.jsonl) and asks the build-dir module
(compiler/io/builddir.py) to rewrite what they change: rejected samples move to rejected.jsonl,
edits go into the sample and every mix row made from it, the manifest's counts follow, the card
and the report are redrawn. Each file is first saved in the apply journal (compiler/io/journal.py)
so a crash at any point is undone by the next apply or compile. The next compile reads the
verdicts and tops the quota up.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from compiler.chat import assistant_turn, user_turn
from compiler.io import builddir, journal
from compiler.io.builddir import BuildDir, load_build, load_verdicts
from compiler.io.buildrecords import review_entry
from compiler.io.fsutil import read_jsonl
from compiler.review.calibration import calibrate, judge_scores
from compiler.review.sheet import _Problems, _steps, read_sheet
from compiler.review.verdicts import REVIEW_REJECTED, ApplyResult, Verdict, _user, check_rows, review_stats

def _user_turn(rec: dict[str, Any]) -> str:
    return user_turn(rec["question"], rec.get("context"))


def _assistant_turn(rec: dict[str, Any]) -> str:
    return assistant_turn(_steps(rec["reasoning"]), rec["answer"])


def _replace(text: str, old: str, new: str) -> tuple[str, bool]:
    if not old or old not in text:
        return text, False
    k = text.rindex(old)
    return text[:k] + new + text[k + len(old):], True


def edit_messages(messages: list[dict[str, Any]], old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat messages after an edit of the record. A turn in compile's layout is rewritten in
    that layout; any other turn has the edited texts replaced where they stand."""
    old = {"question": "", "reasoning": [], "answer": "", "context": None, **old}
    new = {**old, **new}
    msgs = copy.deepcopy(messages)
    for m in msgs:
        content = str(m.get("content", ""))
        if m.get("role") == "user":
            if content == _user_turn(old):
                content = _user_turn(new)
            elif new["question"] != old["question"]:
                content, ok = _replace(content, str(old["question"]), str(new["question"]))
                content = content if ok else _user_turn(new)
        elif m.get("role") == "assistant":
            olds, news = _steps(old["reasoning"]), _steps(new["reasoning"])
            ok = content != _assistant_turn(old) and len(olds) == len(news)
            for a, b in zip(olds, news):
                if ok and a != b:
                    content, ok = _replace(content, a, b)
            if ok and new["answer"] != old["answer"]:
                content, ok = _replace(content, str(old["answer"]), str(new["answer"]))
            content = content if ok else _assistant_turn(new)  # compile's layout, or a piece not found
        m["content"] = content
    return msgs


def apply_sheet(build_dir: str | Path, sheet_path: str | Path, reviewer: str | None = None,
                now: datetime | None = None) -> ApplyResult:
    """Apply a filled review sheet to the build: all of it, or (on any problem) nothing."""
    from compiler.io.outlock import hold

    if not Path(build_dir).is_dir():
        return _apply_sheet(build_dir, sheet_path, reviewer, now)  # load_build says what is wrong
    with hold(Path(build_dir), "review --apply"):
        journal.recover(Path(build_dir))  # an apply that crashed is undone first
        return _apply_sheet(build_dir, sheet_path, reviewer, now)


def _apply_sheet(build_dir: str | Path, sheet_path: str | Path, reviewer: str | None,
                 now: datetime | None) -> ApplyResult:
    view = load_build(build_dir)
    path = Path(sheet_path)
    rows = read_sheet(path)
    problems = _Problems(path)
    at = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    already: list[str] = []
    verdicts = check_rows(view, rows, problems, (reviewer or "").strip() or _user(), at, already)
    problems.raise_if_any()
    result = ApplyResult(path, unreviewed=len(rows) - len(verdicts) - len(already), already=len(already))
    if not verdicts:
        return result
    judged = judge_scores({**view.rejected, **view.train}) if view.manifest.judge.get("model") else {}
    logged = {**load_verdicts(view.root), **{v.id: v.to_json() for v in verdicts}}
    mixes = view.mix_files()
    applied = f"{at.replace(':', '')}-{path.name}"
    journal.begin(view.root, builddir.apply_paths(view.root, sorted({v.node_id for v in verdicts}), mixes, applied))
    try:
        _write_apply(view, path, verdicts, logged, mixes, applied, result, judged)
    except Exception:
        journal.recover(view.root)  # all or nothing; a kill -9 is undone by the next apply
        raise
    journal.commit(view.root)
    result.nodes = review_stats(logged)
    return result


def _write_apply(view: BuildDir, path: Path, verdicts: list[Verdict], logged: dict[str, dict[str, Any]],
                 mixes: list[str], applied: str, result: ApplyResult, judged: dict) -> None:
    """Every write of an apply (inside the journal), each through the build-dir writer."""
    builddir.append_verdicts(view.root, [v.to_json() for v in verdicts])
    by_id = {v.id: v for v in verdicts}
    edited: dict[str, tuple[dict, dict]] = {}
    for node_id in sorted({v.node_id for v in verdicts}):
        keep, moved = _apply_node(view.train[node_id], by_id, edited, result)
        builddir.rewrite_node(view, node_id, keep, view.rejected.get(node_id, []) + moved)
    dropped = {v.id for v in verdicts if v.verdict == "reject"}
    for rel in mixes:
        rows = _edit_mix(read_jsonl(view.root / rel), dropped, edited)
        if rows is not None:
            builddir.rewrite_mix(view, rel, rows)
    stats = review_stats(logged)
    for node_id, entry in view.nodes.items():
        entry.review = stats.get(node_id, review_entry(0, 0))
    if judged:  # the judge set against the experts, on every sample both have seen
        result.calibration = view.manifest.review_calibration = calibrate(judged, logged)
    builddir.write_manifest(view.root, view.manifest)

    # keep a copy of the applied sheet, then refresh the card and the report
    builddir.write_applied_sheet(view.root, applied, path.read_bytes())
    from compiler.report.card import render_card
    from compiler.report.html import render_report
    builddir.write_card_file(view.root, render_card(view))
    builddir.write_report_file(view.root, render_report(view))


def _apply_node(samples: list[dict[str, Any]], by_id: dict[str, Verdict], edited: dict[str, tuple[dict, dict]],
                result: ApplyResult) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(samples kept, rejection lines): rejected move out whole, edits applied, verdicts recorded."""
    keep, moved = [], []
    for s in samples:
        v = by_id.get(str(s.get("id")))
        if v is None:
            keep.append(s)
            continue
        s = copy.deepcopy(s)
        meta = s.setdefault("metadata", {})
        meta["review"] = {"verdict": v.verdict, "by": v.by, "at": v.at, "why": v.why}
        if v.verdict == "reject":
            # the same line compile writes for a review-rejected id (compiler/compile/scheduler.py)
            moved.append({"id": s.get("id"), "node_id": v.node_id, "reason": REVIEW_REJECTED,
                          "detail": f"rejected in review by {v.by}: {v.why}".strip(),
                          "raw": json.dumps(s.get("record"), ensure_ascii=False), "metadata": meta})
            result.rejected += 1
            continue
        if v.verdict == "edit":
            old = dict(s.get("record") or {})
            s["record"] = {**old, **(v.edited or {})}
            s["messages"] = edit_messages(s.get("messages") or [], old, s["record"])
            edited[str(s.get("id"))] = (old, s["record"])
            result.edited += 1
        else:
            result.accepted += 1
        keep.append(s)
    return keep, moved


def _edit_mix(rows_in: list[dict[str, Any]], dropped: set[str],
              edited: dict[str, tuple[dict, dict]]) -> list[dict[str, Any]] | None:
    """A mix file's rows without the rejected samples (synthetic rows and their replays) and with
    the edits carried in, until the next compile rebuilds the mixes; None when nothing changes."""
    rows_out = []
    for r in rows_in:
        md = r.get("metadata") if isinstance(r.get("metadata"), dict) else {}
        rid, ours = str(md.get("id")), md.get("source") != "seed"
        if ours and rid in dropped:
            continue
        if ours and rid in edited:
            r = {**r, "messages": edit_messages(r.get("messages") or [], *edited[rid])}
        rows_out.append(r)
    return rows_out if rows_out != rows_in else None
