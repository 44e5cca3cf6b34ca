"""`kdc compile`: options -> CompileConfig -> compiler.compile.build; progress on the terminal."""

from __future__ import annotations

import atexit
import gc
import json
import logging
import sys
import time
from pathlib import Path

import click

from compiler.compile.progress import NodeProgress, Progress
from compiler.io.buildrecords import MANIFEST

# At exit the interpreter's last collection walks every object a compile left (~430k after a
# 1,000-sample build): seconds on a loaded machine, after the build is written. Frozen first, they
# are skipped (the process is ending; nothing leaks). Registered when this command is loaded.
atexit.register(gc.freeze)


@click.command("compile")
@click.argument("taxonomy", required=False, default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              help=f"Build folder (nodes/, mixes/, {MANIFEST}).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Settings file (default: TAXONOMY/kdc.yaml).")
@click.option("--teacher", help="litellm model string, e.g. openai/gpt-4o-mini, hosted_vllm/<model>, "
                                "ollama/llama3.1, anthropic/<model>. Default: the embedded kdc/gemma3-270m.")
@click.option("--api-base", "api_base", multiple=True,
              help="Teacher endpoint; repeat it to balance requests across several servers.")
@click.option("--concurrency", type=click.IntRange(min=1), help="Teacher requests in flight.")
@click.option("--transport", type=click.Choice(["auto", "http", "litellm"]),
              help="Who makes the HTTP calls: auto (kdc's own client for openai/ and hosted_vllm/ models "
                   "with --api-base, else litellm), http or litellm.")
@click.option("--teacher-workers", type=click.IntRange(min=1),
              help="Processes making the teacher calls (default: one per 16 requests in flight, up to the cores).")
@click.option("--samples-per-node", type=click.IntRange(min=1), help="Accepted samples per leaf.")
@click.option("--seed", type=int, help="Seed for splits, few-shot draws, diversity and sampling.")
@click.option("--timeout", type=click.FloatRange(min=0.1), help="Seconds per teacher request.")
@click.option("--max-retries", type=click.IntRange(min=0), help="Retries per request on 429/5xx/timeouts.")
@click.option("--max-cost", type=click.FloatRange(min=0), help="Hard cap on teacher spend, in USD.")
@click.option("--judge", help="litellm model string of an LLM judge gate (default: the teacher, unless embedded).")
@click.option("--no-judge", is_flag=True, help="No LLM judge gate, not even the teacher judging itself.")
@click.option("--fetch", is_flag=True, default=None,
              help="Clone or update remote knowledge document repos (the only network use besides the teacher).")
@click.option("--allow-repo", "allow_repo", multiple=True, metavar="PREFIX",
              help="Also accept document repos under this folder or URL prefix (repeatable); see README Security.")
@click.option("--trust-config", is_flag=True,
              help="Let the taxonomy's own kdc.yaml set endpoints, key variables, out, allow_repos and fetching.")
@click.option("--batch", is_flag=True, default=None,
              help="Send each round's requests through the provider's batch API (about half price, slower); "
                   "resumes a submitted batch after a restart.")
@click.option("--batch-poll", type=click.FloatRange(min=0.001), help="Seconds between batch status checks (default 30).")
@click.option("--dry-run", is_flag=True, help="Show the plan (leaves, requests, tokens, cost); send nothing.")
@click.option("--fail-on-shortfall", is_flag=True, default=None,
              help="Exit with status 3 when a node misses its quota.")
