"""Schema checks of a qna.yaml, with the reference's verdicts and located, actionable messages.

The rules are InstructLab's (instructlab-schema 0.4.2): the schema family comes from the nearest
`compositional_skills/` or `knowledge/` folder, else from the content; the version is the one the
file declares (default 1); knowledge v1/v2 are deprecated. The schemas are ours (schemas/qna_*.json);
compiler/validate/schemaeval.py evaluates them (jsonschema's semantics, without its
import cost), and each error is placed on the YAML node it is about.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml

from compiler.resources import load_schema
from compiler.validate import schemaeval
from compiler.validate.schemaeval import SchemaError
from compiler.io.yamlload import key_node_at, mark_of, node_at

# The reference's taxonomy folders (foundational_skills is not one: it goes by content).
FAMILY_FOLDERS = {"compositional_skills": "skill", "knowledge": "knowledge"}
VERSIONS = (1, 2, 3)
LATEST = 3


@dataclass(frozen=True)
class SchemaIssue:
    line: int
    column: int
    rule: str
    message: str
    hint: str


def reference_family(parts: tuple[str, ...] | list[str], content: Any) -> str:
    """'skill' or 'knowledge', decided like the reference: nearest taxonomy folder, else content."""
    for part in reversed(parts):
        if part in FAMILY_FOLDERS:
            return FAMILY_FOLDERS[part]
    return "knowledge" if isinstance(content, Mapping) and "document" in content else "skill"


def declared_version(content: Mapping) -> tuple[Any, str | None]:
    """The version the reference checks a file against, or (None, why) where it fails on it.

    Mirrors the reference: missing -> 1; an int (bool included) as is; else int(value), and 1
    when that fails. A value int() cannot hold (.inf) makes the reference crash: rejected."""
    raw = content.get("version", 1)
    if isinstance(raw, int):
        return raw, None
    try:
        return int(raw), None
    except (ValueError, TypeError):
        return 1, None
    except OverflowError:
        return None, f"version {raw!r} is not a number"


def check_version(version: Any, family: str, root: yaml.Node | None) -> SchemaIssue | None:
    """Unsupported or deprecated versions: the reference stops at these (no schema check)."""
    line, col = mark_of(node_at(root, ["version"]) if _has_key(root, "version") else root)
    if version is None or isinstance(version, bool) or version not in VERSIONS:
        shown = "missing" if version is None else repr(version)
        return SchemaIssue(line, col, "version-unsupported",
                           f"version {shown} is not a qna.yaml schema version (known: 1, 2, 3)",
                           f"write `version: {LATEST}`")
    schema = schema_for(family, version)
    if schema.get("deprecated"):
        return SchemaIssue(line, col, "version-deprecated",
                           schema.get("description") or f"{family} version {version} is deprecated",
                           f"convert the file to version {LATEST}: a domain, a document_outline, and seed "
                           "examples that each hold a context with at least 3 questions_and_answers")
    return None


def _has_key(root: yaml.Node | None, key: str) -> bool:
    return isinstance(root, yaml.MappingNode) and any(
        isinstance(k, yaml.ScalarNode) and k.value == key for k, _ in root.value)


def schema_for(family: str, version: int) -> dict:
    return load_schema(f"qna_v{version}_{family}.json")


@lru_cache(maxsize=None)
def _validator(family: str, version: int):
    """jsonschema's validator, for a schema that schemaeval cannot evaluate (none of ours today)."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema_for(family, version))


def schema_errors(content: Any, family: str, version: int) -> list[SchemaError]:
    """The schema's errors in jsonschema's order: by schemaeval (no jsonschema import) when the
    schema uses only the keywords it evaluates, else by jsonschema."""
    schema = schema_for(family, version)
    if _fast(family, version):
        return list(schemaeval.errors(schema, content))
    return [SchemaError(str(e.validator), e.validator_value, tuple(e.absolute_path), e.instance, e.schema, e.message)
            for e in _validator(family, version).iter_errors(content)]


@lru_cache(maxsize=None)
def _fast(family: str, version: int) -> bool:
    return schemaeval.supported(schema_for(family, version))


