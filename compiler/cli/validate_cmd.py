"""`kdc validate`: options and output only; the checks live in compiler.validate.api."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from compiler.validate.checks import Limits
from compiler.errors import KdcError
from compiler.validate.api import FileResult, Stats, default_cache_dir, summarize, validate_paths


def _default_root() -> Path:
    return Path("taxonomy") if Path("taxonomy").is_dir() else Path(".")


def _display(result: FileResult) -> str:
    """Paths relative to the working directory, as GitHub annotations need (else absolute)."""
    if result.abs_path is None:
        return result.path
    rel = os.path.relpath(result.abs_path)
    return str(result.abs_path) if rel.startswith("..") else rel


def _auto_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


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
        code = _run(paths, root, strict, fmt, changed_since, fetch, no_cache, jobs,
                    Limits(max_context_words, max_qa_words, max_skill_words, near_dup_threshold), allow_repo)
    except KdcError as exc:
        click.secho(f"error: {exc.located()}", fg="red", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        code = exc.exit_code
    sys.exit(code)


def _run(paths, root, strict, fmt, changed_since, fetch, no_cache, jobs, limits: Limits, allow_repo=()) -> int:
    from compiler.validate import output as out

    started = time.perf_counter()
    if root is None:
        root = _default_root()
        dirs = [p for p in paths if p.is_dir()]
        outside = [p for p in paths if os.path.relpath(os.path.abspath(p), os.path.abspath(root)).startswith("..")]
        if len(paths) == 1 and dirs and outside:  # `kdc validate some/other/taxonomy`
            root = paths[0]
    targets = list(paths) or [root]
    if changed_since:
        from compiler.validate.changed import changed_files

        changed, base = changed_files(changed_since, root)
        wanted = [Path(os.path.abspath(t)) for t in targets]
        targets = [c for c in changed if any(_under(c, w) for w in wanted)]
        if not targets:
            click.echo(f"no qna.yaml file added or changed since {changed_since} (merge base {base[:12]}): "
                       "nothing to validate", err=True)
            if fmt == "json":
                click.echo(out.as_json([], summarize([]), _display))
            return 0
    stats = Stats()
    results = validate_paths(targets, root=root, strict=strict, limits=limits, fetch=fetch,
                             cache_dir=None if no_cache else default_cache_dir(), jobs=jobs or _auto_jobs(),
                             stats=stats, allow_repos=tuple(allow_repo))
    summary = summarize(results, stats)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    if not results:
        click.echo(f"no qna.yaml files found in {', '.join(str(t) for t in targets)}", err=True)
    if fmt == "json":
        click.echo(out.as_json(results, summary, _display))
    elif fmt == "github":
        for line in out.github(results, _display):
            click.echo(line)
        click.echo(out.summary_line(summary))
    else:
        def style(text: str, severity: str) -> str:
            return click.style(text, fg="red" if severity == "error" else "yellow", bold=severity == "error")

        for line in out.human(results, _display, style):
            click.echo(line)
        click.echo(out.summary_line(summary))
    return 0 if all(r.valid for r in results) else 1


def _under(path: Path, folder: Path) -> bool:
    if path == folder:
        return True
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False

