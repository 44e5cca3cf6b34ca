"""The build-directory module (compiler/io/builddir.py): typed records that round-trip byte for
byte, one reader that checks the format, and the writer's clean-up of stale files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from compiler.io import builddir
from compiler.io.buildrecords import Provenance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_report import NODES, make_build  # noqa: E402


def test_manifest_round_trips_byte_for_byte(tmp_path: Path) -> None:
    build = make_build(tmp_path / "b")
    before = (build / "manifest.json").read_bytes()
    man = builddir.read_manifest(build)
    assert set(man.nodes) == set(NODES) and man.format == builddir.FORMAT
    haiku = man.nodes["compositional_skills/writing/freeform/haiku"]
    assert (haiku.accepted, haiku.target, haiku.shortfall) == (12, 15, 3) and haiku.coverage is None
    builddir.write_manifest(build, man)
    assert (build / "manifest.json").read_bytes() == before
    entry = json.loads(before)["nodes"]["compositional_skills/writing/freeform/haiku"]
    assert list(entry) == [k for k in type(haiku).ORDER if k not in ("coverage", "views")]  # compile's key order


def test_provenance_types_a_sample_line_and_gives_it_back(tmp_path: Path) -> None:
    view = builddir.load_build(make_build(tmp_path / "b"))
    sample = view.train["knowledge/science/astronomy/solar_system"][2]
    prov = view.provenance(sample)
    assert prov.kind == "knowledge" and prov.seeds_shown == [2, 3] and prov.document["file"] == "solar.md"
    assert prov.judge_scores == {"faithfulness": 5, "relevance": 4, "format": 5} and prov.review is None
    assert prov.to_json() == sample["metadata"]


def test_stale_leaf_goes_but_its_live_child_and_nothing_else_does(tmp_path: Path) -> None:
    root = tmp_path / "b"
    for node in ("a", "a/b", "c"):
        builddir.write_node(root, node, [{"id": node}], [], [])
    (root / "hf" / "a").mkdir(parents=True)  # a Hugging Face copy an earlier kdc wrote
    (root / "hf" / "a" / "state.json").write_text("{}")
    builddir.remove_stale(root, {"a/b", "c"})
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "nodes/a/b/eval.jsonl", "nodes/a/b/rejected.jsonl", "nodes/a/b/train.jsonl",
        "nodes/c/eval.jsonl", "nodes/c/rejected.jsonl", "nodes/c/train.jsonl"]
