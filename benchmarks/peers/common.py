"""Shared by the peer scripts (each runs in its own venv, so only the standard library here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: str) -> list[dict]:
    """The requests kdc would send (benchmarks/peers/dump_prompts.py)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def valid(text: str | None, schema: dict) -> bool:
    """An answer a peer would keep: a JSON object with every required key, non-empty strings."""
    try:
        obj = json.loads(text) if isinstance(text, str) else text
    except (TypeError, ValueError):
        return False
    if not isinstance(obj, dict):
        return False
    return all(obj.get(k) not in (None, "", []) for k in schema.get("required", []))


def report(path: str, accepted: int, requests: int) -> None:
    Path(path).write_text(json.dumps({"accepted": accepted, "requests": requests}), encoding="utf-8")
    print(f"accepted {accepted}/{requests}", file=sys.stderr)
