"""A value this process makes once, on first use, and a forked child makes again: threads (an
event loop's, an executor's) do not survive a fork, and a child handed its parent's would wait on
them forever."""

from __future__ import annotations

import os
import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    def __init__(self, make: Callable[[], T]):
        self._make = make
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._value: T | None = None

    def get(self) -> T:
        with self._lock:
            if self._pid != os.getpid():
                self._value, self._pid = self._make(), os.getpid()
            return self._value  # type: ignore[return-value]
