"""`kdc validate`'s run: paths and options in, results printed, exit status out. Free of click,
so that the fast path (compiler/cli/validate_fast.py) and the click command share it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from compiler.validate.api import FileResult, Stats, default_cache_dir, summarize, validate_paths
from compiler.validate.checks import Limits


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


def run(paths, root, strict, fmt, changed_since, fetch, no_cache, jobs, limits: Limits, allow_repo=(), *,
        echo: Callable[..., None], style: Callable[[str, str], str]) -> int:
    """Validate and print; the exit status. `echo(text, err=False)` and `style(text, severity)`
    print and colour (click's in the click command, plain ones in the fast path)."""
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
            echo(f"no qna.yaml file added or changed since {changed_since} (merge base {base[:12]}): "
                 "nothing to validate", err=True)
            if fmt == "json":
                echo(out.as_json([], summarize([]), _display))
            return 0
    stats = Stats()
    results = validate_paths(targets, root=root, strict=strict, limits=limits, fetch=fetch,
                             cache_dir=None if no_cache else default_cache_dir(), jobs=jobs or _auto_jobs(),
                             stats=stats, allow_repos=tuple(allow_repo))
    summary = summarize(results, stats)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    if not results:
        echo(f"no qna.yaml files found in {', '.join(str(t) for t in targets)}", err=True)
    if fmt == "json":
        echo(out.as_json(results, summary, _display))
    elif fmt == "github":
        for line in out.github(results, _display):
            echo(line)
        echo(out.summary_line(summary))
    else:
        for line in out.human(results, _display, style):
            echo(line)
        echo(out.summary_line(summary))
    return 0 if all(r.valid for r in results) else 1


def _under(path: Path, folder: Path) -> bool:
    if path == folder:
        return True
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False

