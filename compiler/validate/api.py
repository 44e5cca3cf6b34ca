"""`kdc validate`: InstructLab-compatible verdicts on taxonomy files, located and explained.

Default mode gives the reference's accept/reject verdict (instructlab-schema 0.4.2, each file
checked against the version it declares); the checks the reference lacks (sizes, duplicate
seeds, attribution.txt, documents) are warnings, errors with `strict`. Per-file results are
cached by content hash and computed on all cores: a contributor's CI answers in seconds.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

from compiler.errors import UsageError
from compiler.io.names import name_problems, safe_display
from compiler.io.yamlload import YamlLoadError, read_bytes
from compiler.records import Problem
from compiler.taxonomy.tree import walk
from compiler.validate import cache
from compiler.validate.cache import default_cache_dir
from compiler.validate.checks import Limits
from compiler.validate.crossfile import cross_file_checks
from compiler.validate.model import FileResult, Job, Options, Stats, Target
from compiler.validate.perfile import check_file_bytes, problem

POOL_MIN_FILES = 24  # below this, forking workers costs more than it saves


# ---------------------------------------------------------------- discovery

def _rel_to(path: Path, root: Path) -> str | None:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def _display(path: Path, root: Path) -> str:
    rel = _rel_to(path, root)
    return rel if rel is not None else str(path)


def _collect(paths: list[Path], root: Path) -> tuple[list[Target], list[FileResult]]:
    targets: list[Target] = []
    walk_results: list[FileResult] = []
    root_abs = Path(os.path.abspath(root))
    for p in paths:
        p_abs = Path(os.path.abspath(p))
        if p_abs.is_dir():
            files, problems = walk(p_abs)
            base = _display(p_abs, root_abs)
            prefix = "" if base in ("", ".") else base + "/"
            for f in files:
                targets.append(Target(p_abs / f.rel, prefix + f.rel))
            for wp in problems:
                rel = prefix + wp.rel
                walk_results.append(FileResult(rel, False, [Problem(rel, 1, 1, "error", wp.rule, wp.message, wp.hint)],
                                               p_abs / wp.rel))
        elif p_abs.exists() or p_abs.is_symlink():
            targets.append(Target(p_abs, _display(p_abs, root_abs)))
        else:
            raise UsageError(f"{p} does not exist", hint="give files or folders of the taxonomy")
    seen: set[str] = set()
    unique = []
    for t in targets:
        if t.rel not in seen:
            seen.add(t.rel)
            unique.append(t)
    return unique, walk_results


# ---------------------------------------------------------------- running

def _read(job: Job, root_abs: Path, root_real: Path) -> None:
    t = job.target
    real = job.real = Path(os.path.realpath(t.abs_path))
    if _rel_to(t.abs_path, root_abs) is not None and _rel_to(real, root_real) is None:
        job.outcome = {"problems": [problem(1, 1, "error", "path-escapes-root",
                                             "symlink points outside the taxonomy root",
                                             "taxonomy files must live inside the taxonomy; copy the file in")]}
        return
    try:
        job.raw = read_bytes(real)
    except YamlLoadError as exc:
        job.load_issue = exc.issue
    except OSError as exc:
        rule = "symlink-loop" if exc.errno == errno.ELOOP else "unreadable-path"
        job.outcome = {"problems": [problem(1, 1, "error", rule, f"cannot read the file: {exc.strerror or exc}",
                                             "check the path and its permissions")]}


def _work(args: tuple) -> dict:
    raw, name, abs_parts, rel, opts, load_issue, cache_dir, key = args
    outcome = check_file_bytes(raw, name, abs_parts, rel, opts, load_issue)
    if cache_dir is not None and key is not None and not any(p[3] == "internal-error" for p in outcome["problems"]):
        cache.put(cache_dir, key, outcome)
    return outcome


def _warm_up() -> None:
    """Import and build what every worker needs once, before forking."""
    from compiler.validate import checks, lint, schemacheck

    for fam, ver in (("skill", 1), ("skill", 2), ("skill", 3), ("knowledge", 3)):
        schemacheck._fast(fam, ver)
    lint._config(lint.REFERENCE_CONFIG)
    checks._permutations()


def _run_jobs(jobs: list[Job], opts: Options, cache_dir: Path | None, workers: int) -> None:
    todo = [j for j in jobs if j.outcome is None]
    args = [(j.raw, j.target.abs_path.name, (j.real or j.target.abs_path).parts, j.target.rel, opts,
             j.load_issue, cache_dir, j.key) for j in todo]
    if workers > 1 and len(todo) >= POOL_MIN_FILES and sys.platform.startswith("linux"):
        import multiprocessing

        _warm_up()
        with multiprocessing.get_context("fork").Pool(min(workers, len(todo))) as pool:
            outcomes = pool.map(_work, args, chunksize=max(1, len(todo) // (workers * 8)))
    else:
        outcomes = [_work(a) for a in args]
    for j, o in zip(todo, outcomes):
        j.outcome = o


def validate_paths(paths: list[Path], *, root: Path, strict: bool = False, limits: Limits | None = None,
                   fetch: bool = False, cache_dir: Path | None = None, jobs: int = 1,
                   stats: Stats | None = None, allow_repos: tuple[str, ...] = ()) -> list[FileResult]:
    """Validate files and folders (folders: every qna-like file below). Raises UsageError for a
    path that does not exist; every problem with the files themselves is a located Problem."""
    opts = Options(strict=strict, limits=limits or Limits(), fetch=fetch, allow_repos=tuple(allow_repos))
    stats = stats if stats is not None else Stats()
    root_abs = Path(os.path.abspath(root))
    targets, results = _collect([Path(p) for p in paths], root_abs)
    jobs_ = [Job(t) for t in targets]
    root_real = Path(os.path.realpath(root_abs))
    for j in jobs_:
        _read(j, root_abs, root_real)
        if j.raw is not None and cache_dir is not None:
            j.key = cache.key(j.raw, j.target.abs_path.name, j.real.parts, j.target.rel, opts.token())
            j.outcome = cache.get(cache_dir, j.key)
            stats.cache_hits += j.outcome is not None
    _run_jobs(jobs_, opts, cache_dir, jobs)
    stats.files = len(jobs_) + len(results)
    extra_by_rel = cross_file_checks(jobs_, root_abs, opts, stats)
    for j in jobs_:
        o = j.outcome or {"problems": []}
        rel = j.target.rel
        problems = [Problem(rel, *p) for p in o["problems"]] + extra_by_rel.get(rel, [])
        problems += [Problem(rel, 1, 1, "error", *np) for np in name_problems(rel)]
        results.append(_result(rel, problems, j.target.abs_path, o.get("kind"), o.get("version")))
    results = [_printable(r) for r in results]
    results.sort(key=lambda r: r.path)
    return results


def validate_tree(root: Path, *, strict: bool = False, **kwargs: Any) -> list[FileResult]:
    """Every qna-like file under root (the compile stage runs this before it builds anything)."""
    return validate_paths([Path(root)], root=Path(root), strict=strict, **kwargs)


def _printable(r: FileResult) -> FileResult:
    """A path that cannot be printed (undecodable bytes, control characters) shown escaped."""
    shown = safe_display(r.path)
    if shown == r.path:
        return r
    problems = [Problem(shown, p.line, p.column, p.severity, p.rule, p.message, p.hint) for p in r.problems]
    return FileResult(shown, r.valid, problems, None, r.kind, r.version)


def _result(rel: str, problems: list[Problem], abs_path: Path | None, kind: str | None, version: Any) -> FileResult:
    problems.sort(key=lambda p: (p.line, p.column, p.severity != "error", p.rule))
    return FileResult(rel, not any(p.severity == "error" for p in problems), problems, abs_path, kind,
                      version if isinstance(version, int) else None)


# ---------------------------------------------------------------- summary

def summarize(results: list[FileResult], stats: Stats | None = None) -> dict[str, int]:
    errors = sum(1 for r in results for p in r.problems if p.severity == "error")
    warnings = sum(1 for r in results for p in r.problems if p.severity == "warning")
    out = {"files": len(results), "valid": sum(r.valid for r in results),
           "invalid": sum(not r.valid for r in results), "errors": errors, "warnings": warnings}
    if stats is not None:
        out.update(cache_hits=stats.cache_hits, documents_checked=stats.documents_checked,
                   documents_unchecked=stats.documents_unchecked)
    return out


__all__ = ["FileResult", "Options", "Stats", "validate_paths", "validate_tree", "summarize", "default_cache_dir",
           "check_file_bytes"]
