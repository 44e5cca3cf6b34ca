"""Verdict agreement with InstructLab's reference validator (instructlab-schema 0.4.2).

1. Every file of the real-contributions corpus: our default verdict equals the reference's,
   file by file, and we name the same reasons (rule ids for the reference's messages).
2. Our schemas against the reference's on hundreds of mutated real files (jsonschema both).
3. Edge cases run through the reference itself (TaxonomyParser, in this process).
"""

from __future__ import annotations

import copy
import functools
import io
import json
import os
import random
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from compiler.validate import schemacheck
from compiler.validate.api import validate_paths
from compiler.io.yamlload import YamlLoadError, load_bytes

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "taxonomy-history"

# The reference's message -> the rule we must report for it.
REASONS = [
    (re.compile(r"Unevaluated properties are not allowed"), "schema/unevaluated"),
    (re.compile(r"is a required property"), "schema/required"),
    (re.compile(r"Version \d+ is not supported for knowledge"), "version-deprecated"),
    (re.compile(r"\(trailing-spaces\)"), "yamllint/trailing-spaces"),
    (re.compile(r"\(new-line-at-end-of-file\)"), "yamllint/new-line-at-end-of-file"),
    (re.compile(r"top-level element is not an object"), "top-level-not-mapping"),
    (re.compile(r'Taxonomy file must be named "qna.yaml"'), "file-name"),
    (re.compile(r"is not of type"), "schema/type"),
    (re.compile(r"should be non-empty"), "schema/min-length"),
    (re.compile(r"Value must have at least"), "schema/min-items"),
    (re.compile(r"has non-unique elements"), "schema/unique-items"),
    (re.compile(r"Cannot load schema file"), "version-unsupported"),
]
# Labels whose reason is not one of the reference's messages, with why.
UNPARSABLE_RULE = "yaml-syntax"  # the reference raised while parsing the YAML


