"""A private copy of the example taxonomy for tests that compile it (shared by several test files)."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def private_taxonomy(tmp_path: Path, example_taxonomy: Path) -> Path:
    """The example taxonomy and its document repos under `tmp_path`, in the same relative layout
    (`../build/doc-repos` inside a checkout, marked by a `.git`), with the example's extra attempt
    budget for the slow embedded teacher removed: these tests check the default budget."""
    shutil.copytree(example_taxonomy, tmp_path / "taxonomy")
    shutil.copytree(ROOT / "build" / "doc-repos", tmp_path / "build" / "doc-repos", symlinks=True)
    (tmp_path / ".git").mkdir()
    cfg = tmp_path / "taxonomy" / "kdc.yaml"
    cfg.write_text("".join(l for l in cfg.read_text().splitlines(True) if not l.startswith("max_attempts")))
    return tmp_path / "taxonomy"
