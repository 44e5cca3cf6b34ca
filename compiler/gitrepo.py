"""The one git reader behind knowledge documents, for `kdc validate` and `kdc compile` alike.

A leaf's `document: {repo, commit, patterns}` is resolved with real git: `repo` is a path
(relative paths start at the taxonomy root) or a URL whose bare clone lives in a shared cache
(network only when fetching is allowed); `commit` must be a commit sha present in it; files are
regular blobs listed with `git ls-tree` at that commit and read from the object store, so the
working tree, symlinks and submodules never leak in and no pattern can reach outside the repo.

Failures raise `RefError` naming the `document` key at fault; validate turns them into located
issues (compiler/docrefs.py), compile into located errors (compiler/documents.py).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCP = re.compile(r"^[\w.-]+@[\w.-]+:")
_SAFE_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")
_SHA = re.compile(r"^[0-9a-f]{7,64}$")
GIT_TIMEOUT = 60
FETCH_TIMEOUT = 600


class RefError(Exception):
    """A document reference that cannot be resolved; `field` is repo, commit or patterns."""

    def __init__(self, field: str, message: str, hint: str = ""):
        super().__init__(message)
        self.field, self.message, self.hint = field, message, hint


def git(args: list[str], cwd: Path | None = None, *, timeout: int = GIT_TIMEOUT) -> subprocess.CompletedProcess:
    """git with a hardened environment: no prompts, no system config, no ext:: transport, no
    fsmonitor hooks, bytes out. Raises RefError when git is missing or hangs."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "GIT_CONFIG_NOSYSTEM": "1",
           "LC_ALL": "C"}
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    base = ["git", "-c", "protocol.ext.allow=never", "-c", "core.fsmonitor=false", "-c", "core.quotepath=off"]
    if cwd is not None:
        base += ["-C", str(cwd)]
    try:
        return subprocess.run(base + args, capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise RefError("repo", "git is not installed", "install git: knowledge documents are read with git") from None
    except subprocess.TimeoutExpired:
        raise RefError("repo", f"git {args[0]} timed out after {timeout}s") from None


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


# ------------------------------------------------------------------------------- remote repos
def is_remote(repo: str) -> bool:
    return bool(_URL.match(repo) or _SCP.match(repo))


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kdc" / "repos"


def cached_clone(url: str) -> Path:
    """Where a remote repository's bare clone lives (shared by validate and compile)."""
    return cache_root() / (hashlib.sha256(url.encode("utf-8")).hexdigest()[:24] + ".git")


def fetch(url: str) -> Path:
    """Clone (bare) or update the cached clone of a remote repository; raises RefError."""
    dest = cached_clone(url)
    if not url.startswith(_SAFE_SCHEMES) and not _SCP.match(url):
        raise RefError("repo", f"unsupported repository URL scheme: {url}", "use https://, ssh:// or git@host:path")
    if dest.exists():
        r = git(["fetch", "--quiet", "--tags", "origin", "+refs/heads/*:refs/heads/*"], cwd=dest, timeout=FETCH_TIMEOUT)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        r = git(["clone", "--bare", "--quiet", "--", url, str(tmp)], timeout=FETCH_TIMEOUT)
        if r.returncode == 0:
            try:
                os.replace(tmp, dest)
            except OSError:  # another process won the race: theirs is as good
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if r.returncode != 0:
        raise RefError("repo", f"cannot fetch {url}: {_last_line(r.stderr)}",
                       "check the URL and that the repository is reachable, or clone it and use a local path")
    return dest


# ------------------------------------------------------------------------------- resolution
def open_repo(repo: str, root: Path, *, fetch_remote: bool = False) -> Path | None:
    """The git directory for `repo`. None: remote, not fetched here and not in the cache."""
    if not isinstance(repo, str) or not repo.strip():
        raise RefError("repo", "document.repo is empty", "name a git repository (a path or a URL)")
    repo = repo.strip()
    if is_remote(repo):
        if fetch_remote:
            return fetch(repo)
        dest = cached_clone(repo)
        return dest if dest.exists() else None
    path = Path(repo).expanduser()
    path = (path if path.is_absolute() else root / path).resolve()
    if not path.is_dir():
        raise RefError("repo", f"repository {repo} not found (looked in {path})",
                       "check the path; relative paths start at the taxonomy root")
    r = git(["rev-parse", "--is-bare-repository", "--show-prefix"], cwd=path)
    if r.returncode != 0 or r.stdout.split()[1:]:  # not a repository, or a folder inside one
        raise RefError("repo", f"{repo} is not the top folder of a git repository (looked in {path})",
                       "point `repo` at the top folder of a git repository")
    return path


def resolve_commit(path: Path, commit: str, *, fetch_missing: bool = False) -> str:
    """The full sha of `commit`, which must be a sha of a commit present in the repository.
    `fetch_missing`: a cached clone that lacks it asks its origin for that commit."""
    if not isinstance(commit, str) or not _SHA.match(commit.strip().lower()):
        raise RefError("commit", f"commit {commit!r} is not a commit sha",
                       "pin the document to a full commit sha (git rev-parse HEAD)")
    commit = commit.strip().lower()
    remote = path.is_relative_to(cache_root())  # a cached clone of a remote repository
    r = git(["rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"], cwd=path)
    if r.returncode != 0 and fetch_missing and remote:  # a commit on no branch (e.g. a pull request's)
        git(["fetch", "--quiet", "origin", commit], cwd=path, timeout=FETCH_TIMEOUT)
        r = git(["rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"], cwd=path)
    if r.returncode != 0:
        where = "the cached clone" if remote else str(path)
        hint = ("fetch again (`kdc validate --fetch`, or `fetch_documents: true` for compile)" if remote else
                "commit the documents and copy the full sha from `git rev-parse HEAD`")
        raise RefError("commit", f"commit {commit} not found in {where}", hint)
    return r.stdout.decode().strip()


def unsafe_pattern(pattern: str) -> bool:
    """A pattern that names something outside the repository (absolute, `..`, `~`)."""
    p = PurePosixPath(pattern.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or pattern.startswith("~")


def regular_files(path: Path, commit: str) -> list[str]:
    """Every regular file at `commit` (symlinks and submodules left out: they could point outside)."""
    r = git(["ls-tree", "-r", "-z", "--full-tree", commit], cwd=path)
    if r.returncode != 0:
        raise RefError("repo", f"cannot list files: {_last_line(r.stderr)}")
    out = []
    for entry in r.stdout.split(b"\0"):
        meta, _, name = entry.partition(b"\t")
        if not name:
            continue
        mode, typ, _ = meta.decode().split(" ", 2)
        if typ == "blob" and mode in ("100644", "100755"):
            out.append(name.decode("utf-8", "replace"))
    return sorted(out)


def matching(names: list[str], pattern: str) -> list[str]:
    """fnmatch on the full path, so `*.md` matches at any depth."""
    return [n for n in names if fnmatch.fnmatchcase(n, pattern.strip())]


def read_blob(path: Path, commit: str, name: str) -> bytes:
    r = git(["show", f"{commit}:{name}"], cwd=path)
    if r.returncode != 0:
        raise RefError("patterns", f"cannot read {name} at {commit[:12]}: {_last_line(r.stderr)}")
    return r.stdout


def blob_size(path: Path, commit: str, name: str) -> int:
    """Bytes of a file at `commit`, asked before reading it (a huge file is refused unread)."""
    r = git(["cat-file", "-s", f"{commit}:{name}"], cwd=path)
    if r.returncode != 0:
        raise RefError("patterns", f"cannot read {name} at {commit[:12]}: {_last_line(r.stderr)}")
    return int(r.stdout.decode().strip())
