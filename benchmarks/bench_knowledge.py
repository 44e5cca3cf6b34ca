"""Proof that a knowledge leaf teaches its documents: compile the example taxonomy with the embedded
teacher (or reuse a build), train the embedded student on the knowledge phase only (CPU, bounded steps,
kdc's CPU defaults), then ask every knowledge leaf's held-out seed questions closed-book (the question
alone, no excerpt) to the base and to the tuned student.

    python benchmarks/bench_knowledge.py                          # compile + 40 steps + closed-book eval
    python benchmarks/bench_knowledge.py --build build/demo --steps 80 --json out.json

The claim: tuned beats base (token F1) on every knowledge leaf. The eval set is the seeds kdc holds out
(never shown to the teacher, never trained on); nothing here is tuned to it. Prints steps, minutes and
base -> tuned per leaf; exit status 0 when the claim holds, 1 when it does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def compile_build(taxonomy: Path, out: Path) -> float:
    """`kdc compile` with the embedded teacher (the taxonomy's kdc.yaml settings); seconds taken."""
    docs = ROOT / "build" / "doc-repos"
    if not docs.is_dir():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_doc_repos.py"), str(ROOT / "documents"),
                        str(docs)], check=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "compiler", "compile", str(taxonomy), "--out", str(out)], check=True,
                   cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--taxonomy", type=Path, default=ROOT / "taxonomy")
    ap.add_argument("--build", type=Path, default=None, help="reuse this build (default: compile one into --work)")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "bench-knowledge")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps of the knowledge phase")
    ap.add_argument("--lr", type=float, default=None, help="default: kdc's phase-1 rate")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    from compiler.train.evaluate import evaluate
    from compiler.train.trainer import PhaseConfig, TrainConfig, default_phases, train

    build, compile_s = a.build, None
    if build is None:
        build = a.work / "build"
        if not (build / "manifest.json").is_file():
            compile_s = compile_build(a.taxonomy, build)
            print(f"compile: {compile_s / 60:.1f} min", flush=True)
    mix = [json.loads(x) for x in (build / "mixes" / "phase1_knowledge.jsonl").read_text().splitlines() if x]
    kinds: dict[str, int] = {}
    for row in mix:
        k = (row.get("metadata") or {}).get("row_kind", "?")
        kinds[k] = kinds.get(k, 0) + 1
    print(f"knowledge mix: {len(mix)} rows {kinds}", flush=True)

    p1 = default_phases("lora")[1]
    settings = {1: PhaseConfig(epochs=p1.epochs, learning_rate=a.lr or p1.learning_rate)}
    t0 = time.perf_counter()
    result = train(build, a.work / "run", TrainConfig(phases=(1,), max_steps=a.steps, phase_settings=settings,
                                                      overwrite=True, save_steps=10**6),
                   log=lambda m: print(m, flush=True))
    train_s = time.perf_counter() - t0
    (phase,) = result.phases
    losses = phase.losses
    print(f"train: {phase.global_step} steps in {train_s / 60:.1f} min ({phase.seconds_per_step:.1f} s/step, "
          f"peak RSS {phase.peak_memory_mb / 1024:.2f} GiB), loss {losses[0][1]:.3f} -> {losses[-1][1]:.3f}",
          flush=True)

    t0 = time.perf_counter()
    report = evaluate(build, str(a.work / "run"), mode="closed-book", forgetting=False, kinds=("knowledge",),
                      max_new_tokens=a.max_new_tokens, out=a.work / "eval.json", log=lambda m: print(m, flush=True))
    eval_s = time.perf_counter() - t0
    wins = []
    for node in report.nodes:
        b, t = node["base"], node["tuned"]
        wins.append(t["f1"] > b["f1"])
        print(f"{node['node_id']:45s} n={node['n']}  F1 {b['f1']:.3f} -> {t['f1']:.3f}  "
              f"ROUGE-L {b['rouge_l']:.3f} -> {t['rouge_l']:.3f}")
    held = bool(wins) and all(wins)
    print(f"eval: {eval_s / 60:.1f} min; tuned beats base closed-book on "
          f"{sum(wins)} of {len(wins)} knowledge leaves: {'HOLDS' if held else 'DOES NOT HOLD'}; "
          f"load {os.getloadavg()[0]:.1f}")
    if a.json:
        a.json.write_text(json.dumps({"compile_s": compile_s, "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
                                      "steps": phase.global_step, "s_per_step": phase.seconds_per_step,
                                      "losses": losses, "mix_rows": kinds, "nodes": report.nodes,
                                      "claim_holds": held}, indent=2) + "\n")
    sys.exit(0 if held else 1)


if __name__ == "__main__":
    main()
