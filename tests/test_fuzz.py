"""Property tests (hypothesis): random bytes, random YAML and random folder names at validate (the
library and the CLI in-process), random answers and records at the gates. Whatever comes in, the
outcome is located problems or a clean verdict: never a traceback, never kdc's internal-error."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from compiler.cli import main
from compiler.compile.generate import parse
from compiler.io.names import COMPONENT_MAX
from compiler.records import Record, Sample
from compiler.validate.api import validate_paths

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_gates import HAIKU, NOTES, PLANETS, keeper, taxonomy  # noqa: E402,F401

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
QNA_START = b"version: 3\ncreated_by: fuzz\ntask_description: d\nseed_examples:\n"

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40))
trees = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=5), st.dictionaries(st.text(max_size=12), kids, max_size=5)), max_leaves=25)
qna_like = st.fixed_dictionaries({"version": st.sampled_from([1, 2, 3, "3", None]),
                                  "created_by": scalars, "task_description": scalars,
                                  "seed_examples": st.lists(st.dictionaries(
                                      st.sampled_from(["question", "answer", "context", "x"]), trees), max_size=6)})


def _check_file(raw: bytes, folder: str = "compositional_skills/writing/fuzz") -> list:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        leaf = root / folder
        leaf.mkdir(parents=True)
        (leaf / "qna.yaml").write_bytes(raw)
        [result] = validate_paths([root], root=root)
    for p in result.problems:
        assert p.rule != "internal-error", p
        assert p.line >= 1 and p.column >= 1 and p.message and p.rule
    return result.problems


def _cli_validate(capsys, monkeypatch, raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "knowledge" / "qna.yaml"
        f.parent.mkdir()
        f.write_bytes(raw)
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["kdc", "validate", str(f), "--root", tmp, "--no-cache",
                                          "--format", "json"])
        with pytest.raises(SystemExit) as exc:
            main()
        out, err = capsys.readouterr()
    assert exc.value.code in (0, 1), err
    assert "Traceback" not in out + err and out.lstrip().startswith("{")


@FAST
@given(st.binary(max_size=400))
def test_random_bytes_give_located_problems(raw):
    _check_file(raw)


@FAST
@given(st.binary(max_size=200))
def test_random_bytes_after_a_valid_start(raw):
    _check_file(QNA_START + raw)


@FAST
@given(trees)
def test_random_yaml_gives_located_problems(data):
    _check_file(yaml.safe_dump(data, allow_unicode=True).encode("utf-8"))


@FAST
@given(qna_like)
def test_random_qna_shaped_yaml_gives_located_problems(data):
    _check_file(yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode("utf-8"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=300), trees.map(lambda d: yaml.safe_dump(d).encode("utf-8"))))
def test_random_input_through_the_cli(capsys, monkeypatch, raw):
    _cli_validate(capsys, monkeypatch, raw)


names = st.binary(min_size=1, max_size=260).filter(lambda b: b"/" not in b and b"\0" not in b
                                                    and b not in (b".", b".."))


@FAST
@given(names)
def test_random_folder_names_are_accepted_or_refused_by_rule(name):
    with tempfile.TemporaryDirectory() as tmp:
        leaf = os.path.join(os.fsencode(tmp), b"compositional_skills", name)
        os.makedirs(leaf)
        with open(os.path.join(leaf, b"qna.yaml"), "wb") as fh:
            fh.write(QNA_START + b"  - question: q\n    answer: a\n")
        [result] = validate_paths([Path(tmp)], root=Path(tmp))
    rules = {p.rule for p in result.problems}
    assert "internal-error" not in rules
    text = os.fsdecode(name)
    try:
        text.encode("utf-8")
        utf8 = True
    except UnicodeEncodeError:
        utf8 = False
    assert ("name-not-utf8" in rules) == (not utf8)
    assert ("name-too-long" in rules) == (utf8 and len(name) > COMPONENT_MAX)
    assert ("name-control-character" in rules) == (utf8 and any(b < 32 or b == 127 for b in name)
                                                  or utf8 and any(0x80 <= ord(c) < 0xa0 for c in text))
    result.path.encode("utf-8")  # always printable


@FAST
@given(st.text(max_size=300), st.sampled_from(["freeform_skill", "grounded_skill", "knowledge"]),
       st.sampled_from([None, "stop", "length"]))
def test_random_teacher_answers_parse_or_are_rejected_with_a_reason(text, kind, finish):
    out = parse(text, kind, finish)
    assert isinstance(out, dict) or (isinstance(out, tuple) and out[0] and out[1])


_n = [0]
words = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=120)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([HAIKU, NOTES, PLANETS]), words, st.lists(words, max_size=4), words,
       st.one_of(st.none(), words), st.one_of(st.none(), st.lists(st.floats(-50, 0), max_size=20)))
def test_random_records_get_a_verdict_at_the_gates(taxonomy, node, question, reasoning, answer, context, logprobs):
    _n[0] += 1
    rec = Record(question, tuple(reasoning), answer, context)
    s = Sample(f"f{_n[0]:05d}", node, rec, [{"role": "user", "content": question},
                                           {"role": "assistant", "content": answer}], {"kind": ""})
    v = asyncio.run(_gk(taxonomy).check(s, context=context, logprobs=logprobs))
    assert v.accepted or (v.reason and isinstance(v.detail, str))


_keepers: dict[int, object] = {}


def _gk(taxonomy):
    if id(taxonomy) not in _keepers:
        _keepers[id(taxonomy)] = keeper(taxonomy, min_mean_logprob=-5.0)
    return _keepers[id(taxonomy)]


token = st.sampled_from("the a sun moon star red blue one two three ünïcode 日本".split())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(token, min_size=1, max_size=30), min_size=1, max_size=8), st.floats(0.05, 1.0))
def test_pure_python_minhash_and_similarity_match_the_numpy_path(lists, threshold):
    """compiler/minhash.py's pure-Python twins stand in for numpy on small files: the same
    bytes, the same pairs."""
    from compiler import minhash
    from compiler.validate import checks

    id_lists = [minhash.ids_of(t) for t in lists]
    np_sigs = [s.astype("<u4").tobytes()
               for s in minhash.signature_matrix(*minhash.shingle_runs(id_lists), checks.NUM_PERM)]
    a, b = minhash.permutations(checks.NUM_PERM)
    py_sigs = minhash.signatures_py([minhash.shingles_py(ids) for ids in id_lists],
                                    [int(x) for x in a], [int(x) for x in b])
    assert py_sigs == np_sigs
    assert minhash.permutations_py(checks.NUM_PERM) == ([int(x) for x in a], [int(x) for x in b])
    refs = [checks.SeedRef(f"s{i}", i + 1, 1, checks._digest(" ".join(t)), "", sig)
            for i, (t, sig) in enumerate(zip(lists, py_sigs))]
    big = (refs * 128)[:128]  # 128 x 128 pairs: past the size where similar_pairs switches to numpy
    assert len(big) ** 2 > checks.SMALL_PAIRS
    assert checks._similar_small(big, big, True, threshold) == checks.similar_pairs(big, None, threshold)
    left, right = big[:100], big[100:] + big[:102]  # two lists (a leaf against its siblings), 13,000 pairs
    assert len(left) * len(right) > checks.SMALL_PAIRS
    assert checks._similar_small(left, right, False, threshold) == checks.similar_pairs(left, right, threshold)