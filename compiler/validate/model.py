"""The records `kdc validate` passes between its modules: options, per-file jobs, results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.records import Problem
from compiler.validate.checks import Limits


@dataclass
class FileResult:
    path: str  # as given / relative to root
    valid: bool  # no error-severity problem
    problems: list[Problem]  # sorted by line, column
    abs_path: Path | None = None
    kind: str | None = None  # records.NodeKind, when the content could be read
    version: int | None = None


@dataclass(frozen=True)
class Options:
    strict: bool = False
    limits: Limits = field(default_factory=Limits)
    fetch: bool = False  # network access for remote knowledge documents
    allow_repos: tuple[str, ...] = ()  # maintainer's --allow-repo prefixes (compiler/io/repopolicy.py)

    @property
    def extra_severity(self) -> str:
        return "error" if self.strict else "warning"

    def token(self) -> str:
        lim = self.limits
        return f"strict={self.strict};ctx={lim.context_words};qa={lim.qa_words};skill={lim.skill_words};near={lim.near_dup}"


@dataclass
class Stats:
    files: int = 0
    cache_hits: int = 0
    documents_checked: int = 0
    documents_unchecked: int = 0


@dataclass
class Target:
    abs_path: Path  # absolute, not resolved (symlinks kept)
    rel: str


@dataclass
class Job:
    target: Target
    real: Path | None = None  # symlinks resolved
    raw: bytes | None = None
    load_issue: Any = None
    key: str | None = None
    outcome: dict | None = None
