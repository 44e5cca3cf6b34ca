"""How many threads llama.cpp decodes with, chosen from measured speed (the embedded teacher's).

llama.cpp's threads spin on barriers: on a quiet 2-core machine two threads decode ~1.5-2x faster
than one, but beside any other work up to 10x slower (measured: 30 vs 17 tok/s quiet, 1.4 vs 16
beside a build). The load changes during a run, so no fixed count is right."""

from __future__ import annotations

import os


def threads() -> int | None:
    """A fixed llama.cpp thread count from KDC_EMBEDDED_THREADS, else None (ThreadPicker chooses)."""
    env = os.environ.get("KDC_EMBEDDED_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else None


class ThreadPicker:
    """Decoding goes on window by window (WINDOW tokens) at the count with the best measured rate,
    and now and then a window tries another one: one thread first (the safe count), then the
    others. A probe ends early once its tokens so far took longer than SLOWER x what the best
    rate would have taken for them plus SLACK more: one late token (a page fault, a busy moment
    of the process's other threads) does not sink a probe, a count that is truly slower stops
    within a token or two. Each probe that loses doubles the gap to the next (up to MAX_GAP
    windows), so a busy or a quiet machine pays for a few slow tokens every few hundred."""

    WINDOW, GAP, MAX_GAP, SLOWER, SLACK = 16, 4, 64, 1.25, 2

    def __init__(self, fixed: int | None = None, cores: int | None = None, most_first: bool = False):
        most = max(1, min(8, cores or os.cpu_count() or 1))
        self.options = [fixed] if fixed else sorted({1, most}, reverse=most_first)
        self.rate: dict[int, float] = {}  # threads -> smoothed tokens/s
        self.gap, self.since, self.probing = self.GAP, 0, False
        self.next = self.options[0]  # what window() last chose

    def best(self) -> int:
        return max(self.rate, key=lambda n: self.rate[n]) if self.rate else self.options[0]

    def too_slow(self, tokens: int, seconds: float) -> bool:
        """Whether a probe whose `tokens` so far took `seconds` should stop now."""
        if not (self.probing and self.rate):
            return False
        return seconds * max(self.rate.values()) > self.SLOWER * (tokens + self.SLACK)

    def window(self, n: int, tokens: int, seconds: float) -> int:
        """Record a window decoded with `n` threads; the count for the next window."""
        self.next = self._window(n, tokens, seconds)
        return self.next

    def _window(self, n: int, tokens: int, seconds: float) -> int:
        if tokens > 0 and seconds > 0:
            rate = tokens / seconds
            self.rate[n] = rate if n not in self.rate else (self.rate[n] + rate) / 2
        best = self.best()
        if self.probing:  # that window was a probe: it won (now best) or the next one waits longer
            self.probing, self.since = False, 0
            self.gap = self.GAP if best == n else min(2 * self.gap, self.MAX_GAP)
            return best
        self.since += 1
        untried = [k for k in self.options if k not in self.rate]
        if untried or (len(self.options) > 1 and self.since >= self.gap):
            self.probing = True
            return untried[0] if untried else sorted(self.options, key=lambda k: self.rate[k])[-2]
        return best
