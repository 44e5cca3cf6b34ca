"""The taxonomy's verdict for `kdc compile`, worked out beside the compile's start-up.

A compile refuses an invalid taxonomy before it plans, creates the build folder or sends a
request. Working out the verdict (yamllint, the schemas, seed MinHash and their imports: ~0.2-0.3 s
for 20 leaves) used to come first of all, so every request waited on it. Here a forked child works
it out on the other core while this process imports the build's stack, loads the tree and sets up
the teacher; `check()` then reads it, and raises the error the validation found, before anything
else happens. What a bad taxonomy costs is unchanged: no request, no file.

The child shares nothing back but a JSON line (the first error, located). Where fork is unsafe
(not Linux, or threads already running: a test harness's server, say) the check runs in this
process when `check()` is called, as before.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from compiler.errors import TaxonomyError

__all__ = ["Verdict", "first_error"]


def first_error(root: Path, allow_repos: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The located error compile reports for an invalid taxonomy (its first error, and how many
    there are), or None when every file is valid."""
    from compiler.validate.api import validate_tree

    results = validate_tree(Path(root), allow_repos=allow_repos)
    bad = [r for r in results if not r.valid]
    if not bad:
        return None
    first = bad[0]
    probs = [p for p in first.problems if getattr(p, "severity", "error") == "error"] or list(first.problems)
    p = probs[0] if probs else None
    total = sum(1 for r in bad for q in r.problems if getattr(q, "severity", "error") == "error")
    return {"message": f"invalid taxonomy: {p.message if p else 'file is not valid'}"
                       + (f" [{p.rule}]" if p is not None and getattr(p, "rule", None) else ""),
            "path": str(first.path), "line": p.line if p else None, "column": p.column if p else None,
            "hint": f"{len(bad)} invalid file(s), {total} error(s): run `kdc validate {root}` for all of them"}


def _can_fork() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork") and threading.active_count() == 1


class Verdict:
    """The pending verdict on one taxonomy; `check()` waits for it and raises if it is invalid."""

    def __init__(self, root: Path, allow_repos: tuple[str, ...] = (), *, background: bool | None = None):
        self.root, self.allow_repos = Path(root), tuple(allow_repos)
        self.forked = _can_fork() if background is None else background and _can_fork()
        self._pid: int | None = None
        self._fd: int | None = None
        self._error: dict[str, Any] | None = None
        self._known = False
        self.seconds: float | None = None  # how long the child took (for the profile)
        if self.forked:
            self._fork()

    def _fork(self) -> None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: one line on the pipe, then gone without running any exit hook
            code, started = 0, time.perf_counter()
            try:
                os.close(r)
                error = first_error(self.root, self.allow_repos)
                line = json.dumps({"error": error, "seconds": round(time.perf_counter() - started, 4)})
            except BaseException:  # noqa: BLE001 - the parent re-runs the check and reports it itself
                line, code = json.dumps({"retry": True}), 1
            try:
                os.write(w, line.encode() + b"\n")
            finally:
                os._exit(code)
        os.close(w)
        self._pid, self._fd = pid, r

    def _wait(self) -> dict[str, Any] | None:
        """The child's line (None if it died without one), the child reaped."""
        chunks = []
        try:
            while chunk := os.read(self._fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(self._fd)
            self._fd = None
            os.waitpid(self._pid, 0)
            self._pid = None
        try:
            return json.loads(b"".join(chunks))
        except ValueError:
            return None

    def check(self) -> None:
        """Raise the validation's TaxonomyError when the taxonomy is invalid (once known, at once)."""
        if not self._known:
            got = self._wait() if self._fd is not None else None
            # no answer from a child (killed, or it failed): the check runs here, raising what it raises
            self._error = got["error"] if got is not None and "error" in got else first_error(self.root, self.allow_repos)
            self.seconds = got.get("seconds") if got is not None else None
            self._known = True
        if self._error is not None:
            raise TaxonomyError(**self._error)

    def close(self) -> None:
        """Stop a child whose verdict nobody will read (the compile failed for another reason)."""
        if self._pid is not None:
            try:
                os.kill(self._pid, 9)
            except ProcessLookupError:
                pass
            self._wait()
