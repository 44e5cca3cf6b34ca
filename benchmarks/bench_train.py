"""Training speed of the embedded student on this machine: seconds per optimizer step and tokens per
second for LoRA and full fine-tuning, through the same SFTTrainer set-up `kdc train` uses.

    python benchmarks/bench_train.py                      # LoRA and full, 6 steps each, kdc's defaults here
    python benchmarks/bench_train.py --methods lora --steps 10 --threads 1 --json out.json
    python benchmarks/bench_train.py --methods lora --trl-head --bf16 off   # what the fixes replaced

The rows are the example taxonomy's seed examples in chat form (real text, no teacher needed). Each
method runs in a fresh process (clean peak-memory figures); the first step (warm-up, allocation) is
excluded from the timings. Reported: mean and median s/step, tokens/s (all tokens of the batch, padding
excluded), trainable parameters, process peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def seed_rows(taxonomy: Path) -> list[dict]:
    from compiler.taxonomy.tree import load_taxonomy
    rows = []
    tax = load_taxonomy(taxonomy)
    for leaf in tax.leaves():
        for seed in leaf.seeds():
            user = f"{seed.context}\n\n{seed.question}" if seed.context else seed.question
            answer = f"1. Recall the facts.\n\nAnswer: {seed.answer}"
            rows.append({"messages": [{"role": "system", "content": f"You are an expert in {leaf.node_id}."},
                                      {"role": "user", "content": user}, {"role": "assistant", "content": answer}]})
    return rows


def run_one(method: str, steps: int, batch: int, length: int, packing: bool, threads: int | None,
            model: str | None, grad_accum: int = 1, bf16: bool = False, compact: bool = True) -> dict:
    import resource

    import torch
    from transformers import TrainerCallback

    from compiler.train.student import resolve_student
    from compiler.train.trainer import PhaseConfig, TrainConfig, make_trainer

    load_start = round(os.getloadavg()[0], 2)
    if threads:
        torch.set_num_threads(threads)
    student = resolve_student(model)
    rows = seed_rows(ROOT / "taxonomy")
    pc = PhaseConfig(epochs=1, learning_rate=1e-4 if method == "lora" else 2e-5, batch_size=batch,
                     grad_accum=grad_accum)
    config = TrainConfig(model=str(student), method=method, max_steps=steps, max_length=length, packing=packing,
                         phase_settings={1: pc}, save_steps=10**6, logging_steps=1, bf16=bf16, compact_head=compact)
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not stamps:
                stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())
            tokens.append(trainer._total_train_tokens)

    tokens: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        phase = make_trainer(1, rows, student, student, Path(tmp), config)
        trainer = phase.trainer
        trainer.add_callback(Clock())
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        trainer.train()
    per_step = [b - a for a, b in zip(stamps[1:], stamps[2:])]  # step 2..n: the first is warm-up
    tok_timed = tokens[-1] - tokens[0]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"method": method, "steps_timed": len(per_step), "batch": batch, "grad_accum": grad_accum,
            "max_length": length, "bf16": bf16, "compact_head": compact,
            "packing": packing, "threads": torch.get_num_threads(),
            "s_per_step_mean": round(statistics.mean(per_step), 3),
            "s_per_step_median": round(statistics.median(per_step), 3),
            "tokens_per_step": round(tok_timed / max(len(per_step), 1), 1),
            "tokens_per_s": round(tok_timed / sum(per_step), 1),
            "trainable_params": trainable, "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "load_avg_1m": load_start, "load_avg_end": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=None, help="default: kdc's for this device")
    ap.add_argument("--grad-accum", type=int, default=None, help="default: kdc's for this device")
    ap.add_argument("--max-length", type=int, default=None, help="default: kdc's for this device")
    ap.add_argument("--no-packing", action="store_true", help="one row per sequence (kdc packs by default)")
    ap.add_argument("--bf16", choices=["auto", "on", "off"], default="auto", help="auto: kdc's default")
    ap.add_argument("--trl-head", action="store_true", help="TRL's own fused head (scores every position)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--model", default=None, help="a local HF model folder (default: the embedded student)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one method in this process
    a = ap.parse_args()
    if a.one:
        from compiler.train.trainer import device_defaults
        dev = device_defaults()
        bf16 = dev.bf16 if a.bf16 == "auto" else a.bf16 == "on"
        print("RESULT " + json.dumps(run_one(a.one, a.steps, a.batch or dev.batch_size, a.max_length or dev.max_length,
                                             not a.no_packing, a.threads, a.model, a.grad_accum or dev.grad_accum,
                                             bf16, not a.trl_head)))
        return
    results = []
    for method in a.methods.split(","):
        cmd = [sys.executable, __file__, "--one", method] + [x for x in sys.argv[1:] if x != "--one"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or not line:
            sys.exit(f"{method} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[7:]))
        r = results[-1]
        print(f"{method:5s} {r['s_per_step_mean']:7.3f} s/step (median {r['s_per_step_median']:.3f}), "
              f"{r['tokens_per_s']:8.1f} tokens/s, {r['tokens_per_step']:.0f} tokens/step "
              f"(batch {r['batch']} x {r['grad_accum']}, length {r['max_length']}, bf16 {r['bf16']}, "
              f"compact head {r['compact_head']}), trainable {r['trainable_params'] / 1e6:.1f} M, "
              f"loss {r['loss_first']} -> {r['loss_last']}, peak RSS {r['peak_rss_mb'] / 1024:.2f} GiB, "
              f"threads {r['threads']}, load {r['load_avg_1m']} (start) {r['load_avg_end']} (end)")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