def check_schema(content: Mapping, family: str, version: int, root: yaml.Node | None) -> list[SchemaIssue]:
    """Every schema error, located on its YAML node, in words a contributor can act on."""
    issues: list[SchemaIssue] = []
    reported_missing: set[tuple] = set()
    errors = schema_errors(content, family, version)
    typed = {e.path for e in errors if e.validator == "type"}
    for e in errors:
        path = list(e.path)
        where = _where(path)
        kind = e.validator
        if kind == "required":
            for key in e.validator_value:
                if key in e.instance or (tuple(path), key) in reported_missing:
                    continue
                reported_missing.add((tuple(path), key))
                line, col = mark_of(node_at(root, path))
                issues.append(SchemaIssue(line, col, "schema/required", f"missing required key '{key}' {where}",
                                          _required_hint(key, family, version)))
        elif kind in ("unevaluatedProperties", "additionalProperties"):
            allowed = list(e.schema.get("properties", {}))
            for key in e.instance:
                if key in allowed:
                    continue
                line, col = mark_of(key_node_at(root, path, str(key)))
                issues.append(SchemaIssue(line, col, "schema/unevaluated", f"unknown key '{key}' {where}",
                                          _unknown_hint(str(key), path, allowed, family, version)))
        elif kind == "type":
            line, col = mark_of(node_at(root, path))
            expected = e.validator_value
            issues.append(SchemaIssue(line, col, "schema/type",
                                      f"{_name(path)} must be {_type_words(expected)}, not {_value_words(e.instance)}",
                                      _type_hint(path, expected, e.instance, version)))
        elif kind == "const":
            if tuple(path) in typed:
                continue
            line, col = mark_of(node_at(root, path))
            issues.append(SchemaIssue(line, col, "schema/const",
                                      f"{_name(path)} must be {e.validator_value!r}, not {e.instance!r}",
                                      f"write `{_name(path)}: {e.validator_value}`"))
        elif kind == "minLength":
            line, col = mark_of(node_at(root, path))
            issues.append(SchemaIssue(line, col, "schema/min-length", f"{_name(path)} is empty",
                                      "write the text, or remove the key if it is optional"))
        elif kind == "minItems":  # at the key that names the short list
            at = key_node_at(root, path[:-1], path[-1]) if path and isinstance(path[-1], str) else None
            line, col = mark_of(at if at is not None else node_at(root, path))
            n = len(e.instance)
            issues.append(SchemaIssue(line, col, "schema/min-items",
                                      f"{_name(path)} has {n} item{'s' if n != 1 else ''}; "
                                      f"at least {e.validator_value} are required",
                                      _min_items_hint(path, e.validator_value)))
        elif kind == "uniqueItems":
            first, second = _duplicate_items(e.instance)
            line, col = mark_of(node_at(root, path + [second]))
            issues.append(SchemaIssue(line, col, "schema/unique-items",
                                      f"{_name(path + [second])} is identical to {_name(path + [first])}",
                                      "remove the copy or change it into a different example"))
        else:
            line, col = mark_of(node_at(root, path))
            issues.append(SchemaIssue(line, col, f"schema/{kind}", f"{_name(path)}: {e.message[-200:]}", ""))
    issues.sort(key=lambda i: (i.line, i.column))
    return issues


def _name(path: list) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the file"


def _where(path: list) -> str:
    return f"in {_name(path)}" if path else "at the top level"


_TYPE_WORDS = {"string": "text", "object": "a mapping of keys to values", "array": "a list",
               "integer": "a whole number", "number": "a number", "boolean": "true or false", "null": "empty"}


def _type_words(expected: Any) -> str:
    if isinstance(expected, list):
        return " or ".join(_TYPE_WORDS.get(t, t) for t in expected)
    return _TYPE_WORDS.get(expected, str(expected))


def _value_words(value: Any) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {json.dumps(value[:40])}{'…' if len(value) > 40 else ''}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _type_hint(path: list, expected: Any, value: Any, version: int) -> str:
    if path == ["version"]:
        return f"write `version: {version if version in VERSIONS else LATEST}` (a number, no quotes)"
    if expected == "string":
        if value is None:
            return "write the text after the colon, or put it on the next lines under `|`"
        if isinstance(value, (dict, list)):
            return "text containing ': ' or starting with '- ' must be quoted or written as a block scalar (`|`)"
        return "put the value in quotes to make it text"
    if expected == "array":
        return "write one item per line, each starting with '- '"
    if expected == "object":
        return "write `key: value` lines, indented under this item"
    return ""


def _required_hint(key: str, family: str, version: int) -> str:
    hints = {
        "version": f"add `version: {LATEST}` at the top of the file",
        "created_by": "add `created_by: <your GitHub user name>`",
        "task_description": "add `task_description:` saying what the task is, for the teacher model",
        "seed_examples": "add `seed_examples:` with at least 5 examples",
        "question": "add `question:` to this example",
        "answer": "add `answer:` to this example",
        "domain": "add `domain:`, a short subject name such as a textbook chapter title",
        "document": "add `document:` with the documents' `repo`, `commit` and `patterns`",
        "document_outline": "add `document_outline:`, a one-sentence summary of the documents",
        "context": "add `context:`, a passage copied from the document",
        "questions_and_answers": "add `questions_and_answers:` with at least 3 question/answer pairs",
        "repo": "add `repo:`, the URL of the git repository with the documents",
        "commit": "add `commit:`, the full SHA of the commit holding the documents",
        "patterns": "add `patterns:`, a list of file patterns such as '*.md'",
    }
    return hints.get(key, f"add `{key}:`")


def _unknown_hint(key: str, path: list, allowed: list[str], family: str, version: int) -> str:
    if key == "attribution" or key.startswith("attribution"):
        return "sources belong in attribution.txt next to qna.yaml; remove this key"
    if family == "knowledge" and version == 3:
        if not path and key == "task_description":
            return "version 3 knowledge has no task_description: remove it (summarise the documents in document_outline)"
        if len(path) == 2 and path[0] == "seed_examples" and key in ("question", "answer"):
            return ("in version 3 knowledge each seed example holds `context` and `questions_and_answers`, "
                    "a list of question/answer pairs")
    if family == "skill" and not path and key in ("document", "domain", "document_outline"):
        return "skills take no documents: move the file under knowledge/, or remove the key"
    import difflib

    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.75)
    if close:
        return f"did you mean '{close[0]}'?"
    if not allowed:
        return "remove it"
    return "remove it; allowed keys here: " + ", ".join(allowed)


def _min_items_hint(path: list, minimum: int) -> str:
    last = path[-1] if path else ""
    if last == "seed_examples":
        return f"add examples until there are {minimum}; they are what the teacher model imitates"
    if last == "questions_and_answers":
        return f"give each context at least {minimum} question/answer pairs"
    if last == "patterns":
        return "list at least one pattern, e.g. '*.md'"
    return f"add items until there are {minimum}"


def _duplicate_items(items: list) -> tuple[int, int]:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        try:
            key = json.dumps(item, sort_keys=True, default=repr)
        except TypeError:  # keys of mixed types cannot be sorted
            key = repr(item)
        if key in seen:
            return seen[key], i
        seen[key] = i
    return 0, max(len(items) - 1, 0)
