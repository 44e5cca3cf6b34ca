"""The one git reader behind knowledge documents, for `kdc validate` and `kdc compile` alike.

A leaf's `document: {repo, commit, patterns}` is resolved with real git: `repo` is a path
(relative paths start at the taxonomy root) or a URL whose bare clone lives in a shared cache
(network only when fetching is allowed), confined by compiler/io/repopolicy.py; `commit` must be a
commit sha present in it; files are regular blobs listed with `git ls-tree` at that commit and
read from the object store, so the working tree, symlinks and submodules never leak in and no
pattern can reach outside the repo. A local repository is never opened by git itself: git reads
a private copy of its objects (`private_copy`), so its config, hooks and promisors stay inert.

Failures raise `RefError` naming the `document` key at fault; validate turns them into located
issues (compiler/validate/docrefs.py), compile into located errors (compiler/taxonomy/documents.py).
"""

from __future__ import annotations

import atexit
import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path, PurePosixPath

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCP = re.compile(r"^[\w.-]+@[\w.-]+:")
_SAFE_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")  # file, http, git, ssh: allow-listed only
_SHA = re.compile(r"^[0-9a-f]{7,64}$")
GIT_TIMEOUT = 60
FETCH_TIMEOUT = 600
# `-c` overrides beat every config file, the repository's own included.
_HARDEN = tuple(x for kv in (
    "core.fsmonitor=false", "core.hooksPath=/dev/null", "core.quotepath=off", "core.askPass=",
    "core.sshCommand=ssh", "core.alternateRefsCommand=", "core.alternateRefsPrefixes=", "credential.helper=",
    "safe.bareRepository=explicit", "submodule.recurse=false", "fetch.recurseSubmodules=false",
    "protocol.ext.allow=never", "uploadpack.packObjectsHook=", "core.pager=cat") for x in ("-c", kv))


class RefError(Exception):
    """A document reference that cannot be resolved; `field` is repo, commit or patterns."""

    def __init__(self, field: str, message: str, hint: str = "", rule: str = "document-unresolved"):
        super().__init__(message)
        self.field, self.message, self.hint, self.rule = field, message, hint, rule


def _env(own_config: bool) -> dict[str, str]:
    """The process environment minus every GIT_* variable (GIT_DIR, GIT_CONFIG_PARAMETERS,
    GIT_SSH_COMMAND, ... could each redirect or run something), plus the lock-down ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k != "SSH_ASKPASS"}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0", GIT_CONFIG_NOSYSTEM="1", GIT_NO_LAZY_FETCH="1",
               GIT_NO_REPLACE_OBJECTS="1", GIT_ATTR_NOSYSTEM="1", GIT_ASKPASS="", SSH_ASKPASS="",
               GIT_PROTOCOL_FROM_USER="0", LC_ALL="C")
    if not own_config:
        env["GIT_CONFIG_GLOBAL"] = os.devnull
    return env


def git(args: list[str], git_dir: Path | None = None, *, cwd: Path | None = None, timeout: int = GIT_TIMEOUT,
        protocols: tuple[str, ...] = (), own_config: bool = False) -> subprocess.CompletedProcess:
    """The one way kdc runs git (every call in compiler/ comes here). Hardened for hostile input:
    no system or global config (`own_config`: keep the maintainer's global config, for their own
    checkout), no hooks, fsmonitor, askpass, credential helper or alternate-refs command, no lazy
    fetch, no transport except the `protocols` named, bare repositories only by explicit
    `git_dir`, bytes out. Raises RefError when git is missing or hangs."""
    allow = ["-c", "protocol.allow=never"]
    for proto in protocols:
        allow += ["-c", f"protocol.{proto}.allow=always"]
    base = ["git", *_HARDEN, *allow]
    if git_dir is not None:
        base += [f"--git-dir={git_dir}"]
    elif cwd is not None:
        base += ["-C", str(cwd)]
    try:
        return subprocess.run(base + args, capture_output=True, timeout=timeout, env=_env(own_config),
                              stdin=subprocess.DEVNULL, cwd=cwd or git_dir)
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


def _protocols(url: str) -> tuple[str, ...]:
    """The one transport a URL needs (git may use no other, nor follow to one)."""
    if _SCP.match(url):
        return ("ssh",)
    return (url.split("://", 1)[0].lower(),)


def fetch(url: str) -> Path:
    """Clone (bare) or update the cached clone of a remote repository; raises RefError.
    Which URLs may get here is compiler/io/repopolicy.py's decision."""
    dest = cached_clone(url)
    if not url.startswith(_SAFE_SCHEMES) and not _SCP.match(url):
        raise RefError("repo", f"unsupported repository URL scheme: {redact(url)}", "use an https:// URL")
    protos = _protocols(url)
    if dest.exists():
        r = git(["fetch", "--quiet", "--tags", "origin", "+refs/heads/*:refs/heads/*"], dest, timeout=FETCH_TIMEOUT,
                protocols=protos)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        r = git(["clone", "--bare", "--quiet", "--no-local", "--template=", "--", url, str(tmp)],
                timeout=FETCH_TIMEOUT, protocols=protos)
        if r.returncode == 0:
            try:
                os.replace(tmp, dest)
            except OSError:  # another process won the race: theirs is as good
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if r.returncode != 0:
        raise RefError("repo", f"cannot fetch {redact(url)}: {redact(_last_line(r.stderr))}",
                       "check the URL and that the repository is reachable, or clone it and use a local path")
    return dest


