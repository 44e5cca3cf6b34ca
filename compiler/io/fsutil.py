"""File I/O shared by every stage. Writes are atomic: every output of kdc is written to a temp file
and renamed into place, so a reader (or a run killed with kill -9) never sees half a file. JSONL is
read in one way everywhere: blank lines skipped, a bad line a located BuildError."""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Iterable, Iterator

from compiler.errors import BuildError

DAMAGED = "the build directory is damaged; re-run kdc compile"


_BACKGROUND: contextvars.ContextVar[tuple[ThreadPoolExecutor, list[Future]] | None] = \
    contextvars.ContextVar("kdc_background_writes", default=None)


@contextlib.contextmanager
def background_writes(threads: int = 4) -> Iterator[None]:
    """Inside, `atomic_write` hands each file to a few threads: fsync waits on the disk without
    the GIL (a third of writing a 10k-sample build), so the next file is serialised meanwhile.
    Every file is on disk when the block is left, and the first write error is raised there."""
    if _BACKGROUND.get() is not None:  # nested: the outer block waits
        yield
        return
    pending: list[Future] = []
    with ThreadPoolExecutor(threads, thread_name_prefix="kdc-write") as pool:
        token = _BACKGROUND.set((pool, pending))
        try:
            yield
        finally:
            _BACKGROUND.reset(token)
            wait(pending)
    for f in pending:
        f.result()  # the first failure, as a synchronous write would have raised it


def settle_writes() -> None:
    """Wait for the background writes so far: a caller about to list or remove files (stale
    outputs, empty folders) must see every file that is being written."""
    background = _BACKGROUND.get()
    if background is not None:
        wait(background[1])


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write text (UTF-8, '\\n' line ends) or bytes to path via a temp file in the same folder
    (in a writer thread inside `background_writes`)."""
    background = _BACKGROUND.get()
    if background is not None:
        background[1].append(background[0].submit(_atomic_write, path, data))
        return
    _atomic_write(path, data)


def _atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# json.dumps(r, ensure_ascii=False) builds an encoder per call; one shared encoder writes the same bytes.
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def jsonl_text(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(_ENCODE(r) + "\n" for r in rows)


def jsonl_rows(path: Path, *, hint: str = DAMAGED) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a JSONL file."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BuildError(f"not valid JSON: {exc.msg}", path=str(path), line=n, column=exc.colno,
                                 hint=hint) from None
            yield n, value


def read_jsonl(path: Path, *, missing_ok: bool = True, hint: str = DAMAGED,
               head: int | None = None) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (a missing file has none, unless `missing_ok` is false);
    head: the first `head` of them only."""
    if not path.is_file():
        if missing_ok:
            return []
        raise BuildError(f"{path} not found", path=str(path), hint=hint)
    rows: list[dict[str, Any]] = []
    if head is not None and head <= 0:
        return rows
    for n, row in jsonl_rows(path, hint=hint):
        if not isinstance(row, dict):
            raise BuildError("a line must be a JSON object", path=str(path), line=n, column=1, hint=hint)
        rows.append(row)
        if head is not None and len(rows) >= head:
            break
    return rows
