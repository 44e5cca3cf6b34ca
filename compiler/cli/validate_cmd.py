"""`kdc validate`: options and output only; the checks live in compiler.validate.api."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from compiler.validate.checks import Limits
from compiler.errors import KdcError
from compiler.cli.validate_run import run


@click.command(name="validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Taxonomy root (default: ./taxonomy if it exists, else .). Relative document repos resolve here.")
@click.option("--strict", is_flag=True, help="Make the extra checks (sizes, duplicates, attribution, documents) errors.")
@click.option("--format", "fmt", type=click.Choice(["human", "github", "json"]), default="human", show_default=True,
              help="human lines, GitHub Actions annotations, or JSON.")
@click.option("--changed-since", "changed_since", metavar="REF",
              help="Only qna files added or changed since the merge base with REF, plus uncommitted and untracked ones.")
@click.option("--fetch", is_flag=True, help="Clone or update remote knowledge document repos (network) to check them.")
@click.option("--allow-repo", "allow_repo", multiple=True, metavar="PREFIX",
              help="Also accept document repos under this folder or URL prefix (repeatable); see README Security.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the per-file result cache.")
@click.option("--jobs", "-j", type=click.IntRange(min=0), default=0, show_default=True,
              help="Worker processes (0: one per available core).")
@click.option("--max-context-words", type=click.IntRange(min=1), default=Limits.context_words, show_default=True,
              help="Words in one context.")
@click.option("--max-qa-words", type=click.IntRange(min=1), default=Limits.qa_words, show_default=True,
              help="Words in one question + answer.")
@click.option("--max-skill-words", type=click.IntRange(min=1), default=Limits.skill_words, show_default=True,
              help="Words in all of a skill's seed examples together.")
@click.option("--near-dup-threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=Limits.near_dup,
              show_default=True, help="Similarity (MinHash Jaccard of word bigrams) from which seeds are near-duplicates.")
def validate(paths, root, strict, fmt, changed_since, fetch, allow_repo, no_cache, jobs, max_context_words, max_qa_words,
             max_skill_words, near_dup_threshold) -> None:
    """Lint and schema-check taxonomy qna.yaml files (InstructLab-compatible verdicts).

    PATHS are files or folders (default: the taxonomy root). Exit status: 0 when every file is
    valid, 1 when any is not, 2 on a usage error."""
    try:
        code = run(paths, root, strict, fmt, changed_since, fetch, no_cache, jobs,
                   Limits(max_context_words, max_qa_words, max_skill_words, near_dup_threshold), allow_repo,
                   echo=click.echo, style=_style)
    except KdcError as exc:
        click.secho(f"error: {exc.located()}", fg="red", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        code = exc.exit_code
    sys.exit(code)


def _style(text: str, severity: str) -> str:
    return click.style(text, fg="red" if severity == "error" else "yellow", bold=severity == "error")
