"""Background writes (compiler/io/fsutil.py): the build's files are written by a few threads while
the next is serialised; every file is on disk, whole, when the block is left, the first error is
raised there, and a caller about to remove files first waits for those in flight."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from compiler.io import fsutil


def test_every_file_is_written_whole_and_by_the_writer_threads(tmp_path: Path, monkeypatch) -> None:
    real, threads = fsutil._atomic_write, set()

    def spy(path, data):
        threads.add(threading.current_thread().name)
        real(path, data)

    monkeypatch.setattr(fsutil, "_atomic_write", spy)
    with fsutil.background_writes():
        for i in range(60):
            fsutil.atomic_write(tmp_path / f"d{i % 7}" / f"f{i}.jsonl", fsutil.jsonl_text({"i": i, "x": "é" * i}
                                                                                       for _ in range(50)))
    assert threads and all(t.startswith("kdc-write") for t in threads)
    for i in range(60):
        assert fsutil.read_jsonl(tmp_path / f"d{i % 7}" / f"f{i}.jsonl") == [{"i": i, "x": "é" * i}] * 50
    assert not list(tmp_path.rglob("*.tmp"))
    fsutil.atomic_write(tmp_path / "after.txt", "sync")  # outside the block: written at once
    assert (tmp_path / "after.txt").read_text() == "sync"


def test_the_first_error_is_raised_on_leaving_and_the_other_files_are_written(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(OSError):
        with fsutil.background_writes():
            fsutil.atomic_write(tmp_path / "a.txt", "a")
            fsutil.atomic_write(tmp_path / "blocker" / "b.txt", "b")
            fsutil.atomic_write(tmp_path / "c.txt", "c")
    assert (tmp_path / "a.txt").read_text() == "a" and (tmp_path / "c.txt").read_text() == "c"


def test_settle_waits_for_the_writes_in_flight(tmp_path: Path, monkeypatch) -> None:
    gate, real = threading.Event(), fsutil._atomic_write

    def slow(path, data):
        gate.wait(5)
        real(path, data)

    monkeypatch.setattr(fsutil, "_atomic_write", slow)
    with fsutil.background_writes():
        fsutil.atomic_write(tmp_path / "sub" / "x.jsonl", "{}\n")
        assert not (tmp_path / "sub" / "x.jsonl").exists()  # still in flight
        threading.Timer(0.2, gate.set).start()
        fsutil.settle_writes()
        assert (tmp_path / "sub" / "x.jsonl").read_text() == "{}\n"
