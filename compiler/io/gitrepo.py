"""The one git reader behind knowledge documents, for `kdc validate` and `kdc compile` alike.

A leaf's `document: {repo, commit, patterns}` is resolved with real git: `repo` is a path
(relative paths start at the taxonomy root) or a URL whose bare clone lives in a shared cache
(network only when fetching is allowed), confined by compiler/io/repopolicy.py; `commit` must be a
commit sha present in it; files are regular blobs of that commit's tree, read from the object
store, so the working tree, symlinks and submodules never leak in and no pattern can reach outside
the repo. A local repository is never opened by git itself: git reads a private copy of its
objects (`private_copy`), so its config, hooks and promisors stay inert.

Reading is one `git cat-file --batch` process per repository (compiler/io/gitbatch.py): commit,
trees and blobs all come through it, since a process start is most of a one-file validate's git
time. tempfile and shutil are not imported on that path for the same reason (start-up time).

Failures raise `RefError` naming the `document` key at fault; validate turns them into located
issues (compiler/validate/docrefs.py), compile into located errors (compiler/taxonomy/documents.py).
"""

from __future__ import annotations

import atexit
import fnmatch
import hashlib
import os
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from compiler.io.gitbatch import BatchError, BatchReader, Reply, regular_blobs

if TYPE_CHECKING:
    from subprocess import CompletedProcess

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


def env(own_config: bool = False) -> dict[str, str]:
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
        protocols: tuple[str, ...] = (), own_config: bool = False) -> CompletedProcess:
    """The one way kdc runs git (every call in compiler/ comes here). Hardened for hostile input:
    no system or global config (`own_config`: keep the maintainer's global config, for their own
    checkout), no hooks, fsmonitor, askpass, credential helper or alternate-refs command, no lazy
    fetch, no transport except the `protocols` named, bare repositories only by explicit
    `git_dir`, bytes out. Raises RefError when git is missing or hangs."""
    import subprocess  # not at the top: a one-file validate reads through gitbatch only

    try:
        return subprocess.run(command(args, git_dir, cwd=cwd, protocols=protocols), capture_output=True,
                              timeout=timeout, env=env(own_config), stdin=subprocess.DEVNULL, cwd=cwd or git_dir)
    except FileNotFoundError:
        raise RefError("repo", "git is not installed", "install git: knowledge documents are read with git") from None
    except subprocess.TimeoutExpired:
        raise RefError("repo", f"git {args[0]} timed out after {timeout}s") from None


def command(args: list[str], git_dir: Path | None = None, *, cwd: Path | None = None,
            protocols: tuple[str, ...] = ()) -> list[str]:
    """git's argument list with every hardening override (run it with `env(...)`)."""
    allow = ["-c", "protocol.allow=never"]
    for proto in protocols:
        allow += ["-c", f"protocol.{proto}.allow=always"]
    base = ["git", *_HARDEN, *allow]
    if git_dir is not None:
        base += [f"--git-dir={git_dir}"]
    elif cwd is not None:
        base += ["-C", str(cwd)]
    return base + args


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
    import shutil

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
_READERS: dict[Path, BatchReader] = {}  # git dir -> its one `git cat-file --batch`
_LISTINGS: dict[tuple[Path, str], dict[str, str]] = {}  # (git dir, commit) -> path -> blob id


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
    dest = _scratch_dir() / f"{len(_COPIES)}.git"
    try:
        head = (git_dir / "config").read_bytes()[:65536] if (git_dir / "config").is_file() else b""
    except OSError:
        head = b""
    sha256 = re.search(rb"(?im)^\s*objectformat\s*=\s*sha256\s*$", head) is not None
    src = git_dir / "objects"
    try:
        # what `git init --bare` writes, without a process: HEAD, refs/, objects/, our own config
        (dest / "objects").mkdir(parents=True)
        (dest / "refs" / "heads").mkdir(parents=True)
        (dest / "HEAD").write_bytes(b"ref: refs/heads/main\n")
        (dest / "config").write_bytes(b"[core]\n\trepositoryformatversion = 1\n\tbare = true\n[extensions]\n"
                                      b"\tobjectformat = sha256\n" if sha256 else
                                      b"[core]\n\trepositoryformatversion = 0\n\tbare = true\n")
        for sub in os.scandir(src):
            if not (sub.is_dir(follow_symlinks=False) and (sub.name == "pack" or _HEX2.match(sub.name))):
                continue
            wanted = _PACK if sub.name == "pack" else _LOOSE
            (dest / "objects" / sub.name).mkdir(exist_ok=True)
            for f in os.scandir(sub.path):
                if wanted.match(f.name) and f.is_file(follow_symlinks=False):
                    _link_or_copy(f.path, dest / "objects" / sub.name / f.name)
    except OSError as exc:
        raise RefError("repo", f"cannot read the repository's objects: {exc.strerror or exc}") from None
    _COPIES[git_dir] = dest
    _SOURCES[dest] = git_dir.parent if git_dir.name == ".git" else git_dir
    return dest


