"""One long-lived `git cat-file --batch` process per repository, and git's tree format.

Why: a one-file `kdc validate` of a knowledge leaf used to start five git processes (init,
rev-parse, ls-tree, cat-file -s, cat-file blob); a process start costs more than the reading.
Through one batch process the commit, every tree and every blob is a request and its reply.
Trees are parsed here (mode, name, object id: the format git has kept since 2005) so that no
`ls-tree` is needed. compiler/io/gitrepo.py builds the hardened command and owns the policy;
this module only speaks the protocol. The process is started with os.posix_spawnp, not
subprocess, whose import (selectors, signal, threading) costs a one-file validate more than the
git process does.
"""

from __future__ import annotations

import _thread
import os
import stat
from dataclasses import dataclass


class BatchError(Exception):
    """git could not be started or stopped answering."""


@dataclass(frozen=True)
class Reply:
    oid: str  # full object id (hex)
    type: str  # commit, tree, blob, tag
    size: int
    data: bytes | None  # None: over the caller's limit, left unread


class BatchReader:
    """Requests to one `git cat-file --batch`, started on first use (again after a refused read,
    and in a forked child, which must not share its parent's pipes). Thread-safe."""

    def __init__(self, cmd: list[str], env: dict[str, str]):
        self.cmd, self.env = cmd, env
        self._pid = 0  # the git process (0: none)
        self._owner = 0  # the process that started it
        self._stdin = self._stdout = None
        self._lock = _thread.allocate_lock()

    def _process(self):
        if self._pid and self._owner == os.getpid():
            return self._stdin, self._stdout
        in_r, in_w = os.pipe()  # non-inheritable: the child keeps only its dup2'ed ends
        out_r, out_w = os.pipe()
        try:
            self._pid = os.posix_spawnp(self.cmd[0], self.cmd, self.env, file_actions=[
                (os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)])
        except OSError as exc:
            os.close(in_w)
            os.close(out_r)
            missing = isinstance(exc, FileNotFoundError)
            raise BatchError("git is not installed" if missing else f"cannot start git: {exc}") from None
        finally:
            os.close(in_r)
            os.close(out_w)
        self._owner = os.getpid()
        self._stdin, self._stdout = os.fdopen(in_w, "wb"), os.fdopen(out_r, "rb")
        return self._stdin, self._stdout

    def get(self, rev: str, limit: int | None = None) -> Reply | None:
        """The object `rev` names (any rev expression without a newline), or None: missing or
        ambiguous. `limit`: a bigger object comes back with data None, unread (git is stopped)."""
        if "\n" in rev:
            return None
        with self._lock:
            stdin, stdout = self._process()
            try:
                stdin.write(rev.encode("utf-8", "surrogateescape") + b"\n")
                stdin.flush()
                header = stdout.readline()
                parts = header.split()
                if len(parts) != 3:  # "<rev> missing" or "<rev> ambiguous"
                    if not header:
                        raise BatchError("git cat-file stopped answering")
                    return None
                oid, typ, size = parts[0].decode("ascii"), parts[1].decode("ascii"), int(parts[2])
                if limit is not None and size > limit:
                    self._stop()
                    return Reply(oid, typ, size, None)
                data = stdout.read(size + 1)  # the object and git's newline after it
            except (OSError, ValueError) as exc:
                self._stop()
                raise BatchError(f"git cat-file failed: {exc}") from None
            if len(data) != size + 1:
                self._stop()
                raise BatchError("git cat-file stopped answering")
            return Reply(oid, typ, size, data[:-1])

    def _stop(self) -> None:
        pid, self._pid = self._pid, 0
        if not pid or self._owner != os.getpid():
            return  # a forked child leaves its parent's git alone
        for stream in (self._stdin, self._stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            os.kill(pid, 9)  # SIGKILL: git only reads, nothing is lost
            os.waitpid(pid, 0)
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            self._stop()


def tree_entries(data: bytes, oid_bytes: int) -> list[tuple[int, bytes, str]]:
    """(mode, name, object id) of each entry of a raw tree object. Raises ValueError when the
    object is not a well-formed tree."""
    out = []
    i = 0
    while i < len(data):
        space = data.index(b" ", i)
        nul = data.index(b"\0", space)
        end = nul + 1 + oid_bytes
        if end > len(data):
            raise ValueError("truncated tree entry")
        out.append((int(data[i:space], 8), data[space + 1:nul], data[nul + 1:end].hex()))
        i = end
    return out


def regular_blobs(reader: BatchReader, tree_oid: str) -> dict[str, str]:
    """Path -> blob id of every regular file below a tree, as `git ls-tree -r` lists them
    (symlinks and submodules left out). Walked with a stack: a deep tree cannot overflow."""
    oid_bytes = len(tree_oid) // 2
    out: dict[str, str] = {}
    stack = [(tree_oid, b"")]
    while stack:
        oid, prefix = stack.pop()
        reply = reader.get(oid)
        if reply is None or reply.type != "tree" or reply.data is None:
            raise BatchError(f"tree {oid} is missing")
        try:
            entries = tree_entries(reply.data, oid_bytes)
        except ValueError as exc:
            raise BatchError(f"tree {oid} is corrupt ({exc})") from None
        for mode, name, child in entries:
            path = prefix + name
            if stat.S_ISDIR(mode):
                stack.append((child, path + b"/"))
            elif stat.S_ISREG(mode):
                out[path.decode("utf-8", "replace")] = child
    return out
