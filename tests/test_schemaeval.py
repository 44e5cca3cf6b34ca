"""compiler/validate/schemaeval.py gives jsonschema's errors, error for error.

validate checks qna files with schemaeval so that a one-file run need not import jsonschema;
these tests hold it to jsonschema's Draft 2020-12 validator on every qna schema: the same
errors (keyword, value, path, instance, message) in the same order, on the real files of the
conformance corpus, on mutations of them, and on random documents with the values YAML can
produce (dates, bytes, sets, int keys, 3.0, NaN, huge ints)."""

from __future__ import annotations

import datetime
import functools
import random
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from jsonschema import Draft202012Validator

from compiler.io.yamlload import YamlLoadError, load_bytes
from compiler.validate import schemacheck, schemaeval

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_conformance import _labels, _mutations, CORPUS  # noqa: E402

SCHEMAS = [(f, v) for f in ("skill", "knowledge") for v in (1, 2, 3)]


@functools.lru_cache(maxsize=None)
def _jsonschema(family: str, version: int) -> Draft202012Validator:
    return Draft202012Validator(schemacheck.schema_for(family, version))


def _theirs(family: str, version: int, doc) -> list[tuple]:
    validator = _jsonschema(family, version)
    return [(e.validator, e.validator_value, tuple(e.absolute_path), e.instance, e.message)
            for e in validator.iter_errors(doc)]


def _ours(family: str, version: int, doc) -> list[tuple]:
    return [(e.validator, e.validator_value, e.path, e.instance, e.message)
            for e in schemaeval.errors(schemacheck.schema_for(family, version), doc)]


def _same(one: list[tuple], two: list[tuple]) -> bool:
    """Equal lists of errors; instances compared by repr (NaN is not equal to itself)."""
    return len(one) == len(two) and all(a[:3] == b[:3] and repr(a[3]) == repr(b[3]) and a[4] == b[4]
                                        for a, b in zip(one, two))


def test_every_qna_schema_is_evaluated_without_jsonschema():
    for family, version in SCHEMAS:
        assert schemaeval.supported(schemacheck.schema_for(family, version)), (family, version)


def test_unknown_keywords_go_to_jsonschema():
    assert not schemaeval.supported({"type": "object", "patternProperties": {"^x": {}}})
    assert not schemaeval.supported({"properties": {"a": {"maxLength": 3}}})
    assert not schemaeval.supported({"items": {"type": "strung"}})
    assert not schemaeval.supported({"unevaluatedProperties": {"type": "string"}})
    assert schemaeval.supported({"type": ["string", "null"], "description": "x", "minLength": 1})


def test_corpus_files_and_their_mutations_give_jsonschemas_errors():
    docs = []
    for lab in _labels():
        try:
            data = load_bytes((CORPUS / lab["file"]).read_bytes()).data
        except YamlLoadError:
            continue
        docs.append(data)
    rng = random.Random(7)
    compared = failing = 0
    mappings = [d for d in docs if isinstance(d, dict) and d]
    for doc in docs + [_mutations(rng.choice(mappings), rng) for _ in range(600)]:
        for family, version in SCHEMAS:
            theirs = _theirs(family, version, doc)
            assert _same(_ours(family, version, doc), theirs), (family, version, doc)
            compared += 1
            failing += bool(theirs)
    assert compared > 6 * 1400 and failing > 1000  # the errors, not only the passes, were compared


yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**70, max_value=2**80),
    st.floats(), st.sampled_from([1.0, 2.0, 3.0, -0.0]), st.text(max_size=8),
    st.dates(), st.datetimes(), st.binary(max_size=4), st.sampled_from(["", "3", "x", "*.md"]))
keys = st.one_of(st.sampled_from(["version", "created_by", "task_description", "seed_examples", "question",
                                  "answer", "context", "questions_and_answers", "document", "repo", "commit",
                                  "patterns", "domain", "document_outline", "extra"]),
                 st.integers(0, 3), st.booleans(), st.none())
values = st.recursive(yaml_scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=6), st.dictionaries(keys, kids, max_size=6),
    st.frozensets(st.integers(0, 3), max_size=3).map(set)), max_leaves=30)
documents = st.one_of(values, st.dictionaries(keys, values, max_size=8))


@settings(max_examples=300, deadline=None)
@given(documents, st.sampled_from(SCHEMAS))
def test_random_documents_give_jsonschemas_errors(doc, schema):
    family, version = schema
    assert _same(_ours(family, version, doc), _theirs(family, version, doc))


@pytest.mark.parametrize("items", [
    [1, True], [0, False], [1, 1.0], [[1], [True]], [{"a": 1}, {"a": 1}], [{"a": 1}, {"a": True}],
    ["a", "a"], [datetime.date(2024, 1, 1)] * 2, [None, None], [b"x", b"x"], [{1, 2}, {1, 2}],
])
def test_unique_items_matches_jsonschema(items):
    theirs = Draft202012Validator({"uniqueItems": True}).is_valid(items)
    assert schemaeval.unique(items) is theirs
