"""`kdc train` and `kdc eval`: thin click wrappers over compiler.train.trainer and compiler.train.evaluate."""

from __future__ import annotations

import os
from pathlib import Path

import click

from compiler.errors import ConfigError


def _phases(value: str) -> tuple[int, ...]:
    try:
        phases = tuple(int(p) for p in value.split(",") if p.strip())
    except ValueError:
        phases = ()
    if not phases or any(p not in (1, 2) for p in phases):
        raise ConfigError(f"--phases takes 1, 2 or 1,2 (got {value!r})")
    return phases


@click.command()
@click.argument("build_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for checkpoints, the trained model(s) and the model card.")
@click.option("--model", default=None, metavar="M",
              help="Student: a local Hugging Face model folder. Default: the embedded Gemma 3 270M.")
@click.option("--method", type=click.Choice(["lora", "full"]), default="lora", show_default=True)
@click.option("--phases", default="1,2", show_default=True,
              help="Phases to run: 1 (knowledge mix), 2 (skills mix, from phase 1's result) or 1,2.")
@click.option("--epochs", type=float, multiple=True, metavar="E",
              help="Epochs; once for every phase or twice (phase 1, phase 2). Default: 3 and 3.")
@click.option("--lr", "learning_rates", type=float, multiple=True, metavar="LR",
              help="Learning rate; once or twice. Default: LoRA 2e-4 then 7e-5; full 5e-5 then 1.5e-5.")
@click.option("--batch-size", type=int, default=None, help="Per device. Default: 2.")
@click.option("--grad-accum", type=int, default=None,
              help="Gradient accumulation steps. Default: 4 on a GPU, 1 on CPU.")
@click.option("--max-steps", type=int, default=None, help="Stop each phase after N steps (quick runs).")
@click.option("--max-length", type=int, default=None,
              help="Tokens per packed sequence. Default: 1024 on a GPU, 512 on CPU.")
@click.option("--packing/--no-packing", default=True, show_default=True)
@click.option("--lora-r", type=int, default=16, show_default=True)
@click.option("--lora-alpha", type=int, default=32, show_default=True)
@click.option("--merge/--no-merge", default=True, show_default=True,
              help="LoRA: also save merged weights (phase 2 then trains a new adapter on them); "
                   "--no-merge continues one adapter through both phases.")
@click.option("--save-steps", type=int, default=50, show_default=True, help="Checkpoint every N steps.")
@click.option("--resume", is_flag=True, help="Continue a run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option("--gradient-checkpointing", is_flag=True, help="Trade speed for memory (larger students).")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--report-to", default="none", show_default=True, help="Trainer integration: tensorboard, wandb...")
def train(build_dir, out_dir, model, method, phases, epochs, learning_rates, batch_size, grad_accum, max_steps,
          max_length, packing, lora_r, lora_alpha, merge, save_steps, resume, overwrite, gradient_checkpointing,
          seed, report_to):
    """Fine-tune a student on BUILD_DIR's mixes: phase 1 knowledge, then phase 2 skills.

    \b
    Examples:
      kdc train build/demo --out build/student --max-steps 20
      kdc train build/demo --out build/student --method full --epochs 2 --lr 3e-5
      accelerate launch --config_file examples/accelerate_fsdp.yaml -m compiler train build/demo --out runs/x
    """
    from compiler.train.trainer import PhaseConfig, TrainConfig, default_phases
    from compiler.train.trainer import train as run_train

    chosen = _phases(phases)
    defaults = default_phases(method)
    settings = {}
    for i, n in enumerate((1, 2)):
        pc = defaults[n]
        settings[n] = PhaseConfig(epochs=_pick(epochs, i, pc.epochs, "--epochs"),
                                  learning_rate=_pick(learning_rates, i, pc.learning_rate, "--lr"),
                                  batch_size=batch_size, grad_accum=grad_accum, warmup=pc.warmup,
                                  scheduler=pc.scheduler, weight_decay=pc.weight_decay)
    config = TrainConfig(model=model, method=method, phases=chosen, phase_settings=settings, max_steps=max_steps,
                         max_length=max_length, packing=packing, lora_r=lora_r, lora_alpha=lora_alpha, merge=merge,
                         save_steps=save_steps, resume=resume, overwrite=overwrite, seed=seed,
                         gradient_checkpointing=gradient_checkpointing, report_to=report_to)
    result = run_train(build_dir, out_dir, config, log=lambda m: click.echo(m, err=True))
    if os.environ.get("RANK", "0") != "0":
        return  # launched on several processes: one summary is enough
    for p in result.phases:
        first = f"{p.losses[0][1]:.3f}" if p.losses else "-"
        last = f"{p.losses[-1][1]:.3f}" if p.losses else "-"
        click.echo(f"phase {p.phase}: {p.rows} rows, {p.global_step} steps, loss {first} -> {last}, "
                   f"{p.seconds_per_step:.2f} s/step, {p.tokens_per_second:.0f} tokens/s")
    click.echo(f"model: {result.model_dir}")


