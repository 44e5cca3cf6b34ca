"""The three faces of `kdc validate`'s results: for people, for GitHub Actions, for programs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from compiler.validate.api import FileResult


def human(results: list[FileResult], display: Callable[[FileResult], str],
          style: Callable[[str, str], str] = lambda text, severity: text) -> Iterator[str]:
    """`path:line:col: error [rule] message (hint)`, one line per problem."""
    for r in results:
        where = display(r)
        for p in r.problems:
            hint = f" ({p.hint})" if p.hint else ""
            yield f"{where}:{p.line}:{p.column}: {style(p.severity, p.severity)} [{p.rule}] {p.message}{hint}"


def summary_line(summary: dict[str, Any]) -> str:
    files = summary["files"]
    text = (f"{files} file{'s' if files != 1 else ''} checked: {summary['valid']} valid, "
            f"{summary['invalid']} invalid ({summary['errors']} error{'s' if summary['errors'] != 1 else ''}, "
            f"{summary['warnings']} warning{'s' if summary['warnings'] != 1 else ''})")
    if summary.get("documents_unchecked"):
        text += (f"; {summary['documents_unchecked']} knowledge document reference(s) not checked "
                 "(remote and not cached: use --fetch)")
    return text


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github(results: list[FileResult], display: Callable[[FileResult], str]) -> Iterator[str]:
    """GitHub Actions workflow commands: each problem becomes an annotation on the pull request."""
    for r in results:
        path = _escape_property(display(r))
        for p in r.problems:
            level = "error" if p.severity == "error" else "warning"
            msg = p.message + (f" ({p.hint})" if p.hint else "")
            yield (f"::{level} file={path},line={p.line},col={p.column},"
                   f"title={_escape_property(p.rule)}::{_escape_data(msg)}")


def as_json(results: list[FileResult], summary: dict[str, Any], display: Callable[[FileResult], str]) -> str:
    files = [{"path": display(r), "valid": r.valid, "kind": r.kind, "version": r.version,
              "problems": [{"line": p.line, "column": p.column, "severity": p.severity, "rule": p.rule,
                            "message": p.message, "hint": p.hint} for p in r.problems]}
             for r in results]
    return json.dumps({"files": files, "summary": summary}, indent=2, ensure_ascii=False)