@click.option("--keep-going", is_flag=True,
              help="Compile every leaf that can be; leaves whose documents fail go under `broken` in "
                   f"{MANIFEST}, and the exit status is 4.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest totals (or the plan) as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.option("--profile", "profile_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the run's phase timings (import, plan, generation, gating, writing, report) as JSON here.")
def compile_(taxonomy: Path, out, config_file, teacher, api_base, concurrency, transport, teacher_workers, samples_per_node,
             seed, timeout, max_retries, max_cost, judge, no_judge, fetch, allow_repo, trust_config, batch, batch_poll, dry_run,
             fail_on_shortfall, keep_going, as_json, quiet, profile_file):
    """Compile TAXONOMY into per-node datasets, SFT mixes and a manifest in --out."""
    from compiler.compile.profile import NULL, Profile

    profile = Profile() if profile_file else NULL
    from compiler.config import load_config

    _setup_logging()
    cli = {"out": out, "teacher": teacher, "api_base": api_base, "concurrency": concurrency,
           "teacher_workers": teacher_workers, "transport": transport,
           "samples_per_node": samples_per_node, "seed": seed, "timeout": timeout, "max_retries": max_retries,
           "max_cost": max_cost, "judge": "" if no_judge else judge, "dry_run": dry_run or None, "fail_on_shortfall": fail_on_shortfall,
           "fetch_documents": fetch, "allow_repos": allow_repo, "batch": batch, "batch_poll": batch_poll}
    with profile.phase("config"):
        cfg = load_config(taxonomy, config_file, cli, trust=trust_config)
    verdict = None
    if Path(cfg.taxonomy).is_dir():  # the taxonomy's check, in a child on the other core from now on
        from compiler.compile.verdict import Verdict

        verdict = Verdict(cfg.taxonomy, tuple(cfg.allow_repos))
    progress: Progress = Progress() if quiet or dry_run else (
        RichProgress() if sys.stderr.isatty() else LogProgress())
    try:
        with profile.phase("import"):  # the build's stack, which the CLI did not need to import
            from compiler.compile.build import compile_taxonomy
        result = compile_taxonomy(cfg, progress, keep_going=keep_going, profile=profile, verdict=verdict)
    finally:
        if verdict is not None:
            verdict.close()  # no child outlives a compile that failed before reading it
        if profile_file:
            profile.write(profile_file)
    if result.dry_run:
        if as_json:
            click.echo(json.dumps(result.manifest, indent=2))
        else:
            _print_plan(result.manifest)
        return 0
    m = result.manifest
    if as_json:
        click.echo(json.dumps(m["totals"], indent=2))
    else:
        _print_summary(m, result.out)
    if result.teacher_unavailable:
        click.secho(f"error: the teacher stopped answering; see `stopped` in {MANIFEST}. "
                    "Re-run the same command to resume.", fg="red", err=True)
        return 1
    for node_id, b in result.manifest.get("broken", {}).items():
        click.secho(f"error: {b['error']}", fg="red", err=True)
    if result.manifest.get("broken"):
        click.echo(f"hint: {len(result.manifest['broken'])} broken leaf/leaves were skipped (`broken` in "
                   f"{MANIFEST}); the others were compiled", err=True)
        return 4
    if result.shortfall and cfg.fail_on_shortfall:
        return 3
    return 0


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def _setup_logging() -> None:
    root = logging.getLogger("kdc")
    if not root.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False


def _print_plan(plan: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=180)  # logs and pipes: do not squeeze node ids into 80 columns
    table = Table(title=f"kdc compile --dry-run  (teacher {plan['teacher']})")
    for col in ("node", "kind", "target", "max requests", "seeds train/eval", "chunks", "est. prompt tok",
                "est. completion tok", "est. cost $", "shared prefix"):
        table.add_column(col, justify="left" if col in ("node", "kind") else "right", no_wrap=col == "node")
    for node_id, n in plan["nodes"].items():
        cost = "unknown" if n["est_cost_usd"] is None else f"{n['est_cost_usd']:.4f}"
        table.add_row(node_id, n["kind"], str(n["target"]), str(n["max_requests"]),
                      f"{n['train_seeds']}/{n['eval_seeds']}", str(n["chunks"]), f"{n['est_prompt_tokens']:,}",
                      f"{n['est_completion_tokens']:,}", cost, f"{n.get('prompt_prefix_share', 0):.0%}")
    t = plan["totals"]
    cost = "unknown" if t["cost_usd"] is None else f"{t['cost_usd']:.4f}"
    table.add_row("total", "", str(t["target"]), str(t["max_requests"]), "", "", f"{t['prompt_tokens']:,}",
                  f"{t['completion_tokens']:,}", cost, style="bold")
    console.print(table)
    if plan.get("batch"):
        b = plan["batch"]
        cost = "unknown" if b["cost_usd"] is None else f"{b['cost_usd']:.4f}"
        console.print(f"with --batch: est. cost $ {cost} ({b['basis']}); the judge and augmentation views stay live")
    console.print("shared prefix: the share of a leaf's prompt characters common to all its requests "
                  "(what a provider's prompt cache reuses)")
    if plan.get("max_cost") is not None:
        verdict = "over" if plan["over_max_cost"] else "within"
        console.print(f"estimated cost is {verdict} --max-cost {plan['max_cost']}; the real run stops at the cap")


def _print_summary(m: dict, out: Path) -> None:
    t = m["totals"]
    click.echo(f"compiled {len(m['nodes'])} node(s) into {out}: {t['accepted']}/{t['target']} accepted, "
               f"{t['rejected']} rejected, shortfall {t['shortfall']}; teacher calls {t['teacher_calls']}, "
               f"cache hits {t['cache_hits']}; tokens {t['tokens']['prompt']:,}+{t['tokens']['completion']:,}; "
               f"cost " + ("unknown" if t["cost_usd"] is None else f"${t['cost_usd']:.4f}"), err=True)
    for node_id, n in m["nodes"].items():
        if n["shortfall"]:
            reasons = ", ".join(f"{k} {v}" for k, v in n["rejected"].items()) or "none"
            click.secho(f"  shortfall {node_id}: {n['accepted']}/{n['target']} (stopped: {n['stopped']}; "
                        f"rejected: {reasons})", fg="yellow", err=True)


class RichProgress(Progress):
    """Overall and per-node bars: accepted/target, rejections, failures, tokens, ETA."""

    def start(self, nodes: list[NodeProgress]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RP, TextColumn, TimeRemainingColumn

        self.rp = RP(TextColumn("{task.description}", justify="left"), BarColumn(bar_width=24),
                     MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                     transient=False, refresh_per_second=4, console=Console(stderr=True))
        self.nodes = {n.node_id: n for n in nodes}
        self.total = self.rp.add_task("[bold]all nodes", total=sum(n.target for n in nodes), info="")
        self.ids = {n.node_id: self.rp.add_task(_short(n.node_id), total=n.target, info="") for n in nodes}
        self.rp.start()

    def update(self, node: NodeProgress) -> None:
        self.rp.update(self.ids[node.node_id], completed=node.accepted,
                       info=f"rej {node.rejected} fail {node.failures} tok {node.tokens:,}"
                            + (f" ({node.in_flight} pending)" if node.in_flight else ""))
        nodes = self.nodes.values()
        self.rp.update(self.total, completed=sum(min(n.accepted, n.target) for n in nodes),
                       info=f"rej {sum(n.rejected for n in nodes)} fail {sum(n.failures for n in nodes)} "
                            f"tok {sum(n.tokens for n in nodes):,}")

    def finish(self) -> None:
        self.rp.stop()


class LogProgress(Progress):
    """Plain periodic lines for logs and CI (no TTY)."""

    def __init__(self, every: float = 10.0):
        self.every = every
        self.last = 0.0

    def start(self, nodes: list[NodeProgress]) -> None:
        self.nodes = {n.node_id: n for n in nodes}
        self.t0 = time.monotonic()
        click.echo(f"compile: {len(nodes)} node(s), {sum(n.target for n in nodes)} samples to accept", err=True)

    def update(self, node: NodeProgress) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line()

    def _line(self) -> None:
        nodes = list(self.nodes.values())
        click.echo(f"compile: {sum(min(n.accepted, n.target) for n in nodes)}/{sum(n.target for n in nodes)} "
                   f"accepted, {sum(n.rejected for n in nodes)} rejected, {sum(n.failures for n in nodes)} "
                   f"failures, {sum(n.in_flight for n in nodes)} pending, {sum(n.tokens for n in nodes):,} tokens, "
                   f"{time.monotonic() - self.t0:.0f}s", err=True)

    def finish(self) -> None:
        self._line()


def _short(node_id: str, width: int = 44) -> str:
    return node_id if len(node_id) <= width else "…" + node_id[-(width - 1):]