def _pick(values: tuple, index: int, default: float, flag: str) -> float:
    if not values:
        return default
    if len(values) > 2:
        raise ConfigError(f"{flag} is given once (all phases) or twice (phase 1, phase 2)")
    return values[min(index, len(values) - 1)]


@click.command(name="eval")
@click.argument("build_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", required=True, metavar="M",
              help="The tuned model: a `kdc train --out` folder, a model folder or an adapter folder.")
@click.option("--base", default=None, metavar="B",
              help="The model to compare with. Default: the student M was trained from.")
@click.option("--judge", default=None, metavar="J", help="litellm model for a pairwise verdict (e.g. openai/gpt-4o).")
@click.option("--judge-api-base", default=None, help="OpenAI-compatible endpoint of the judge.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the JSON report. Default: BUILD_DIR/eval.json.")
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--limit", type=int, default=None, help="At most N held-out questions per node.")
@click.option("--dtype", type=click.Choice(["auto", "bfloat16", "float32", "float16"]), default="auto",
              show_default=True, help="auto: bf16 on CPU and on GPUs that support it.")
@click.option("--mode", type=click.Choice(["closed-book", "open-book", "raft"]), default="closed-book",
              show_default=True, help="How knowledge leaves are asked: the question alone, with its context, "
                                      "or its context among other leaves' contexts. Skills: as trained.")
@click.option("--forgetting/--no-forgetting", default=True, show_default=True,
              help="Also score the skills with the phase-1 (knowledge) model of a `kdc train` run.")
def eval_(build_dir, model, base, judge, judge_api_base, out, max_new_tokens, batch_size, limit, dtype, mode,
          forgetting):
    """Answer BUILD_DIR's held-out seeds with the base and the tuned model; score them per node.

    \b
    Example:
      kdc eval build/demo --model build/student
    """
    from compiler.train.evaluate import Judge, evaluate

    report = evaluate(build_dir, model, base=base, judge=Judge(judge, judge_api_base) if judge else None,
                      max_new_tokens=max_new_tokens, batch_size=batch_size, limit=limit, dtype=dtype, mode=mode,
                      forgetting=forgetting, out=out,
                      log=lambda m: click.echo(m, err=True))
    _print_table(report)
    click.echo(f"report: {out or Path(build_dir) / 'eval.json'}")


def _print_table(report) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(block, metric):
        return "-" if not block else f"{block[metric]:.3f}"

    def delta(block, metric):
        if not block:
            return "-"
        v = block[metric]
        return f"[green]{v:+.3f}[/]" if v > 0 else f"[red]{v:+.3f}[/]" if v < 0 else f"{v:+.3f}"

    table = Table(title=f"held-out seeds: tuned vs base (ROUGE-L, token F1); knowledge {report.settings['mode']}")
    for col in ("node", "n", "ROUGE-L base", "ROUGE-L tuned", "Δ", "F1 base", "F1 tuned", "Δ", "judge win"):
        table.add_column(col, justify="left" if col == "node" else "right")
    for row in [*report.nodes, {"node_id": "[bold]overall (macro)[/]", **report.overall}]:
        j = row.get("judge")
        table.add_row(row["node_id"], str(row["n"]), fmt(row["base"], "rouge_l"), fmt(row["tuned"], "rouge_l"),
                      delta(row["delta"], "rouge_l"), fmt(row["base"], "f1"), fmt(row["tuned"], "f1"),
                      delta(row["delta"], "f1"), "-" if not j else f"{j['win_rate']:.2f}")
    Console().print(table)
    f = report.forgetting
    if f and f["delta"]:
        Console().print(f"forgetting (skills, base -> after the knowledge phase): ROUGE-L "
                        f"{delta(f['delta'], 'rouge_l')}, F1 {delta(f['delta'], 'f1')}")
