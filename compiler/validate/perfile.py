"""Everything `kdc validate` says about one file from its bytes, name and folders alone: the
outcome is JSON-able and cached by content (compiler/validate/cache.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from compiler.io.yamlload import YamlLoadError, load_bytes, mark_of, node_at
from compiler.taxonomy.tree import QNA, kind_of
from compiler.validate.model import Options


def problem(line: int, col: int, severity: str, rule: str, message: str, hint: str = "") -> list:
    return [line, col, severity, rule, message, hint]


def check_file_bytes(raw: bytes | None, name: str, abs_parts: tuple[str, ...], rel: str, opts: Options,
                     load_issue: Any = None) -> dict:
    """Everything about one file that depends only on its bytes, name, folders and options.

    Returns a JSON-able outcome (cached as is). Never raises for bad input."""
    try:
        return _check(raw, name, abs_parts, rel, opts, load_issue)
    except Exception as exc:  # a bug in kdc must not hide the other files' results
        return {"problems": [problem(1, 1, "error", "internal-error",
                                      f"kdc could not check this file ({type(exc).__name__}: {exc})",
                                      "please report this as a kdc bug, with the file")]}


def _check(raw, name, abs_parts, rel, opts: Options, load_issue) -> dict:
    from compiler.validate import schemacheck

    extra = opts.extra_severity
    problems: list[list] = []
    out: dict[str, Any] = {"problems": problems}
    if name != QNA:
        problems.append(problem(1, 1, "error", "file-name",
                                 f'taxonomy files must be named "{QNA}", not "{name}"',
                                 f"rename it: git mv {name} {QNA}"))
    if load_issue is None:
        try:
            loaded = load_bytes(raw)
        except YamlLoadError as exc:
            load_issue = exc.issue
    if load_issue is not None:
        i = load_issue
        problems.append(problem(i.line, i.column, "error", i.rule, i.message, i.hint))
        return out
    data, root = loaded.data, loaded.node
    if not data:  # the reference only warns about an empty file
        what = "empty" if data is None else f"empty ({json.dumps(data)})"
        problems.append(problem(1, 1, "error" if opts.strict else "warning", "empty-file", f"the file is {what}",
                                 "write version, created_by, task_description (or domain) and seed_examples"))
        return out
    if not isinstance(data, Mapping):
        line, col = mark_of(root)
        problems.append(problem(line, col, "error", "top-level-not-mapping",
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
            problems.append(problem(d.line, d.column, extra, d.rule, d.message, d.hint))
    stop = schemacheck.check_version(version, family, root)
    if stop is not None:
        if why:
            stop = schemacheck.SchemaIssue(stop.line, stop.column, stop.rule, why, stop.hint)
        problems.append(problem(stop.line, stop.column, "error", stop.rule, stop.message, stop.hint))
    else:
        for s in schemacheck.check_schema(data, family, version, root):
            problems.append(problem(s.line, s.column, "error", s.rule, s.message, s.hint))
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
            problems.append(problem(p.line, p.column, p.level, "duplicate-key",
                                     d.message if d else p.message, d.hint if d else p.hint))
        elif p.rule == "syntax":
            problems.append(problem(p.line, p.column, p.level, "yaml-syntax", p.message, p.hint))
        else:
            problems.append(problem(p.line, p.column, p.level, f"yamllint/{p.rule}", p.message, p.hint))
    for d in dups.values():  # yamllint was told to ignore it (a disable comment): ours is extra
        problems.append(problem(d.line, d.column, extra, d.rule, d.message, d.hint))


def _extra_checks(data: Mapping, family: str, root, opts: Options, problems: list, out: dict) -> None:
    from compiler.validate import checks

    extra = opts.extra_severity
    for i in checks.check_sizes(data, family, root, opts.limits):
        problems.append(problem(i.line, i.column, extra, i.rule, i.message, i.hint))
    refs = checks.seed_refs(data, root)
    for i in checks.check_duplicates(refs, opts.limits.near_dup):
        problems.append(problem(i.line, i.column, extra, i.rule, i.message, i.hint))
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
