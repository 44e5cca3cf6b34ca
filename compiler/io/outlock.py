"""One writer per build folder: `kdc compile` and `kdc review --apply` hold an exclusive
flock on DIR/.kdc/lock while they write, so a second one into the same --out is refused at once
instead of interleaving. The OS drops the lock when the holder exits, even on kill -9."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from compiler.errors import BuildError


@contextmanager
def hold(out: Path, what: str) -> Iterator[None]:
    """Hold the build folder's lock for the block; BuildError when another process holds it."""
    path = Path(out) / ".kdc" / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise BuildError(f"{out} is in use by {holder}", path=str(path),
                             hint="wait for it to finish, or write to another folder (--out DIR)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"kdc {what} (pid {os.getpid()})\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
