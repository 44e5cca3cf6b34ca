#!/usr/bin/env python3
"""Benchmark knowledge coverage: how much of each knowledge leaf's documents reaches training.

Compiles a taxonomy (default: the example) with the loopback teacher server (tests/teacher_server.py,
a real OpenAI-protocol HTTP server on 127.0.0.1; fast) or the embedded teacher, then reports per
knowledge leaf:
- the share of the documents' word 5-grams found in at least one row of the knowledge mix
  (mixes/phase1_knowledge.jsonl), over all rows and over the Q&A rows alone (content rows excluded);
- chunks and chunks covered by an accepted Q&A (manifest.json);
and the row-kind shares of the knowledge mix. Targets (issue 15): >= 90 % per corpus, no leaf
under 60 %, closed-book, RAFT and content rows each >= 10 %.

With --augment on (the default) the taxonomy is copied and its kdc.yaml's `augment: enabled`
set to true (the example turns it off for the embedded demo), so views are written, asked
about and become content rows; the report then counts content rows from views apart.

usage: bench_coverage.py [--taxonomy DIR] [--teacher loopback|embedded] [--samples N] [--per-chunk N]
                         [--augment on|off|config] [--out DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

_WORD = re.compile(r"\w+")


def grams(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = [w.lower() for w in _WORD.findall(text)]
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def row_text(row: dict) -> str:
    return "\n".join(str(m.get("content", "")) for m in row.get("messages", []))


def compile_once(taxonomy: Path, out: Path, teacher: str, samples: int, per_chunk: int | None) -> dict:
    from compiler.compile.build import compile_taxonomy
    from compiler.config import load_config

    cli = {"out": out, "samples_per_node": samples}
    if per_chunk is not None:
        cli["per_chunk"] = per_chunk
    if teacher == "embedded":
        return compile_taxonomy(load_config(taxonomy, None, cli)).manifest
    from tests.teacher_server import TeacherServer

    with TeacherServer() as srv:
        cli.update({"teacher": "openai/teacher-bench", "api_base": [srv.url], "concurrency": 16})
        return compile_taxonomy(load_config(taxonomy, None, cli)).manifest


def with_augment(taxonomy: Path, work: Path, mode: str) -> Path:
    """The taxonomy to compile: as it is (`config`), or a copy whose kdc.yaml sets augment.enabled.
    The copy keeps the layout the example needs (build/doc-repos beside it, a repo root marker)."""
    if mode == "config":
        return taxonomy
    dest = work / "taxonomy"
    shutil.copytree(taxonomy, dest)
    docs = taxonomy.resolve().parent / "build" / "doc-repos"
    if docs.is_dir():
        shutil.copytree(docs, work / "build" / "doc-repos", symlinks=True)
    (work / ".git").mkdir(exist_ok=True)
    cfg = dest / "kdc.yaml"
    text = cfg.read_text() if cfg.is_file() else ""
    flag = "true" if mode == "on" else "false"
    if re.search(r"(?m)^augment:\s*\n\s+enabled:", text):
        text = re.sub(r"(?m)^(augment:\s*\n\s+enabled:)\s*\S+", rf"\1 {flag}", text)
    elif re.search(r"(?m)^augment:", text):
        raise SystemExit("bench_coverage: cannot set augment.enabled in this kdc.yaml; use --augment config")
    else:
        text += f"\naugment:\n  enabled: {flag}\n"
    cfg.write_text(text)
    return dest


def measure(taxonomy: Path, out: Path, manifest: dict) -> dict:
    from compiler.taxonomy.documents import load_documents
    from compiler.taxonomy.tree import load_taxonomy

    rows = [json.loads(line) for line in (out / "mixes" / "phase1_knowledge.jsonl").read_text().splitlines()]
    tax = load_taxonomy(taxonomy)
    leaves, all_doc, all_hit = {}, 0, 0
    for leaf in tax.leaves():
        if leaf.kind != "knowledge" or leaf.node_id not in manifest["nodes"]:
            continue
        doc = set().union(*(grams(d.text) for d in load_documents(leaf.content["document"], Path(taxonomy))))
        mine = [r for r in rows if r["metadata"]["node_id"] == leaf.node_id]
        seen = set().union(set(), *(grams(row_text(r)) for r in mine))
        qa = set().union(set(), *(grams(row_text(r)) for r in mine if r["metadata"].get("row_kind") != "content"))
        n = manifest["nodes"][leaf.node_id]
        kinds_here: dict[str, int] = {}
        for r in mine:
            k = r["metadata"].get("row_kind", "")
            kinds_here[k] = kinds_here.get(k, 0) + 1
        leaves[leaf.node_id] = {"rows": len(mine), "row_kinds": dict(sorted(kinds_here.items())),
                                "content_rows_from_views": sum(1 for r in mine if "view" in r["metadata"]),
                                "views": n.get("views"),"doc_5grams": len(doc), "share": round(len(doc & seen) / max(1, len(doc)), 4),
                                "share_qa_rows_only": round(len(doc & qa) / max(1, len(doc)), 4),
                                "chunks": n.get("chunks"), "coverage": n.get("coverage"),
                                "accepted": n["accepted"], "target": n["target"]}
        all_doc += len(doc)
        all_hit += len(doc & seen)
    kinds = manifest["mixes"]["phase1_knowledge"].get("row_kinds", {})
    corpus = round(all_hit / max(1, all_doc), 4)
    return {"leaves": leaves, "corpus_share": corpus, "row_kinds": kinds,
            "rows": manifest["mixes"]["phase1_knowledge"]["rows"],
            "targets_met": {"corpus_90": corpus >= 0.9,
                            "every_leaf_60": all(v["share"] >= 0.6 for v in leaves.values()),
                            "kinds_10": all(kinds.get(k, 0) >= 0.1 for k in ("closed_book", "raft", "content"))}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--taxonomy", type=Path, default=ROOT / "taxonomy")
    ap.add_argument("--teacher", choices=("loopback", "embedded"), default="loopback")
    ap.add_argument("--samples", type=int, default=3, help="samples_per_node (the floor)")
    ap.add_argument("--per-chunk", type=int, default=None, help="override kdc.yaml's per_chunk")
    ap.add_argument("--augment", choices=("on", "off", "config"), default="on",
                    help="augmentation views: force on (default) or off in a copy, or as kdc.yaml says")
    ap.add_argument("--out", type=Path, default=None, help="build folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.taxonomy.resolve() == (ROOT / "taxonomy").resolve() and not (ROOT / "build" / "doc-repos").is_dir():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_doc_repos.py"), str(ROOT / "documents"),
                        str(ROOT / "build" / "doc-repos")], check=True)
    work = Path(tempfile.mkdtemp(prefix="kdc-bench-coverage-"))
    out = args.out or work / "out"
    try:
        taxonomy = with_augment(args.taxonomy, work, args.augment)
        t0 = time.monotonic()
        manifest = compile_once(taxonomy, out, args.teacher, args.samples, args.per_chunk)
        result = {"teacher": args.teacher, "taxonomy": str(args.taxonomy), "samples_per_node": args.samples,
                  "augment": args.augment,
                  "per_chunk": manifest["config"].get("per_chunk"), "compile_s": round(time.monotonic() - t0, 1),
                  **measure(taxonomy, out, manifest)}
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)
    for node, v in result["leaves"].items():
        cov = v["coverage"] or {}
        print(f"{node}: 5-gram share {100 * v['share']:.1f} % (Q&A rows only {100 * v['share_qa_rows_only']:.1f} %), "
              f"chunks {cov.get('covered')}/{cov.get('chunks')} with an accepted Q&A, {v['accepted']}/{v['target']} samples; "
              f"{v['rows']} rows " + str(v["row_kinds"]) + f", {v['content_rows_from_views']} content rows from views")
    print(f"corpus: {100 * result['corpus_share']:.1f} % of document 5-grams in the knowledge mix "
          f"({result['rows']} rows); row kinds: "
          + ", ".join(f"{k} {100 * s:.0f} %" for k, s in result["row_kinds"].items()))
    print("targets met:", result["targets_met"])
    print(f"command: {' '.join(sys.argv)}  (load average {os.getloadavg()[0]:.2f})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
