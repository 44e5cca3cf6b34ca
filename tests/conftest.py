"""Shared test set-up: the repo on sys.path, offline environment, the example taxonomy's doc repos."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS = ROOT.parent / "shared" / "corpus" / "taxonomy-history"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def example_taxonomy() -> Path:
    """The shipped example taxonomy, with its document repos built (deterministic commits)."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_doc_repos.py"),
                    str(ROOT / "documents"), str(ROOT / "build" / "doc-repos")],
                   check=True, capture_output=True)
    return ROOT / "taxonomy"