def redact(text: str) -> str:
    """Drop user:password@ from any URL in `text`."""
    return re.sub(r"(?<=://)[^/@\s]+@", "***@", text)


# ------------------------------------------------------------------------------- local repos
_HEX2 = re.compile(r"^[0-9a-f]{2}$")
_LOOSE = re.compile(r"^[0-9a-f]{38,62}$")
_PACK = re.compile(r"^pack-[0-9a-f]{40,64}\.(pack|idx)$")
_COPIES: dict[Path, Path] = {}  # source git dir -> kdc's private copy of its objects
_SOURCES: dict[Path, Path] = {}  # private copy -> the folder the taxonomy named (for messages)
_scratch: list[Path] = []


def _git_dir_of(path: Path, repo: str) -> Path:
    """The git directory of a work tree (`.git/`) or bare repository, found without running git."""
    dot = path / ".git"
    if dot.is_dir() and not dot.is_symlink():
        return dot
    if os.path.lexists(dot):
        raise RefError("repo", f"{repo} is a linked worktree, a submodule or a symlinked .git",
                       "point `repo` at the repository itself (its .git must be a folder)")
    if (path / "HEAD").is_file() and (path / "objects").is_dir() and not (path / "objects").is_symlink():
        return path
    raise RefError("repo", f"{repo} is not the top folder of a git repository",
                   "point `repo` at the top folder of a git repository")


def private_copy(git_dir: Path) -> Path:
    """A fresh repository of kdc's own holding only `git_dir`'s objects (loose objects and packs,
    regular files only). Why: a repository inside a taxonomy checkout is the pull request's, and
    git obeys its config (sshCommand, fsmonitor, uploadpack, promisor remotes with lazy fetch,
    filters, includes), hooks and alternates. The copy has none of them, so a missing object is
    simply missing and no command of the taxonomy's can run, whatever the git version."""
    if git_dir in _COPIES:
        return _COPIES[git_dir]
    if not _scratch:
        _scratch.append(Path(tempfile.mkdtemp(prefix="kdc-repos-")))
        atexit.register(shutil.rmtree, _scratch[0], True)
    dest = Path(tempfile.mkdtemp(dir=_scratch[0])) / "objects.git"
    try:
        head = (git_dir / "config").read_bytes()[:65536] if (git_dir / "config").is_file() else b""
    except OSError:
        head = b""
    fmt = "sha256" if re.search(rb"(?im)^\s*objectformat\s*=\s*sha256\s*$", head) else "sha1"
    r = git(["init", "--bare", "--quiet", "--template=", f"--object-format={fmt}", str(dest)])
    if r.returncode != 0:
        raise RefError("repo", f"cannot prepare a private copy: {_last_line(r.stderr)}")
    src = git_dir / "objects"
    try:
        for sub in os.scandir(src):
            if not (sub.is_dir(follow_symlinks=False) and (sub.name == "pack" or _HEX2.match(sub.name))):
                continue
            wanted = _PACK if sub.name == "pack" else _LOOSE
            (dest / "objects" / sub.name).mkdir(exist_ok=True)
            for f in os.scandir(sub.path):
                if wanted.match(f.name) and f.is_file(follow_symlinks=False):
                    shutil.copyfile(f.path, dest / "objects" / sub.name / f.name, follow_symlinks=False)
    except OSError as exc:
        raise RefError("repo", f"cannot read the repository's objects: {exc.strerror or exc}") from None
    _COPIES[git_dir] = dest
    _SOURCES[dest] = git_dir.parent if git_dir.name == ".git" else git_dir
    return dest