def _labels() -> list[dict]:
    labels = CORPUS / "labels.jsonl"
    if not labels.is_file():
        pytest.fail(f"the conformance corpus is missing: expected {labels} "
                    "(1,018 real qna.yaml files with the reference's verdicts: ../shared/corpus beside the checkout)")
    return [json.loads(line) for line in labels.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def corpus_results():
    labels = _labels()
    paths = [CORPUS / lab["file"] for lab in labels]
    missing = [str(p) for p in paths if not p.exists()]
    assert not missing, f"{len(missing)} corpus files are missing, e.g. {missing[:3]}"
    results = {r.path: r for r in validate_paths(paths, root=CORPUS, jobs=2)}
    return labels, results


def test_corpus_verdicts_agree_file_by_file(corpus_results):
    labels, results = corpus_results
    assert len(labels) >= 1000
    disagreements = []
    for lab in labels:
        ours = results[lab["file"]]
        reference_valid = lab["errors"] == 0
        if ours.valid != reference_valid:
            errors = [f"{p.line}:{p.column} [{p.rule}] {p.message}" for p in ours.problems if p.severity == "error"]
            disagreements.append(f"{lab['file']}: reference {'accepts' if reference_valid else 'rejects'} "
                                 f"({'; '.join(lab['messages'][:2]) or lab.get('unparsable', '')[:80]}), "
                                 f"kdc {'accepts' if ours.valid else 'rejects'} ({'; '.join(errors[:2])})")
    assert not disagreements, f"{len(disagreements)} verdicts differ:\n" + "\n".join(disagreements)
    accepted = sum(lab["errors"] == 0 for lab in labels)
    assert 0 < accepted < len(labels)  # both verdicts are exercised


def test_corpus_reasons_agree(corpus_results):
    """Where the reference says why, we report a rule for the same reason."""
    labels, results = corpus_results
    missing = []
    for lab in labels:
        rules = {p.rule for p in results[lab["file"]].problems if p.severity == "error"}
        wanted = set()
        if lab.get("unparsable"):
            if "Error(" in lab["unparsable"] and lab["unparsable"].startswith(("ScannerError", "ParserError")):
                wanted.add(UNPARSABLE_RULE)
        for message in lab["messages"]:
            for pattern, rule in REASONS:
                if pattern.search(message):
                    wanted.add(rule)
        if not wanted <= rules:
            missing.append(f"{lab['file']}: expected {sorted(wanted - rules)}, got {sorted(rules)} "
                           f"for {lab['messages'][:2]}")
    assert not missing, f"{len(missing)} files lack a reason:\n" + "\n".join(missing[:40])


def test_corpus_problems_are_located(corpus_results):
    labels, results = corpus_results
    for lab in labels:
        text_lines = None
        for p in results[lab["file"]].problems:
            assert p.line >= 1 and p.column >= 1 and p.message and p.rule
            if text_lines is None:
                raw = (CORPUS / lab["file"]).read_bytes()
                text_lines = raw.decode("utf-8", "replace").splitlines() or [""]
            assert p.line <= len(text_lines) + 1, (lab["file"], p)


# ---------------------------------------------------------------- schemas vs the reference's schemas

def _reference_validator(family: str, version: int):
    from jsonschema.validators import validator_for
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    from instructlab.schema import schema_base

    folder = {"skill": "compositional_skills", "knowledge": "knowledge"}[family]

    @functools.lru_cache(maxsize=None)
    def retrieve(uri: str):
        text = schema_base().joinpath(f"v{version}", uri).read_text(encoding="utf-8")
        return Resource.from_contents(json.loads(text), default_specification=DRAFT202012)

    schema = retrieve(f"{folder}.json").contents
    return schema, validator_for(schema)(schema, registry=Registry(retrieve=retrieve))


def _mutations(doc: dict, rng: random.Random) -> dict:
    doc = copy.deepcopy(doc)
    mappings, leaves = [], []

    def walk(node, parent, key):
        if isinstance(node, dict):
            mappings.append(node)
            for k, v in list(node.items()):
                walk(v, node, k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, node, i)
        else:
            leaves.append((parent, key))

    walk(doc, None, None)
    op = rng.randrange(9)
    if op == 0 and mappings:
        m = rng.choice(mappings)
        if m:
            del m[rng.choice(list(m))]
    elif op == 1 and mappings:
        rng.choice(mappings)[rng.choice(["extra", "attribution", "context", "document", "domain", "answer"])] = "x"
    elif op == 2 and leaves:
        parent, key = rng.choice(leaves)
        if parent is not None:
            parent[key] = rng.choice(["", None, 5, [], {}, True, 2.5, "text"])
    elif op == 3 and isinstance(doc.get("seed_examples"), list):
        doc["seed_examples"] = doc["seed_examples"][: rng.randrange(0, 7)]
    elif op == 4 and isinstance(doc.get("seed_examples"), list) and doc["seed_examples"]:
        doc["seed_examples"].append(copy.deepcopy(rng.choice(doc["seed_examples"])))
    elif op == 5 and isinstance(doc.get("seed_examples"), list):
        for ex in doc["seed_examples"]:
            if isinstance(ex, dict) and isinstance(ex.get("questions_and_answers"), list):
                ex["questions_and_answers"] = ex["questions_and_answers"][: rng.randrange(0, 5)]
                break
    elif op == 6:
        doc["version"] = rng.choice([1, 2, 3, "3", 3.0, None, 1.0])
    elif op == 7 and isinstance(doc.get("document"), dict):
        doc["document"]["patterns"] = rng.choice([[], ["*.md", "*.md"], "x.md", [""], ["a.md"]])
    elif op == 8:
        doc["seed_examples"] = rng.choice([{}, "text", None, [[]], [{}]])
    return doc


def test_schemas_match_the_reference_on_mutated_files():
    labels = _labels()
    rng = random.Random(20240501)
    docs = []
    for lab in labels:
        try:
            data = load_bytes((CORPUS / lab["file"]).read_bytes()).data
        except YamlLoadError:
            continue
        if isinstance(data, dict) and data:
            docs.append((lab["path"].split("/"), data))
    validators: dict = {}
    compared = 0
    mismatches = []
    for _ in range(1500):
        parts, base = rng.choice(docs)
        doc = _mutations(base, rng) if rng.random() < 0.9 else base
        family = schemacheck.reference_family(parts[:-1], doc)
        version, _ = schemacheck.declared_version(doc)
        if isinstance(version, bool) or version not in (1, 2, 3):
            continue
        key = (family, version)
        if key not in validators:
            validators[key] = _reference_validator(family, version)
        ref_schema, ref = validators[key]
        stop = schemacheck.check_version(version, family, None)
        if ref_schema.get("deprecated"):
            assert stop is not None and stop.rule == "version-deprecated"
            continue
        assert stop is None
        ours_valid = not schemacheck.check_schema(doc, family, version, None)
        ref_valid = ref.is_valid(doc)
        compared += 1
        if ours_valid != ref_valid:
            mismatches.append((family, version, json.dumps(doc, default=str)[:300]))
    assert compared > 800
    assert not mismatches, f"{len(mismatches)} schema verdicts differ, e.g.:\n" + "\n".join(map(str, mismatches[:5]))


# ---------------------------------------------------------------- edge cases, through the reference itself

V3_SKILL = "".join(
    ["version: 3\ncreated_by: tester\ntask_description: Answer questions.\nseed_examples:\n"]
    + [f"  - question: Question number {w}?\n    answer: Answer number {w}.\n"
       for w in ("one", "two", "three", "four", "five")])
V3_KNOWLEDGE = "".join(
    ["version: 3\ncreated_by: tester\ndomain: Tests\ndocument_outline: Outline.\nseed_examples:\n"]
    + [f"  - context: Context {i}.\n    questions_and_answers:\n"
       + "".join(f"      - question: Q{i}{j}?\n        answer: A{i}{j}.\n" for j in range(3)) for i in range(5)]
    + ["document:\n  repo: https://example.invalid/r.git\n  commit: abc123\n  patterns:\n    - '*.md'\n"])

EDGE_CASES = [
    # (path, content, reference verdict: True = accepted)
    ("compositional_skills/a/qna.yaml", "", True),
    ("compositional_skills/a/qna.yaml", "{}\n", True),
    ("compositional_skills/a/qna.yaml", "[]\n", True),
    ("compositional_skills/a/qna.yaml", "0\n", True),
    ("compositional_skills/a/qna.yaml", "- a\n", False),
    ("compositional_skills/a/qna.yaml", "just text\n", False),
    ("compositional_skills/a/qna.yaml", V3_SKILL, True),
    ("compositional_skills/a/qna.yaml", V3_SKILL.replace("version: 3", "version: 3.0"), True),
    ("compositional_skills/a/qna.yaml", V3_SKILL.replace("version: 3", "version: '3'"), False),
    ("compositional_skills/a/qna.yaml", V3_SKILL.replace("version: 3", "version: true"), False),
    ("compositional_skills/a/qna.yaml", V3_SKILL.replace("version: 3", "version: 0"), False),
    ("compositional_skills/a/qna.yaml", V3_SKILL.replace("version: 3", "version: 7"), False),
    ("compositional_skills/a/qna.yaml", V3_SKILL.replace("version: 3", "version: .nan"), False),
    ("compositional_skills/a/qna.yaml", V3_SKILL.replace("version: 3\n", ""), True),  # checked as version 1
    ("compositional_skills/a/qna.yaml", V3_SKILL.replace("version: 3", "version: 2"), True),
    ("compositional_skills/a/qna.yaml", V3_SKILL.replace("tester\n", "tester  \n"), False),  # trailing spaces
    ("compositional_skills/a/qna.yaml", V3_SKILL.replace("version: 3", "version: 1").replace("tester\n", "tester  \n"),
     True),  # version 1 is not linted
    ("compositional_skills/a/qna.yaml", "# yamllint disable\n" + V3_SKILL.replace("tester\n", "tester  \n"), True),
    ("compositional_skills/a/qna.yaml", V3_SKILL.replace("\n", "\r\n"), True),  # universal newlines
    ("compositional_skills/a/qna.yaml", V3_SKILL.rstrip("\n"), False),  # no newline at the end
    ("compositional_skills/a/qna.yaml", "\ufeff" + V3_SKILL, True),
    ("compositional_skills/a/qna.yaml", V3_SKILL.replace("tester\n", "tester\ncreated_by: x\n"), False),
    ("compositional_skills/a/qna.yaml",
     V3_SKILL.replace("version: 3", "version: 1").replace("tester\n", "tester\ncreated_by: x\n"), True),
    ("compositional_skills/a/qna.yaml", V3_SKILL.replace("number two", "number one"), False),  # identical items
    ("compositional_skills/a/qna.yaml", V3_SKILL.replace("created_by: tester", "created_by: ''"), False),
    ("compositional_skills/a/qna.yaml",
     V3_SKILL.replace("version: 3", "version: 1").replace("task_description: Answer questions.",
                                                          "task_description: ''"), True),
    ("compositional_skills/a/qna.yaml", V3_SKILL.replace("version: 3", "version: 1") + "1: numeric key\n", False),
    ("compositional_skills/a/qna.yaml", "version: 1\ncreated_by: t\ntask_description: d\nseed_examples:\n"
                                        "  - question: q\n    answer: |\n      \tTabbed text\n", True),
    ("compositional_skills/a/qna.yaml", "base: &b {question: q1, answer: a1}\n", False),
    ("foundational_skills/a/qna.yaml", V3_SKILL, True),
    ("foundational_skills/a/qna.yaml", V3_SKILL + "document: {repo: r, commit: c, patterns: ['*.md']}\n", False),
    ("knowledge/a/qna.yaml", V3_SKILL, False),
    ("knowledge/a/qna.yaml", V3_KNOWLEDGE, True),
    ("knowledge/a/qna.yaml", V3_KNOWLEDGE.replace("Q00?", "Q00?\n        note: extra keys pass here"), True),
    ("knowledge/a/qna.yaml", V3_KNOWLEDGE.replace("version: 3", "version: 2"), False),
    ("knowledge/compositional_skills/a/qna.yaml", V3_SKILL, True),  # the nearest folder decides
    ("compositional_skills/knowledge/a/qna.yaml", V3_SKILL, False),
    ("misc/a/qna.yaml", V3_KNOWLEDGE, True),  # no taxonomy folder: knowledge by content
    ("misc/a/qna.yaml", V3_SKILL, True),
    ("compositional_skills/a/qna.yml", V3_SKILL, False),
]


def test_edge_cases_match_the_reference(tmp_path, monkeypatch):
    from instructlab.schema.taxonomy import TaxonomyParser

    # the reference runs `yamllint` as a command: ours from the venv
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    parser = TaxonomyParser(schema_version=0, message_format="standard")
    parser.yq_available = False  # yq only finds line numbers; it does not change a verdict
    report = []
    for i, (rel, content, expected) in enumerate(EDGE_CASES):
        root = tmp_path / f"case{i}"
        path = root / rel
        path.parent.mkdir(parents=True)
        path.write_bytes(content.encode("utf-8"))
        with redirect_stdout(io.StringIO()) as out:
            try:
                ref_valid = parser.parse(path).errors == 0
            except Exception:  # the reference raises on some bad files: a rejection
                ref_valid = False
        assert ref_valid == expected, f"harness: the reference gave {ref_valid} for case {i} ({out.getvalue()})"
        [ours] = validate_paths([path], root=root)
        if ours.valid != ref_valid:
            report.append(f"case {i} {rel}: reference {ref_valid}, kdc {ours.valid}: "
                          f"{[(p.rule, p.message) for p in ours.problems]}")
    assert not report, "\n".join(report)
