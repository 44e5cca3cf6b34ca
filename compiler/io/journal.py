"""Journal-then-commit for `kdc review --apply`: the files an apply will change are copied into
DIR/.kdc/apply-journal/ before the first write, and the journal is removed when the last write is
done. A crash (kill -9, an exception, a full disk) in between leaves the journal; the next apply
restores those copies first, so re-applying the same sheet starts from the state before the crash
and writes the same bytes as an uninterrupted apply."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from compiler.io.fsutil import atomic_write

JOURNAL = Path(".kdc") / "apply-journal"


def recover(root: Path) -> bool:
    """Undo an apply that did not finish; True when there was one to undo."""
    journal = root / JOURNAL
    if not journal.exists():
        return False
    index = journal / "index.json"
    if index.is_file():  # complete journal: every entry is restored
        for i, (rel, present) in enumerate(json.loads(index.read_text(encoding="utf-8"))):
            target, saved = root / rel, journal / "files" / str(i)
            _remove(target)
            if present:
                (shutil.copytree if saved.is_dir() else shutil.copy2)(saved, target)
            _clean_temps(target.parent, target.name)
    # an incomplete journal means nothing was changed yet: it only has to go
    shutil.rmtree(journal)
    return True


def begin(root: Path, rels: list[str]) -> None:
    """Save every path in rels (files or folders; absent ones are recorded as absent)."""
    journal = root / JOURNAL
    shutil.rmtree(journal, ignore_errors=True)
    (journal / "files").mkdir(parents=True)
    entries = []
    for i, rel in enumerate(sorted(set(rels))):
        src = root / rel
        present = src.exists()
        if present:
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, journal / "files" / str(i))
        entries.append([rel, present])
    atomic_write(journal / "index.json", json.dumps(entries) + "\n")  # the journal's commit point


def commit(root: Path) -> None:
    shutil.rmtree(root / JOURNAL)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _clean_temps(folder: Path, name: str) -> None:
    """Temp files and folders a crashed writer left next to `name` (atomic_write's, the HF writer's)."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        n = entry.name
        if (n.startswith(f".{name}.") and n.endswith(".tmp")) or n == f".{name}.old" or n.startswith(".hf-"):
            _remove(entry)