# ------------------------------------------------------------------------------- resolution
def open_repo(repo: str, root: Path, *, fetch_remote: bool = False, allow: tuple[str, ...] = ()) -> Path | None:
    """The git directory to read `repo` from: kdc's cached clone of a URL (None: not fetched here
    and not in the cache), or a private copy of a local repository's objects. `repo` must pass
    compiler/io/repopolicy.py's confinement (inside the taxonomy checkout, or under `allow`)."""
    from compiler.io.repopolicy import confine

    if not isinstance(repo, str) or not repo.strip():
        raise RefError("repo", "document.repo is empty", "name a git repository (a path or a URL)")
    repo = repo.strip()
    where = confine(repo, root, allow, fetching=fetch_remote)
    if where is None:  # a URL kdc would refuse to fetch, and nothing is fetched: left unread
        return None
    if isinstance(where, str):  # a URL
        if fetch_remote:
            return fetch(where)
        dest = cached_clone(where)
        return dest if dest.exists() else None
    if not where.is_dir():
        raise RefError("repo", f"repository {repo} not found (looked in {where})",
                       "check the path; relative paths start at the taxonomy root")
    return private_copy(_git_dir_of(where, repo))


def resolve_commit(path: Path, commit: str, *, fetch_missing: bool = False) -> str:
    """The full sha of `commit`, which must be a sha of a commit present in the repository.
    `fetch_missing`: a cached clone that lacks it asks its origin for that commit."""
    if not isinstance(commit, str) or not _SHA.match(commit.strip().lower()):
        raise RefError("commit", f"commit {commit!r} is not a commit sha",
                       "pin the document to a full commit sha (git rev-parse HEAD)")
    commit = commit.strip().lower()
    remote = path.is_relative_to(cache_root())  # a cached clone of a remote repository
    r = git(["rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"], path)
    if r.returncode != 0 and fetch_missing and remote:  # a commit on no branch (e.g. a pull request's)
        url = git(["config", "--get", "remote.origin.url"], path).stdout.decode("utf-8", "replace").strip()
        git(["fetch", "--quiet", "origin", commit], path, timeout=FETCH_TIMEOUT, protocols=_protocols(url))
        r = git(["rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"], path)
    if r.returncode != 0:
        where = "the cached clone" if remote else str(_SOURCES.get(path, path))
        hint = ("fetch again (`kdc validate --fetch` or `kdc compile --fetch`)" if remote else
                "commit the documents and copy the full sha from `git rev-parse HEAD`")
        raise RefError("commit", f"commit {commit} not found in {where}", hint)
    return r.stdout.decode().strip()


def unsafe_pattern(pattern: str) -> bool:
    """A pattern that names something outside the repository (absolute, `..`, `~`)."""
    p = PurePosixPath(pattern.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or pattern.startswith("~")


def regular_files(path: Path, commit: str) -> list[str]:
    """Every regular file at `commit` (symlinks and submodules left out: they could point outside)."""
    r = git(["ls-tree", "-r", "-z", "--full-tree", commit], path)
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
    r = git(["cat-file", "blob", f"{commit}:{name}"], path)
    if r.returncode != 0:
        raise RefError("patterns", f"cannot read {name} at {commit[:12]}: {_last_line(r.stderr)}")
    return r.stdout


def blob_size(path: Path, commit: str, name: str) -> int:
    """Bytes of a file at `commit`, asked before reading it (a huge file is refused unread)."""
    r = git(["cat-file", "-s", f"{commit}:{name}"], path)
    if r.returncode != 0:
        raise RefError("patterns", f"cannot read {name} at {commit[:12]}: {_last_line(r.stderr)}")
    return int(r.stdout.decode().strip())
