"""`kdc validate`'s document check: are a knowledge leaf's documents resolvable?

A front end over compiler/io/gitrepo.py (shared with compile) that collects every problem as an
issue instead of stopping at the first. Local repositories are checked in place; remote ones
only where a clone is already cached, or with `fetch=True` (the only network access of
`kdc validate`).

Validate and compile agree on what a usable document is: the same kinds (documents.DOC_KINDS),
and each matched document's bytes go through compile's own checks (documents.check_content:
size, binary, UTF-8, a readable PDF with a text layer). Pages without text are a warning here,
located on `patterns`. pypdf is imported only when a PDF is matched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compiler.errors import DocumentError
from compiler.io import gitrepo
from compiler.io.gitrepo import RefError
from compiler.taxonomy.documents import DOC_KINDS, check_content, read_bytes

DOC_SUFFIXES = tuple(DOC_KINDS)


@dataclass(frozen=True)
class DocIssue:
    field: str  # the key of `document` the issue is about: repo, commit or patterns
    rule: str
    message: str
    hint: str
    severity: str = ""  # "": validate's severity for document checks; "error": compile refuses it too


@dataclass(frozen=True)
class DocCheck:
    checked: bool  # False: remote and not cached (nothing was said about it)
    issues: tuple[DocIssue, ...] = ()
    files: tuple[str, ...] = ()  # matched .md/.pdf documents


def check_document(repo: str, commit: str, patterns: list[str], root: Path, *, fetch_remote: bool = False,
                   allow: tuple[str, ...] = ()) -> DocCheck:
    """Resolve the documents of one knowledge leaf. Never raises for a bad reference: returns issues."""
    issues: list[DocIssue] = []
    bad = [p for p in patterns if gitrepo.unsafe_pattern(p)]
    for p in bad:
        issues.append(DocIssue("patterns", "document-pattern-unsafe",
                               f"pattern {p!r} points outside the repository",
                               "write patterns relative to the repository root: no leading '/', no '..'"))
    patterns = [p for p in patterns if p not in bad]
    try:
        path = gitrepo.open_repo(repo, root, fetch_remote=fetch_remote, allow=allow)
        if path is None:
            return DocCheck(bool(issues), tuple(issues))
        sha = gitrepo.resolve_commit(path, commit)
        names = gitrepo.regular_files(path, sha)
    except RefError as exc:
        return DocCheck(True, (*issues, DocIssue(exc.field, exc.rule, exc.message, exc.hint)))
    matched: list[str] = []
    for pattern in patterns:
        hits = gitrepo.matching(names, pattern)
        if not hits:
            issues.append(DocIssue("patterns", "document-unresolved",
                                   f"pattern {pattern!r} matches no file at commit {sha[:12]}",
                                   "check the pattern against `git ls-tree -r --name-only <commit>`"))
        matched.extend(h for h in hits if h not in matched)
    docs = tuple(m for m in matched if m.lower().endswith(DOC_SUFFIXES))
    if patterns and not docs:
        issues.append(DocIssue("patterns", "document-unresolved",
                               f"the patterns match no .md or .pdf document at commit {sha[:12]}",
                               "knowledge documents must be Markdown (.md) or PDF (.pdf) files"))
    for name in docs:
        issues.extend(_content_issues(path, sha, name))
    return DocCheck(True, tuple(issues), docs)


def _content_issues(path: Path, sha: str, name: str) -> list[DocIssue]:
    """Compile's own verdict on one document's bytes, as issues."""
    try:
        warnings = check_content(name, read_bytes(path, sha, name))
    except DocumentError as exc:
        return [DocIssue("patterns", "document-unusable", exc.message, exc.hint or "", "error")]
    return [DocIssue("patterns", "document-pages-without-text", w,
                     "pages without a text layer give the teacher nothing; run OCR on the PDF (e.g. ocrmypdf)")
            for w in warnings]
