"""`kdc validate`'s checks across files, never cached: attribution.txt beside each leaf, the
knowledge documents (one git look-up per distinct reference), and seeds repeated in sibling leaves."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from compiler.records import Problem
from compiler.validate.checks import SeedRef
from compiler.validate.model import Job, Options, Stats


def cross_file_checks(jobs: list[Job], root: Path, opts: Options, stats: Stats) -> dict[str, list[Problem]]:
    out: dict[str, list[Problem]] = {}
    sev = opts.extra_severity

    def add(rel: str, line: int, col: int, rule: str, message: str, hint: str, severity: str = "") -> None:
        severity = severity or ("error" if rule == "document-repo-outside" else sev)  # a refusal, not a style issue
        out.setdefault(rel, []).append(Problem(rel, line, col, severity, rule, message, hint))

    for j in jobs:
        o = j.outcome or {}
        if o.get("attribution"):
            att = (j.real or j.target.abs_path).parent / "attribution.txt"
            try:
                ok = att.is_file() and att.read_text(encoding="utf-8", errors="replace").strip() != ""
            except OSError:
                ok = False
            if not ok:
                add(j.target.rel, 1, 1, "attribution-missing",
                    "no attribution.txt (or an empty one) next to this qna.yaml",
                    "add attribution.txt: title of work, link to work, license of the work, creator names")
    _document_checks(jobs, root, opts, stats, add)
    _sibling_duplicates(jobs, opts, add)
    return out


def _document_checks(jobs: list[Job], root: Path, opts: Options, stats: Stats, add) -> None:
    memo: dict[tuple, Any] = {}
    for j in jobs:
        doc = (j.outcome or {}).get("document")
        if not doc:
            continue
        from compiler.validate.docrefs import check_document  # git and its runner: only for documents

        key = (doc["repo"], doc["commit"], tuple(doc["patterns"]))
        if key not in memo:
            memo[key] = check_document(doc["repo"], doc["commit"], doc["patterns"], root, fetch_remote=opts.fetch,
                                       allow=opts.allow_repos)
        result = memo[key]
        if not result.checked:
            stats.documents_unchecked += 1
            continue
        stats.documents_checked += 1
        for issue in result.issues:
            line, col = doc["marks"].get(issue.field, [1, 1])
            add(j.target.rel, line, col, issue.rule, issue.message, issue.hint, issue.severity)


def _sibling_duplicates(jobs: list[Job], opts: Options, add) -> None:
    """Seeds repeated in leaves that share a parent folder: reported on the later leaf."""
    from compiler.validate.checks import similar_pairs

    groups: dict[str, list[tuple[str, list]]] = {}
    for j in sorted(jobs, key=lambda j: j.target.rel):
        seeds = (j.outcome or {}).get("seeds")
        if not seeds:
            continue
        leaf_dir = j.target.rel.rsplit("/", 1)[0] if "/" in j.target.rel else ""
        parent = leaf_dir.rsplit("/", 1)[0] if "/" in leaf_dir else ("" if leaf_dir else None)
        if parent is not None:
            groups.setdefault(parent, []).append((j.target.rel, seeds))
    for family in groups.values():
        if len(family) < 2:
            continue
        members = [(rel, [SeedRef(s[0], s[1], s[2], s[3], s[4], base64.b64decode(s[5])) for s in seeds])
                   for rel, seeds in family]
        refs = [r for _, rs in members for r in rs]
        owner = [k for k, (_, rs) in enumerate(members) for _ in rs]
        reported: set[int] = set()
        for i, j, s in similar_pairs(refs, None, opts.limits.near_dup):  # one pass over the whole family
            if owner[i] == owner[j] or j in reported:
                continue  # duplicates inside one leaf are that leaf's own check
            reported.add(j)
            mine, theirs = refs[j], refs[i]
            how = "repeats" if mine.norm == theirs.norm else f"is nearly the same as (similarity {s:.2f})"
            add(members[owner[j]][0], mine.line, mine.column, "dup/sibling-seed",
                f"{mine.label} {how} {theirs.label} of the sibling leaf {members[owner[i]][0]} (line {theirs.line})",
                "sibling leaves should teach different things: change or remove one of them")
