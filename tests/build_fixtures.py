"""Test builds' manifests made from the real records (compiler/io/buildrecords.py) and written by the
real writer, so a hand-built build directory cannot drift from what compile writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.io import builddir
from compiler.io.buildrecords import Manifest, NodeStats


def node_entry(node_id: str, kind: str, target: int, accepted: int, **over: Any) -> NodeStats:
    """A manifest node entry with compile's defaults for what a test does not set."""
    base: dict[str, Any] = dict(
        kind=kind, target=target, accepted=accepted, shortfall=max(0, target - accepted), attempts=accepted,
        rejected={}, stopped=None, pii_redacted=0, eval_seeds=0, train_seeds=5, chunks=0,
        tokens={"prompt": 0, "completion": 0}, cost_usd=0.0, diversity={}, scores={"grounding": [], "judge": []},
        lengths={"question_words": [], "answer_words": []},
        review={"reviewed": 0, "rejected": 0, "flagged": False}, run={"teacher_calls": 0, "cache_hits": 0},
        files=builddir.node_files(node_id))
    base.update(over)
    return NodeStats(**base)


def write_manifest(root: Path, nodes: dict[str, NodeStats], mixes: dict[str, dict[str, Any]] | None = None,
                   **over: Any) -> Manifest:
    base: dict[str, Any] = dict(
        kdc_version="0.1.0", taxonomy={"root": "taxonomy", "content_hash": "ab" * 32},
        teacher={"model": "test-teacher"}, judge={"model": None, "calls": 0, "why": "off (--no-judge)"},
        templates={}, config={"seed": 0}, versions={}, nodes=nodes, broken={}, mixes=mixes or {},
        totals={"target": 0, "accepted": 0, "shortfall": 0, "rejected": 0})
    base.update(over)
    manifest = Manifest(**base)
    manifest.recount()
    root.mkdir(parents=True, exist_ok=True)
    builddir.write_manifest(root, manifest)
    return manifest
