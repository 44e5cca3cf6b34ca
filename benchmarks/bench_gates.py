"""Gate throughput: N synthetic records (a known share of exact and near duplicates, some PII)
through Gatekeeper.check, one at a time as the compile loop does.

    .venv/bin/python benchmarks/bench_gates.py            # 10k and 100k
    .venv/bin/python benchmarks/bench_gates.py 20000      # one size

Prints seconds, records/s and the growth factor between sizes (10x records should cost ~10x),
and how many planted duplicates the gates caught.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler.gates.chain import GateConfig, Gatekeeper  # noqa: E402
from compiler.records import Record, Sample  # noqa: E402
from compiler.taxonomy.tree import load_taxonomy  # noqa: E402

NODES = 20
_SYL = "ka lo mi ne ru sa te vo bi da fe gu hi jo ly po qu re si tu".split()
# Word-like tokens (20^3 = 8,000 of them), stop words, and some numbers as real text has.
VOCAB = ([a + b + c for a in _SYL for b in _SYL for c in _SYL]
         + "the a of to in is and what how why which".split() * 40 + [str(n) for n in range(1, 2100, 7)])
NEAR_SHARE, EXACT_SHARE, PII_SHARE = 0.10, 0.05, 0.02


def make_taxonomy(root: Path) -> None:
    for i in range(NODES):
        leaf = root / "compositional_skills" / f"group{i // 5}" / f"leaf{i}"
        leaf.mkdir(parents=True)
        examples = "".join(f"  - question: Seed question {i} {j} about topic {j}?\n    answer: Seed answer {j}.\n"
                           for j in range(5))
        (leaf / "qna.yaml").write_text(f"version: 3\ncreated_by: bench\ntask_description: bench leaf {i}\n"
                                       f"seed_examples:\n{examples}")


def records(n: int, rng: random.Random, planted: Counter | None = None) -> list[Sample]:
    out: list[Sample] = []
    planted = planted if planted is not None else Counter()
    for i in range(n):
        node = f"compositional_skills/group{(i % NODES) // 5}/leaf{i % NODES}"
        r = rng.random()
        same_node = [s for s in out[-NODES * 3:] if s.node_id == node]
        if r < EXACT_SHARE and same_node:
            rec = same_node[-1].record
            planted["exact copy"] += 1
        elif r < EXACT_SHARE + NEAR_SHARE and same_node:
            planted["near copy (one word changed)"] += 1
            prev = same_node[-1].record
            toks = prev.answer.split()
            toks[rng.randrange(len(toks))] = rng.choice(VOCAB)  # one word changed
            rec = Record(prev.question, prev.reasoning, " ".join(toks))
        else:
            q = "what is " + " ".join(rng.choice(VOCAB) for _ in range(rng.randint(8, 20))) + "?"
            a = " ".join(rng.choice(VOCAB) for _ in range(rng.randint(20, 60))) + "."
            if rng.random() < PII_SHARE:
                a += " Write to someone@example.org or call +44 20 7946 0958."
                planted["pii (redacted, kept)"] += 1
            rec = Record(q, ("First consider the question.", "Then answer it."), a)
        out.append(Sample(f"s{i}", node, rec, [{"role": "user", "content": rec.question},
                                                {"role": "assistant", "content": rec.answer}],
                          {"kind": "freeform_skill"}))
    return out


async def run(gk: Gatekeeper, samples: list[Sample], chunk_cpu: list[float] | None = None) -> Counter:
    """Gate every sample in order; `chunk_cpu` gets the CPU seconds of each 10,000 (flat = linear)."""
    reasons: Counter = Counter()
    c0 = time.process_time()
    for i, s in enumerate(samples, 1):
        v = await gk.check(s)
        reasons[v.reason or "accepted"] += 1
        if chunk_cpu is not None and i % 10_000 == 0:
            chunk_cpu.append(round(time.process_time() - c0, 2))
            c0 = time.process_time()
    return reasons


def main() -> None:
    parser = argparse.ArgumentParser(description="Gate N synthetic records (planted duplicates, seed copies, "
                                     "PII, junk) and report wall and CPU time per size.")
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000], help="record counts")
    sizes = parser.parse_args().sizes
    with tempfile.TemporaryDirectory() as tmp:
        make_taxonomy(Path(tmp))
        tax = load_taxonomy(tmp)
        seeds = {leaf.node_id: leaf.seeds() for leaf in tax.leaves()}
        train = {k: v[1:] for k, v in seeds.items()}
        results = []
        for n in sizes:
            planted: Counter = Counter()
            samples = records(n, random.Random(n), planted)
            gk = Gatekeeper(GateConfig(), tax, train, {k: v[:1] for k, v in seeds.items()})
            t0, c0 = time.perf_counter(), time.process_time()
            chunks: list[float] = []
            reasons = asyncio.run(run(gk, samples, chunks))
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            results.append((n, dt, cpu))
            print(f"{n:>8,} records  wall {dt:7.2f} s  cpu {cpu:7.2f} s  {n / dt:9,.0f} records/s  "
                  f"{dict(sorted(reasons.items()))}", flush=True)
            print(f"{'':>17}planted: {dict(sorted(planted.items()))}", flush=True)
            if len(chunks) > 1:
                print(f"{'':>17}cpu s per 10,000 as the indexes grow: {chunks}", flush=True)
        for (n1, t1, c1), (n2, t2, c2) in zip(results, results[1:]):
            print(f"growth {n1:,} -> {n2:,}: records x{n2 / n1:.1f}, wall x{t2 / t1:.2f}, cpu x{c2 / c1:.2f}")
        print(f"load average during the run: {os.getloadavg()[0]:.2f} (the machine is shared; cpu time is "
              "the fairer figure when it is busy)")


if __name__ == "__main__":
    main()
