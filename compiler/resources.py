"""Where the shipped schemas/ and templates/ live: inside the wheel, or at the repo root (editable)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """`schemas` or `templates`: packaged copy first, then the source checkout."""
    for candidate in (_PKG / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"kdc data folder {name!r} not found next to {_PKG}")


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    """A JSON schema from schemas/ by file name (e.g. 'record.json')."""
    return json.loads((data_dir("schemas") / name).read_text(encoding="utf-8"))
