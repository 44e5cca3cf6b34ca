"""Are a knowledge leaf's documents resolvable? repo + commit + patterns, checked with real git.

Local repositories (a path; relative paths resolve against the taxonomy root) are checked in
place; remote ones only where a clone is already cached, or with `fetch=True` (the only
network access of `kdc validate`). Patterns are matched against `git ls-tree` names, so they
can never reach outside the repository.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DOC_SUFFIXES = (".md", ".pdf")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCP = re.compile(r"^[\w.-]+@[\w.-]+:")
_SAFE_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")
_COMMIT = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._/-]*$")
GIT_TIMEOUT = 30
FETCH_TIMEOUT = 600


@dataclass(frozen=True)
class DocIssue:
    field: str  # the key of `document` the issue is about: repo, commit or patterns
    rule: str
    message: str
    hint: str


@dataclass(frozen=True)
class DocCheck:
    checked: bool  # False: remote and not cached (nothing was said about it)
    issues: tuple[DocIssue, ...] = ()
    files: tuple[str, ...] = ()  # matched .md/.pdf documents


def is_remote(repo: str) -> bool:
    return bool(_URL.match(repo) or _SCP.match(repo))


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kdc" / "repos"


def cached_clone(url: str) -> Path:
    """Where a remote repository's bare clone lives (shared with `kdc compile`)."""
    return cache_root() / (hashlib.sha256(url.encode("utf-8")).hexdigest()[:24] + ".git")


def _git(args: list[str], cwd: Path | None = None, timeout: int = GIT_TIMEOUT) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    base = ["git", "-c", "protocol.ext.allow=never", "-c", "core.fsmonitor=false"]
    if cwd is not None:
        base += ["-C", str(cwd)]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


def fetch(url: str) -> Path:
    """Clone (bare) or update the cached clone of a remote repository; raises OSError on failure."""
    dest = cached_clone(url)
    if not url.startswith(_SAFE_SCHEMES) and not _SCP.match(url):
        raise OSError(f"unsupported repository URL scheme: {url}")
    if dest.exists():
        r = _git(["fetch", "--quiet", "--tags", "origin", "+refs/heads/*:refs/heads/*"], cwd=dest, timeout=FETCH_TIMEOUT)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        r = _git(["clone", "--bare", "--quiet", "--", url, str(tmp)], timeout=FETCH_TIMEOUT)
        if r.returncode == 0:
            try:
                os.replace(tmp, dest)
            except OSError:  # another process won the race: theirs is as good
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if r.returncode != 0:
        raise OSError(_last_line(r.stderr))
    return dest


def resolve_repo(repo: str, root: Path) -> Path | None:
    """The local git directory for `repo`: a path (relative to the taxonomy root) or a cached clone."""
    if is_remote(repo):
        dest = cached_clone(repo)
        return dest if dest.exists() else None
    path = Path(repo).expanduser()
    return path if path.is_absolute() else (root / path)


def unsafe_pattern(pattern: str) -> bool:
    p = PurePosixPath(pattern)
    return p.is_absolute() or ".." in p.parts or pattern.startswith("~")


def check_document(repo: str, commit: str, patterns: list[str], root: Path, *, fetch_remote: bool = False
                   ) -> DocCheck:
    """Resolve the documents of one knowledge leaf. Never raises for a bad repo: returns issues."""
    issues: list[DocIssue] = []
    bad = [p for p in patterns if unsafe_pattern(p)]
    for p in bad:
        issues.append(DocIssue("patterns", "document-pattern-unsafe",
                               f"pattern {p!r} points outside the repository",
                               "write patterns relative to the repository root: no leading '/', no '..'"))
    patterns = [p for p in patterns if p not in bad]
    remote = is_remote(repo)
    path: Path | None
    if remote and fetch_remote:
        try:
            path = fetch(repo)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return DocCheck(True, tuple(issues) + (DocIssue("repo", "document-unresolved",
                                                            f"cannot fetch {repo}: {exc}",
                                                            "check the URL and that the repository is public"),))
    else:
        path = resolve_repo(repo, root)
    if path is None:
        return DocCheck(bool(issues), tuple(issues))
    if not path.exists():
        return DocCheck(True, tuple(issues) + (DocIssue("repo", "document-unresolved",
                                                        f"repository {repo} not found (looked in {path})",
                                                        "check the path; relative paths start at the taxonomy root"),))
    if not _COMMIT.match(commit):
        return DocCheck(True, tuple(issues) + (DocIssue("commit", "document-unresolved",
                                                        f"commit {commit!r} is not a commit id",
                                                        "write the full SHA of the commit (git rev-parse HEAD)"),))
    try:
        r = _git(["rev-parse", "--is-bare-repository", "--show-prefix"], cwd=path)
        if r.returncode != 0 or r.stdout.split()[1:]:  # not a repository, or a folder inside one
            return DocCheck(True, tuple(issues) + (DocIssue("repo", "document-unresolved",
                                                            f"{repo} is not a git repository (looked in {path})",
                                                            "point `repo` at the top folder of a git repository"),))
        r = _git(["cat-file", "-e", f"{commit}^{{commit}}"], cwd=path)
        if r.returncode != 0:
            where = "the cached clone" if remote else repo
            hint = ("run `kdc validate --fetch` to update the clone" if remote else
                    "commit the documents and copy the full SHA from `git rev-parse HEAD`")
            return DocCheck(True, tuple(issues) + (DocIssue("commit", "document-unresolved",
                                                            f"commit {commit} not found in {where}", hint),))
        r = _git(["ls-tree", "-r", "--name-only", "-z", commit], cwd=path)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return DocCheck(True, tuple(issues) + (DocIssue("repo", "document-unresolved", f"git failed: {exc}",
                                                        "check that git is installed"),))
    if r.returncode != 0:
        return DocCheck(True, tuple(issues) + (DocIssue("repo", "document-unresolved",
                                                        f"cannot list files: {_last_line(r.stderr)}", ""),))
    names = [n for n in r.stdout.split("\0") if n]
    matched: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            issues.append(DocIssue("patterns", "document-unresolved",
                                   f"pattern {pattern!r} matches no file at commit {commit[:12]}",
                                   "check the pattern against `git ls-tree -r --name-only <commit>`"))
        matched.extend(h for h in hits if h not in matched)
    docs = tuple(m for m in matched if m.lower().endswith(DOC_SUFFIXES))
    if patterns and not docs:
        issues.append(DocIssue("patterns", "document-unresolved",
                               f"the patterns match no .md or .pdf document at commit {commit[:12]}",
                               "knowledge documents must be Markdown (.md) or PDF (.pdf) files"))
    return DocCheck(True, tuple(issues), docs)
