#!/usr/bin/env python3
"""Benchmark the augmentation stage (issue 15 items 2-3): what views and typed questions add.

Compiles the example taxonomy twice against the loopback teacher (tests/teacher_server.py, a
real OpenAI-protocol HTTP server on 127.0.0.1), with `augment:` off (one Q&A per call per chunk)
and on (3 views per section, K typed questions per call over sections and views), both with
per_chunk 1, and reports per knowledge leaf: chunks, views accepted/rejected, units, quota,
accepted samples, chunks covered, question types; and in all: teacher calls, seconds. The
loopback teacher writes views from the section's own sentences, so these are counts of calls and
rows, not of a real teacher's quality.

usage: bench_augment.py [--latency 0.02] [--concurrency 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from teacher_server import TeacherServer  # noqa: E402


def compile_once(tmp: Path, enabled: bool, latency: float, concurrency: int) -> dict:
    cfg = tmp / f"augment-{enabled}.yaml"
    base = "".join(l for l in (ROOT / "taxonomy" / "kdc.yaml").read_text().splitlines(True)
                   if not l.startswith(("max_attempts", "per_chunk", "augment", "  enabled")))
    cfg.write_text(base + f"per_chunk: 1\naugment: {{enabled: {str(enabled).lower()}}}\n")
    out = tmp / f"out-{enabled}"
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "PYTHONPATH": str(ROOT)}
    with TeacherServer(latency=latency) as srv:
        started = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "compiler", "compile", str(ROOT / "taxonomy"), "--out", str(out),
                              "--config", str(cfg), "--teacher", "openai/teacher-bench", "--api-base", srv.url,
                              "--no-judge", "--quiet", "--concurrency", str(concurrency)],
                             capture_output=True, text=True, env=env)
        seconds = time.monotonic() - started
        requests = srv.chat_requests
    if run.returncode != 0:
        raise SystemExit(run.stderr[-2000:])
    m = json.loads((out / "manifest.json").read_text())
    leaves = {}
    for node_id, n in m["nodes"].items():
        if n["kind"] != "knowledge":
            continue
        train = [json.loads(l) for l in (out / n["files"]["train"]).read_text().splitlines() if l.strip()]
        leaves[node_id] = {"chunks": n["chunks"], "target": n["target"], "accepted": n["accepted"],
                           "coverage": n["coverage"], "views": n.get("views"),
                           "question_types": dict(Counter(s["metadata"].get("question_type", "-") for s in train)),
                           "from_views": sum(1 for s in train if "view" in s["metadata"])}
    return {"augment": enabled, "teacher_requests": requests, "seconds": round(seconds, 1),
            "accepted": m["totals"]["accepted"], "leaves": leaves}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_doc_repos.py"), str(ROOT / "documents"),
                    str(ROOT / "build" / "doc-repos")], check=True, capture_output=True)
    tmp = Path(tempfile.mkdtemp(prefix="kdc-bench-augment-"))
    try:
        results = [compile_once(tmp, False, args.latency, args.concurrency),
                   compile_once(tmp, True, args.latency, args.concurrency)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for r in results:
        print(f"augment {'on ' if r['augment'] else 'off'}: {r['teacher_requests']} teacher requests, "
              f"{r['accepted']} samples accepted, {r['seconds']} s")
        for node_id, leaf in r["leaves"].items():
            v = leaf["views"] or {}
            print(f"  {node_id}: {leaf['chunks']} chunks, quota {leaf['target']}, accepted {leaf['accepted']} "
                  f"({leaf['from_views']} from views), covered {leaf['coverage']['covered']}/{leaf['chunks']}"
                  + (f"; views accepted {v['accepted']}, rejected {v['rejected']}, units {v['units']}; "
                     f"types {leaf['question_types']}" if v else ""))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
