"""`kdc report` and `kdc review`: thin wrappers over compiler.report.card, compiler.report.html,
compiler.review.sheet and compiler.review.apply."""

from __future__ import annotations

from pathlib import Path

import click

BUILD_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command()
@click.argument("build_dir", type=BUILD_DIR)
def report(build_dir: Path) -> None:
    """Write BUILD_DIR/report.html (plots, the taxonomy tree, samples) and BUILD_DIR/README.md
    (the dataset card) from a build directory."""
    from compiler.report.card import write_card
    from compiler.report.html import write_report

    click.echo(f"wrote {write_card(build_dir)}")
    click.echo(f"wrote {write_report(build_dir)}")


@click.command()
@click.argument("build_dir", type=BUILD_DIR)
@click.option("--apply", "apply_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Apply a filled review sheet instead of drawing one.")
@click.option("--share", type=float, default=0.1, show_default=True,
              help="Share of each node's samples to draw (at least one per node).")
@click.option("--seed", type=int, default=None, help="Sampling seed [default: the build's seed].")
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx", "jsonl"]), default="csv", show_default=True,
              help="csv for any spreadsheet; xlsx (a workbook: provenance locked, verdict drop-down); jsonl.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the sheet [default: BUILD_DIR/reviews/sheet-seed<N>.<format>].")
@click.option("--reviewer", help="Drawing: put in the sheet's reviewer column. Applying: the reviewer of rows "
              "whose reviewer column is blank [default: your user name].")
def review(build_dir: Path, apply_file: Path | None, share: float, seed: int | None, fmt: str,
           out: Path | None, reviewer: str | None) -> None:
    """Human spot checks: draw a seeded sample of every node into a review sheet, or --apply a
    filled one (verdict: accept, reject or edit; blank rows are not reviewed)."""
    from compiler.review.apply import apply_sheet
    from compiler.review.sheet import draw_sheet

    if apply_file is None:
        path = draw_sheet(build_dir, share=share, seed=seed, reviewer=reviewer, fmt=fmt, out=out)
        click.echo(f"wrote {path}")
        click.echo("fill the verdict column (accept, reject or edit; edits go in edited_*; say why), "
                   f"then run: kdc review {build_dir} --apply {path}")
        return
    res = apply_sheet(build_dir, apply_file, reviewer=reviewer)
    if not (res.accepted or res.rejected or res.edited):
        done = f"{res.already} verdicts already applied, " if res.already else "no verdicts, "
        click.echo(f"{apply_file}: {done}{res.unreviewed} blank rows; nothing changed")
        return
    click.echo(f"applied {apply_file}: {res.accepted} accepted, {res.edited} edited, {res.rejected} rejected "
               f"({res.unreviewed} not reviewed)")
    for node_id in res.flagged:
        r = res.nodes[node_id]
        click.secho(f"flagged: {node_id}: {r['rejected']} of {r['reviewed']} reviewed samples rejected",
                    fg="yellow")
    cal = res.calibration
    if cal and cal["compared"]:
        kept = cal["confusion"]["judge_kept"]
        click.echo(f"judge vs review on {cal['compared']} judged samples: agreement {cal['agreement']:.0%} "
                   f"(judge kept, experts: {kept['accept']} accepted, {kept['edit']} edited, {kept['reject']} rejected)")
        for d in cal["disagreements"][:20]:
            scores = ", ".join(f"{r} {v}" for r, v in sorted(d["judge"].items()))
            click.echo(f"  judge kept, expert rejected: {d['id']} ({d['node_id']}; {scores}) {d['why']}".rstrip())
    if res.rejected:
        click.echo(f"run `kdc compile --out {build_dir}` again to top the rejected samples up")
