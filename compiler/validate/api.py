"""`kdc validate`: InstructLab-compatible verdicts on taxonomy files, located and explained.

Default mode gives the reference's accept/reject verdict (instructlab-schema 0.4.2, each file
checked against the version it declares); the checks the reference lacks (sizes, duplicate
seeds, attribution.txt, documents) are warnings, errors with `strict`. Per-file results are
cached by content hash and computed on all cores: a contributor's CI answers in seconds.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from compiler import __version__
from compiler.validate.checks import Limits, SeedRef
from compiler.errors import UsageError
from compiler.io.names import name_problems, safe_display
from compiler.records import Problem
from compiler.taxonomy.tree import KIND_FOLDERS, QNA, kind_of, walk
from compiler.io.yamlload import YamlLoadError, load_bytes, mark_of, node_at, read_bytes

POOL_MIN_FILES = 24  # below this, forking workers costs more than it saves


@dataclass
class FileResult:
    path: str  # as given / relative to root
    valid: bool  # no error-severity problem
    problems: list[Problem]  # sorted by line, column
    abs_path: Path | None = None
    kind: str | None = None  # records.NodeKind, when the content could be read
    version: int | None = None


@dataclass(frozen=True)
class Options:
    strict: bool = False
    limits: Limits = field(default_factory=Limits)
    fetch: bool = False  # network access for remote knowledge documents
    allow_repos: tuple[str, ...] = ()  # maintainer's --allow-repo prefixes (compiler/io/repopolicy.py)

    @property
    def extra_severity(self) -> str:
        return "error" if self.strict else "warning"

    def token(self) -> str:
        lim = self.limits
        return f"strict={self.strict};ctx={lim.context_words};qa={lim.qa_words};skill={lim.skill_words};near={lim.near_dup}"


@dataclass
class Stats:
    files: int = 0
    cache_hits: int = 0
    documents_checked: int = 0
    documents_unchecked: int = 0


# ---------------------------------------------------------------- per-file checks (cacheable)

def _problem(line: int, col: int, severity: str, rule: str, message: str, hint: str = "") -> list:
    return [line, col, severity, rule, message, hint]


def check_file_bytes(raw: bytes | None, name: str, abs_parts: tuple[str, ...], rel: str, opts: Options,
                     load_issue: Any = None) -> dict:
    """Everything about one file that depends only on its bytes, name, folders and options.

    Returns a JSON-able outcome (cached as is). Never raises for bad input."""
    try:
        return _check(raw, name, abs_parts, rel, opts, load_issue)
    except Exception as exc:  # a bug in kdc must not hide the other files' results
        return {"problems": [_problem(1, 1, "error", "internal-error",
                                      f"kdc could not check this file ({type(exc).__name__}: {exc})",
                                      "please report this as a kdc bug, with the file")]}


def _check(raw, name, abs_parts, rel, opts: Options, load_issue) -> dict:
    from compiler.validate import schemacheck

    extra = opts.extra_severity
    problems: list[list] = []
    out: dict[str, Any] = {"problems": problems}
    if name != QNA:
        problems.append(_problem(1, 1, "error", "file-name",
                                 f'taxonomy files must be named "{QNA}", not "{name}"',
                                 f"rename it: git mv {name} {QNA}"))
    if load_issue is None:
        try:
            loaded = load_bytes(raw)
        except YamlLoadError as exc:
            load_issue = exc.issue
    if load_issue is not None:
        i = load_issue
        problems.append(_problem(i.line, i.column, "error", i.rule, i.message, i.hint))
        return out
    data, root = loaded.data, loaded.node
    if not data:  # the reference only warns about an empty file
        what = "empty" if data is None else f"empty ({json.dumps(data)})"
        problems.append(_problem(1, 1, "error" if opts.strict else "warning", "empty-file", f"the file is {what}",
                                 "write version, created_by, task_description (or domain) and seed_examples"))
        return out
    if not isinstance(data, Mapping):
        line, col = mark_of(root)
        problems.append(_problem(line, col, "error", "top-level-not-mapping",
                                 f"the top level must be a mapping (version:, created_by:, ...), not {_what(data)}",
                                 "remove the leading '- ' or the text before the first key"))
        return out
    family = schemacheck.reference_family(abs_parts[:-1], data)
    out["family"] = family
    out["kind"] = kind_of(rel, data)
    version, why = schemacheck.declared_version(data)
    if isinstance(version, int) and not isinstance(version, bool):
        out["version"] = version
    if version is not None and version > 1:
        _lint(loaded, problems, extra)
    elif loaded.duplicates:  # no lint for version 1 (as the reference): report ours, a warning
        for d in loaded.duplicates:
            problems.append(_problem(d.line, d.column, extra, d.rule, d.message, d.hint))
    stop = schemacheck.check_version(version, family, root)
    if stop is not None:
        if why:
            stop = schemacheck.SchemaIssue(stop.line, stop.column, stop.rule, why, stop.hint)
        problems.append(_problem(stop.line, stop.column, "error", stop.rule, stop.message, stop.hint))
    else:
        for s in schemacheck.check_schema(data, family, version, root):
            problems.append(_problem(s.line, s.column, "error", s.rule, s.message, s.hint))
    _extra_checks(data, family, root, opts, problems, out)
    if out.get("version", 0) >= 2:
        out["attribution"] = True
    return out


def _lint(loaded, problems: list, extra: str) -> None:
    from compiler.validate.lint import lint

    dups = {(d.line, d.column): d for d in loaded.duplicates}
    for p in lint(loaded.text, parsed=True):
        if p.rule == "key-duplicates":
            d = dups.pop((p.line, p.column), None)
            problems.append(_problem(p.line, p.column, p.level, "duplicate-key",
                                     d.message if d else p.message, d.hint if d else p.hint))
        elif p.rule == "syntax":
            problems.append(_problem(p.line, p.column, p.level, "yaml-syntax", p.message, p.hint))
        else:
            problems.append(_problem(p.line, p.column, p.level, f"yamllint/{p.rule}", p.message, p.hint))
    for d in dups.values():  # yamllint was told to ignore it (a disable comment): ours is extra
        problems.append(_problem(d.line, d.column, extra, d.rule, d.message, d.hint))


def _extra_checks(data: Mapping, family: str, root, opts: Options, problems: list, out: dict) -> None:
    from compiler.validate import checks

    extra = opts.extra_severity
    for i in checks.check_sizes(data, family, root, opts.limits):
        problems.append(_problem(i.line, i.column, extra, i.rule, i.message, i.hint))
    refs = checks.seed_refs(data, root)
    for i in checks.check_duplicates(refs, opts.limits.near_dup):
        problems.append(_problem(i.line, i.column, extra, i.rule, i.message, i.hint))
    out["seeds"] = [[r.label, r.line, r.column, r.norm, r.context, base64.b64encode(r.signature).decode("ascii")]
                    for r in refs]
    doc = data.get("document")
    if family == "knowledge" and isinstance(doc, Mapping):
        repo, commit, patterns = doc.get("repo"), doc.get("commit"), doc.get("patterns")
        if (isinstance(repo, str) and repo and isinstance(commit, str) and commit and isinstance(patterns, list)
                and patterns and all(isinstance(p, str) and p for p in patterns)):
            out["document"] = {"repo": repo, "commit": commit, "patterns": patterns,
                               "marks": {k: list(mark_of(node_at(root, ["document", k])))
                                         for k in ("repo", "commit", "patterns")}}


def _what(data: Any) -> str:
    if isinstance(data, bool):
        return "true/false"
    if isinstance(data, (int, float)):
        return "a number"
    return {list: "a list", str: "plain text"}.get(type(data), f"a {type(data).__name__}")


# ---------------------------------------------------------------- the cache

def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kdc" / "validate"


@lru_cache(maxsize=1)
def _salt() -> str:
    """What a cached outcome depends on besides the file: our code, schemas and the libraries."""
    import importlib.metadata

    h = hashlib.sha256(f"kdc {__version__}\0".encode())
    for dist in ("pyyaml", "yamllint", "jsonschema", "datasketch"):
        try:
            h.update(f"{dist} {importlib.metadata.version(dist)}\0".encode())
        except importlib.metadata.PackageNotFoundError:
            h.update(f"{dist} ?\0".encode())
    pkg = Path(__file__).resolve().parent.parent
    for mod in ("validate/api", "io/yamlload", "validate/lint", "validate/schemacheck", "validate/schemaeval",
                "validate/checks", "taxonomy/tree"):
        h.update((pkg / f"{mod}.py").read_bytes())
    from compiler.resources import data_dir

    for schema in sorted(data_dir("schemas").glob("qna_v*.json")):
        h.update(schema.read_bytes())
    return h.hexdigest()


def _cache_key(raw: bytes, name: str, abs_parts: tuple[str, ...], rel: str, opts: Options) -> str:
    from compiler.validate.schemacheck import FAMILY_FOLDERS

    ref_folder = next((p for p in reversed(abs_parts[:-1]) if p in FAMILY_FOLDERS), "")
    kind_folder = next((p for p in reversed(rel.split("/")[:-1]) if p in KIND_FOLDERS), "")
    h = hashlib.sha256(f"{_salt()}\0{opts.token()}\0{name}\0{ref_folder}\0{kind_folder}\0".encode())
    h.update(raw)
    return h.hexdigest()


def _cache_get(cache_dir: Path, key: str) -> dict | None:
    try:
        with open(cache_dir / key[:2] / f"{key}.json", encoding="utf-8") as fh:
            entry = json.load(fh)
        return entry if isinstance(entry, dict) and isinstance(entry.get("problems"), list) else None
    except (OSError, ValueError):
        return None


def _cache_put(cache_dir: Path, key: str, outcome: dict) -> None:
    try:
        folder = cache_dir / key[:2]
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(outcome, fh, separators=(",", ":"))
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        pass  # a read-only or full cache only costs speed


# ---------------------------------------------------------------- discovery

@dataclass
class _Target:
    abs_path: Path  # absolute, not resolved (symlinks kept)
    rel: str


def _rel_to(path: Path, root: Path) -> str | None:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def _display(path: Path, root: Path) -> str:
    rel = _rel_to(path, root)
    return rel if rel is not None else str(path)


def _collect(paths: list[Path], root: Path) -> tuple[list[_Target], list[FileResult]]:
    targets: list[_Target] = []
    walk_results: list[FileResult] = []
    root_abs = Path(os.path.abspath(root))
    for p in paths:
        p_abs = Path(os.path.abspath(p))
        if p_abs.is_dir():
            files, problems = walk(p_abs)
            base = _display(p_abs, root_abs)
            prefix = "" if base in ("", ".") else base + "/"
            for f in files:
                targets.append(_Target(p_abs / f.rel, prefix + f.rel))
            for wp in problems:
                rel = prefix + wp.rel
                walk_results.append(FileResult(rel, False, [Problem(rel, 1, 1, "error", wp.rule, wp.message, wp.hint)],
                                               p_abs / wp.rel))
        elif p_abs.exists() or p_abs.is_symlink():
            targets.append(_Target(p_abs, _display(p_abs, root_abs)))
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

@dataclass
class _Job:
    target: _Target
    real: Path | None = None  # symlinks resolved
    raw: bytes | None = None
    load_issue: Any = None
    key: str | None = None
    outcome: dict | None = None


def _read(job: _Job, root_abs: Path, root_real: Path) -> None:
    t = job.target
    real = job.real = Path(os.path.realpath(t.abs_path))
    if _rel_to(t.abs_path, root_abs) is not None and _rel_to(real, root_real) is None:
        job.outcome = {"problems": [_problem(1, 1, "error", "path-escapes-root",
                                             "symlink points outside the taxonomy root",
                                             "taxonomy files must live inside the taxonomy; copy the file in")]}
        return
    try:
        job.raw = read_bytes(real)
    except YamlLoadError as exc:
        job.load_issue = exc.issue
    except OSError as exc:
        rule = "symlink-loop" if exc.errno == errno.ELOOP else "unreadable-path"
        job.outcome = {"problems": [_problem(1, 1, "error", rule, f"cannot read the file: {exc.strerror or exc}",
                                             "check the path and its permissions")]}


def _work(args: tuple) -> dict:
    raw, name, abs_parts, rel, opts, load_issue, cache_dir, key = args
    outcome = check_file_bytes(raw, name, abs_parts, rel, opts, load_issue)
    if cache_dir is not None and key is not None and not any(p[3] == "internal-error" for p in outcome["problems"]):
        _cache_put(cache_dir, key, outcome)
    return outcome


def _warm_up() -> None:
    """Import and build what every worker needs once, before forking."""
    from compiler.validate import checks, lint, schemacheck

    for fam, ver in (("skill", 1), ("skill", 2), ("skill", 3), ("knowledge", 3)):
        schemacheck._fast(fam, ver)
    lint._config(lint.REFERENCE_CONFIG)
    checks._permutations()


def _run_jobs(jobs: list[_Job], opts: Options, cache_dir: Path | None, workers: int) -> None:
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
    jobs_ = [_Job(t) for t in targets]
    root_real = Path(os.path.realpath(root_abs))
    for j in jobs_:
        _read(j, root_abs, root_real)
        if j.raw is not None and cache_dir is not None:
            j.key = _cache_key(j.raw, j.target.abs_path.name, j.real.parts, j.target.rel, opts)
            j.outcome = _cache_get(cache_dir, j.key)
            stats.cache_hits += j.outcome is not None
    _run_jobs(jobs_, opts, cache_dir, jobs)
    stats.files = len(jobs_) + len(results)
    extra_by_rel = _cross_file_checks(jobs_, root_abs, opts, stats)
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


# ---------------------------------------------------------------- checks across files (never cached)

def _cross_file_checks(jobs: list[_Job], root: Path, opts: Options, stats: Stats) -> dict[str, list[Problem]]:
    out: dict[str, list[Problem]] = {}
    sev = opts.extra_severity

    def add(rel: str, line: int, col: int, rule: str, message: str, hint: str) -> None:
        severity = "error" if rule == "document-repo-outside" else sev  # a refusal, not a style issue
        out.setdefault(rel, []).append(Problem(rel, line, col, severity, rule, message, hint))

    for j in jobs:
        o = j.outcome or {}
        if o.get("attribution"):
            att = (j.real or j.target.abs_path).parent / "attribution.txt"
            try:
                ok = att.is_file() and att.read_text(encoding="utf-8", errors="replace").strip() != ""
            except OSError:
                ok = False
            if not ok:
                add(j.target.rel, 1, 1, "attribution-missing",
                    "no attribution.txt (or an empty one) next to this qna.yaml",
                    "add attribution.txt: title of work, link to work, license of the work, creator names")
    _document_checks(jobs, root, opts, stats, add)
    _sibling_duplicates(jobs, opts, add)
    return out


def _document_checks(jobs: list[_Job], root: Path, opts: Options, stats: Stats, add) -> None:
    from compiler.validate.docrefs import check_document

    memo: dict[tuple, Any] = {}
    for j in jobs:
        doc = (j.outcome or {}).get("document")
        if not doc:
            continue
        key = (doc["repo"], doc["commit"], tuple(doc["patterns"]))
        if key not in memo:
            memo[key] = check_document(doc["repo"], doc["commit"], doc["patterns"], root, fetch_remote=opts.fetch,
                                       allow=opts.allow_repos)
        result = memo[key]
        if not result.checked:
            stats.documents_unchecked += 1
            continue
        stats.documents_checked += 1
        for issue in result.issues:
            line, col = doc["marks"].get(issue.field, [1, 1])
            add(j.target.rel, line, col, issue.rule, issue.message, issue.hint)


def _sibling_duplicates(jobs: list[_Job], opts: Options, add) -> None:
    """Seeds repeated in leaves that share a parent folder: reported on the later leaf."""
    from compiler.validate.checks import similar_pairs

    groups: dict[str, list[tuple[str, list]]] = {}
    for j in sorted(jobs, key=lambda j: j.target.rel):
        seeds = (j.outcome or {}).get("seeds")
        if not seeds:
            continue
        leaf_dir = j.target.rel.rsplit("/", 1)[0] if "/" in j.target.rel else ""
        parent = leaf_dir.rsplit("/", 1)[0] if "/" in leaf_dir else ("" if leaf_dir else None)
        if parent is not None:
            groups.setdefault(parent, []).append((j.target.rel, seeds))
    for family in groups.values():
        if len(family) < 2:
            continue
        members = [(rel, [SeedRef(s[0], s[1], s[2], s[3], s[4], base64.b64decode(s[5])) for s in seeds])
                   for rel, seeds in family]
        refs = [r for _, rs in members for r in rs]
        owner = [k for k, (_, rs) in enumerate(members) for _ in rs]
        reported: set[int] = set()
        for i, j, s in similar_pairs(refs, None, opts.limits.near_dup):  # one pass over the whole family
            if owner[i] == owner[j] or j in reported:
                continue  # duplicates inside one leaf are that leaf's own check
            reported.add(j)
            mine, theirs = refs[j], refs[i]
            how = "repeats" if mine.norm == theirs.norm else f"is nearly the same as (similarity {s:.2f})"
            add(members[owner[j]][0], mine.line, mine.column, "dup/sibling-seed",
                f"{mine.label} {how} {theirs.label} of the sibling leaf {members[owner[i]][0]} (line {theirs.line})",
                "sibling leaves should teach different things: change or remove one of them")


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
