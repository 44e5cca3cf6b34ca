"""Phase timings of one `kdc compile` (`--profile FILE`): where a second of the run goes.

Why a separate file and not the manifest: a build is compared byte for byte across runs, and
timings never repeat. The profile is wall-clock only, written after the build, and records
  - phases, in order: import (process start to the CLI, then the build's stack), config, load
    (the tree's YAML), setup (gates, teacher client), validate (the wait for the taxonomy's
    verdict, worked out meanwhile in a child: its own time is `beside_s`), plan, generation,
    writing, card, report (seconds each);
  - inside generation: the first request sent and the last answer read (seconds from process
    start), and the time spent in the ordered gate decisions and in screening (gating);
  - `at`: wall-clock (epoch) stamps, so that a caller timing the process from outside can place
    start-up and wrap-up against its own clock.

Kept to a few calls from compile/build.py and the CLI; a run without --profile uses `NULL`, whose
methods do nothing.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator


def process_started() -> float | None:
    """The epoch at which this process started (None where it cannot be known), to 10 ms.

    From the process's age in clock ticks since boot (/proc/self/stat, field 22) against the boot
    clock: psutil's create_time adds that age to the boot time, which Linux gives in whole
    seconds, and so is off by up to a second."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            after_name = fh.read().rsplit(b")", 1)[1].split()  # the name, field 2, may hold spaces
        ticks = int(after_name[19])  # field 22: start time, in ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):  # no /proc (not Linux): the import phase is left out
        return None


class Profile:
    def __init__(self) -> None:
        self.t0 = process_started()
        self.phases: dict[str, float] = {}
        self.at: dict[str, float] = {}
        self.inner: dict[str, float] = {}
        self.beside: dict[str, float | None] = {}  # work done in another process meanwhile (the verdict)
        self.first_request: float | None = None
        self.last_answer: float | None = None
        self._open: dict[str, float] = {}
        now = time.time()
        if self.t0 is not None:
            self.phases["import"] = round(now - self.t0, 4)  # interpreter, click, the CLI's own imports
        self.at["import_start"] = self.t0 if self.t0 is not None else now  # + the build's stack, after config
        self.at["cli"] = now
        self.gc_s: dict[str, float] = {}  # time in the cyclic garbage collector, by phase
        self._gc_start = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            key = next(reversed(self._open), "between phases")
            self.gc_s[key] = self.gc_s.get(key, 0.0) + time.perf_counter() - self._gc_start

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.begin(name)
        try:
            yield
        finally:
            self.end(name)

    def begin(self, name: str) -> None:
        self.at.setdefault(name + "_start", time.time())
        self._open[name] = time.time()

    def end(self, name: str) -> None:
        now = time.time()
        self.at[name + "_end"] = now
        self.phases[name] = round(self.phases.get(name, 0.0) + now - self._open.pop(name, now), 4)

    def note_beside(self, name: str, seconds: float | None) -> None:
        """Work another process did meanwhile (the taxonomy's verdict: compile/verdict.py)."""
        self.beside[name] = seconds

    def timed(self, fn: Callable, name: str) -> Callable:
        """`fn` (sync or async) with its time summed under `name` in `inner`."""
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def wrapped_async(*a: Any, **kw: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await fn(*a, **kw)
                finally:
                    self.inner[name] = self.inner.get(name, 0.0) + time.perf_counter() - start
            return wrapped_async

        @functools.wraps(fn)
        def wrapped(*a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.inner[name] = self.inner.get(name, 0.0) + time.perf_counter() - start
        return wrapped

    def requests(self, ask: Callable) -> Callable:
        """An async `ask` that notes when the first one started and the last one returned."""
        @functools.wraps(ask)
        async def wrapped(*a: Any, **kw: Any) -> Any:
            if self.first_request is None:
                self.first_request = time.time()
            try:
                return await ask(*a, **kw)
            finally:
                self.last_answer = time.time()
        return wrapped

    def to_json(self) -> dict[str, Any]:
        base = self.t0 if self.t0 is not None else self.at["cli"]
        since = (lambda t: None if t is None else round(t - base, 4))
        end = max(self.at.values())
        return {"phases": self.phases, "gating_s": {k: round(v, 4) for k, v in sorted(self.inner.items())},
                "gc_s": {k: round(v, 4) for k, v in sorted(self.gc_s.items())},
                "beside_s": dict(sorted(self.beside.items())),
                "first_request_s": since(self.first_request), "last_answer_s": since(self.last_answer),
                "after_last_answer_s": None if self.last_answer is None else round(end - self.last_answer, 4),
                "total_s": since(end), "since": "process start" if self.t0 is not None else "CLI entry",
                "at": {k: round(v, 4) for k, v in self.at.items()}, "process_started": self.t0}

    def write(self, path: Path) -> None:
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


class _Null(Profile):
    """No profile: every hook is a no-op (and costs nothing per request)."""

    def __init__(self) -> None:  # noqa: D401 - no clock
        pass

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield

    def begin(self, name: str) -> None:
        pass

    def end(self, name: str) -> None:
        pass

    def note_beside(self, name: str, seconds: float | None) -> None:
        pass

    def timed(self, fn: Callable, name: str) -> Callable:
        return fn

    def requests(self, ask: Callable) -> Callable:
        return ask


NULL = _Null()
