#!/usr/bin/env python3
"""validate's duplicate-seed fingerprints (compiler/minhash.py via checks.seed_refs) over the
conformance corpus, in-process: CPU seconds, best of N, to compare MinHash changes.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_minhash.py [--corpus DIR] [--runs 3]

Run it on two checkouts (PYTHONPATH=<checkout>) to compare; the gates' side is
benchmarks/bench_gates.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compiler.io.yamlload import YamlLoadError, load_bytes  # noqa: E402
from compiler.validate import checks  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "taxonomy-history")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    docs = []
    for path in sorted(args.corpus.rglob("*.yaml")):
        try:
            loaded = load_bytes(path.read_bytes())
        except YamlLoadError:
            continue
        if isinstance(loaded.data, dict):
            docs.append(loaded.data)
    checks._permutations()  # outside the timing: loaded once per process in real runs too
    best, refs = float("inf"), 0
    for _ in range(args.runs):
        t0 = time.process_time()
        refs = sum(len(checks.seed_refs(data, None)) for data in docs)
        best = min(best, time.process_time() - t0)
    print(f"{len(docs)} files, {refs} seed refs: {best:.3f} s CPU (best of {args.runs})")


if __name__ == "__main__":
    main()