def _scratch_dir() -> Path:
    """kdc's private folder for this process (mode 0700, removed at exit). Not tempfile: its
    import (random, shutil, bz2, lzma) costs a one-file validate more than this does."""
    if not _scratch:
        base = os.environ.get("TMPDIR") or "/tmp"
        while True:
            folder = Path(base) / f"kdc-repos-{os.urandom(8).hex()}"
            try:
                folder.mkdir(mode=0o700)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise RefError("repo", f"cannot create a private folder in {base}: {exc.strerror or exc}",
                               "set TMPDIR to a writable folder") from None
        _scratch.append(folder)
        atexit.register(_remove_tree, folder)
    return _scratch[0]


def _remove_tree(folder: Path) -> None:
    for dirpath, dirs, files in os.walk(folder, topdown=False):  # never follows a link
        for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            _quiet(os.unlink, os.path.join(dirpath, name))
        for name in dirs:
            _quiet(os.rmdir, os.path.join(dirpath, name))
    _quiet(os.rmdir, folder)


def _quiet(fn, path: str | Path) -> None:
    try:
        fn(path)
    except OSError:
        pass


def _link_or_copy(src: str, dest: Path) -> None:
    """A hard link (git only reads the copy), else a copy of the bytes."""
    try:
        os.link(src, dest, follow_symlinks=False)
        return
    except OSError:
        pass
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)


def _reader(path: Path) -> BatchReader:
    """The batch reader of a git directory (a private copy or a cached clone)."""
    reader = _READERS.get(path)
    if reader is None:
        if not _READERS:
            atexit.register(_close_readers)
        reader = _READERS[path] = BatchReader(command(["cat-file", "--batch"], path.absolute()), env())
    return reader


def _close_readers() -> None:
    for reader in _READERS.values():
        reader.close()


def _get(path: Path, rev: str, limit: int | None = None) -> Reply | None:
    try:
        return _reader(path).get(rev, limit)
    except BatchError as exc:
        hint = "install git: knowledge documents are read with git" if "not installed" in str(exc) else ""
        raise RefError("repo", str(exc), hint) from None


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
    found = _get(path, f"{commit}^{{commit}}")
    if found is None and fetch_missing and remote:  # a commit on no branch (e.g. a pull request's)
        url = git(["config", "--get", "remote.origin.url"], path).stdout.decode("utf-8", "replace").strip()
        git(["fetch", "--quiet", "origin", commit], path, timeout=FETCH_TIMEOUT, protocols=_protocols(url))
        _reader(path).close()  # the next request sees the new pack
        found = _get(path, f"{commit}^{{commit}}")
    if found is None:
        where = "the cached clone" if remote else str(_SOURCES.get(path, path))
        hint = ("fetch again (`kdc validate --fetch` or `kdc compile --fetch`)" if remote else
                "commit the documents and copy the full sha from `git rev-parse HEAD`")
        raise RefError("commit", f"commit {commit} not found in {where}", hint)
    return found.oid


def unsafe_pattern(pattern: str) -> bool:
    """A pattern that names something outside the repository (absolute, `..`, `~`)."""
    p = PurePosixPath(pattern.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or pattern.startswith("~")


def _listing(path: Path, commit: str) -> dict[str, str]:
    key = (path, commit)
    if key not in _LISTINGS:
        tree = _get(path, f"{commit}^{{tree}}")
        if tree is None:
            raise RefError("repo", f"cannot list files: {commit} is not a commit of the repository")
        try:
            _LISTINGS[key] = regular_blobs(_reader(path), tree.oid)
        except BatchError as exc:
            raise RefError("repo", f"cannot list files: {exc}") from None
    return _LISTINGS[key]


def regular_files(path: Path, commit: str) -> list[str]:
    """Every regular file at `commit` (symlinks and submodules left out: they could point outside)."""
    return sorted(_listing(path, commit))


def matching(names: list[str], pattern: str) -> list[str]:
    """fnmatch on the full path, so `*.md` matches at any depth."""
    return [n for n in names if fnmatch.fnmatchcase(n, pattern.strip())]


def read_blob(path: Path, commit: str, name: str, limit: int | None = None) -> tuple[int, bytes | None]:
    """(bytes, content) of a regular file at `commit`; content None when over `limit` (a huge
    file is refused unread)."""
    blob = _listing(path, commit).get(name)
    found = _get(path, blob, limit) if blob is not None else None
    if found is None or found.type != "blob":
        raise RefError("patterns", f"cannot read {name} at {commit[:12]}: not a regular file of that commit")
    return found.size, found.data
