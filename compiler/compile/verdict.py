"""The taxonomy's verdict for `kdc compile`, worked out beside the compile's start-up.

A compile refuses an invalid taxonomy before it plans, creates the build folder or sends a
request. Working out the verdict (yamllint, the schemas, seed MinHash and their imports: ~0.2-0.3 s
for 20 leaves) used to come first of all, so every request waited on it. Here a forked child works
it out on the other core while this process imports the build's stack, loads the tree and sets up
the teacher; `check()` then reads it, and raises the error the validation found, before anything
else happens. What a bad taxonomy costs is unchanged: no request, no file.

The child sends back the first error, located (a dict), and its time. Where fork is unsafe (not
Linux, or threads already running: a test harness's server, say) the check runs in this process
when `check()` is called, as before.
"""

from __future__ import annotations

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
    return sys.platform.startswith("linux") and threading.active_count() == 1


def _child(conn: Any, root: Path, allow_repos: tuple[str, ...]) -> None:
    """In the child: (the first error or None, seconds taken) down the pipe. A failure sends
    nothing (and prints nothing): the parent then runs the check itself and reports what it raises."""
    started = time.perf_counter()
    try:
        error = first_error(root, allow_repos)
        conn.send((error, round(time.perf_counter() - started, 4)))
    except BaseException:  # noqa: BLE001 - reported by the parent's own run of the check
        pass


class Verdict:
    """The pending verdict on one taxonomy; `check()` waits for it and raises if it is invalid."""

    def __init__(self, root: Path, allow_repos: tuple[str, ...] = ()):
        self.root, self.allow_repos = Path(root), tuple(allow_repos)
        self.forked = _can_fork()
        self.seconds: float | None = None  # how long the child took (for the profile)
        self._error: dict[str, Any] | None = None
        self._known = False
        self._proc = self._conn = None
        if self.forked:
            import multiprocessing

            ctx = multiprocessing.get_context("fork")
            self._conn, child_end = ctx.Pipe(duplex=False)
            self._proc = ctx.Process(target=_child, args=(child_end, self.root, self.allow_repos),
                                     name="kdc-verdict")  # not a daemon: a big tree's check forks a pool
            self._proc.start()
            child_end.close()

    def check(self) -> None:
        """Raise the validation's TaxonomyError when the taxonomy is invalid (once known, at once)."""
        if not self._known:
            got = None
            if self._conn is not None:
                try:
                    got = self._conn.recv()
                except (EOFError, OSError):  # the child died or failed without a verdict
                    pass
                self.close()
            if got is not None:
                self._error, self.seconds = got
            else:  # no child, or no answer from it: the check runs here, raising what it raises
                self._error = first_error(self.root, self.allow_repos)
            self._known = True
        if self._error is not None:
            raise TaxonomyError(**self._error)

    def close(self) -> None:
        """Stop and reap the child (at once when the compile failed before reading its verdict)."""
        if self._proc is not None:
            if self._proc.is_alive() and not self._conn.poll():
                self._proc.kill()
            self._proc.join()
            self._conn.close()
            self._proc = self._conn = None
