"""compiler.io.yamlload: safe, bounded loading with marks; every bad input is a located YamlIssue."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from compiler.io.yamlload import (MAX_DEPTH, YamlLoadError, key_node_at, load_bytes, loads, mark_of, node_at,
                               read_bytes, read_text)

ROOT = Path(__file__).resolve().parent.parent


def issue_of(text: str):
    with pytest.raises(YamlLoadError) as exc:
        loads(text)
    return exc.value.issue


def test_loads_keeps_data_and_marks():
    doc = loads(textwrap.dedent("""\
        version: 3
        seed_examples:
          - question: q
            answer: a
        """))
    assert doc.data == {"version": 3, "seed_examples": [{"question": "q", "answer": "a"}]}
    assert mark_of(node_at(doc.node, ["seed_examples", 0, "answer"])) == (4, 13)
    assert mark_of(key_node_at(doc.node, ["seed_examples", 0], "answer")) == (4, 5)
    # a path that stops early gives the deepest node found
    assert mark_of(node_at(doc.node, ["seed_examples", 0, "missing"])) == (3, 5)
    assert doc.duplicates == []


def test_duplicate_keys_are_reported_with_both_lines():
    doc = loads("a: 1\nb: 2\na: 3\n")
    assert doc.data == {"a": 3, "b": 2}  # PyYAML keeps the last one...
    [dup] = doc.duplicates  # ...so we say so
    assert (dup.line, dup.column, dup.rule) == (3, 1, "duplicate-key")
    assert "first defined on line 1" in dup.message


def test_merge_keys_may_repeat():
    doc = loads("x: &x {a: 1}\ny: &y {b: 2}\nz:\n  <<: *x\n  <<: *y\n")
    assert doc.duplicates == []


def test_alias_bomb_rejected_fast_and_small():
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 10):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    text = "\n".join(lines) + "\n"
    tracemalloc.start()
    started = time.perf_counter()
    issue = issue_of(text)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert issue.rule == "alias-bomb"
    assert elapsed < 2.0
    assert peak < 50_000_000


def test_deep_flow_nesting_rejected_with_location():
    issue = issue_of("[" * 10_000 + "]" * 10_000)
    assert issue.rule == "nesting-too-deep"
    assert (issue.line, issue.column) == (1, MAX_DEPTH + 1)


def test_deep_block_nesting_rejected():
    text = "".join("  " * i + f"k{i}:\n" for i in range(3000)) + "  " * 3000 + "v\n"
    assert issue_of(text).rule == "nesting-too-deep"


@pytest.mark.parametrize("text, where", [
    ("[" * 1500, (1, MAX_DEPTH + 1)),  # under the cheap pre-check's bound, over libyaml's 1,000 levels
    ("[" * 1200 + "]" * 600, (1, MAX_DEPTH + 1)),
    ("".join("  " * i + f"k{i}:\n" for i in range(1100)), (MAX_DEPTH + 1, 2 * MAX_DEPTH + 1)),
])
def test_nesting_verdict_and_location_do_not_depend_on_the_libyaml_version(text, where):
    # PyYAML 6.0.4 bundles a libyaml that stops at 1,000 levels with its own ScannerError.
    issue = issue_of(text)
    assert issue.rule == "nesting-too-deep"
    assert (issue.line, issue.column) == where


def test_very_deep_nesting_does_not_crash_the_interpreter():
    # libyaml's composer recurses in C: 500k levels would overflow the stack (a segfault).
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "from compiler.io.yamlload import loads, YamlLoadError\n"
            "try:\n    loads('[' * 500000 + ']' * 500000)\n"
            "except YamlLoadError as e:\n    print(e.issue.rule)\n")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "nesting-too-deep"


def test_syntax_error_is_located_with_a_hint():
    issue = issue_of("question: what: is this\n")
    assert issue.rule == "yaml-syntax"
    assert (issue.line, issue.column) == (1, 15)
    assert "mapping values are not allowed" in issue.message
    assert "quote" in issue.hint


def test_tab_indentation_gets_the_tab_hint():
    issue = issue_of("a:\n\t- b\n")
    assert issue.rule == "yaml-syntax" and issue.line == 2
    assert "tab" in issue.hint


def test_tab_inside_block_scalar_is_accepted_like_the_reference():
    # libyaml refuses this; PyYAML's pure loader (the reference's) accepts it.
    text = "- a: |\n    \tX y\n  q: z\n"
    with pytest.raises(yaml.YAMLError):
        yaml.load(text, Loader=yaml.CSafeLoader)
    assert loads(text).data == yaml.safe_load(text) == [{"a": "\tX y\n", "q": "z"}]


def test_control_character_is_located():
    issue = issue_of("a: b\nc: d\x01e\n")
    assert (issue.rule, issue.line, issue.column) == ("yaml-syntax", 2, 5)
    assert "U+0001" in issue.message


def test_multiple_documents_are_an_error():
    assert issue_of("a: 1\n---\nb: 2\n").rule == "yaml-syntax"


def test_unhashable_key_is_an_error_not_a_crash():
    assert issue_of("? [a, b]\n: c\n").rule == "yaml-syntax"


def test_empty_and_comment_only_documents_load_as_none():
    assert loads("").data is None
    assert loads("# nothing\n").data is None


def test_invalid_utf8_is_located(tmp_path):
    path = tmp_path / "qna.yaml"
    path.write_bytes(b"a: ok\nb: caf\xe9\n")
    with pytest.raises(YamlLoadError) as exc:
        read_text(path)
    assert (exc.value.issue.rule, exc.value.issue.line, exc.value.issue.column) == ("invalid-utf8", 2, 7)


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "qna.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(YamlLoadError) as exc:
        read_text(path)
    assert exc.value.issue.rule == "binary-file"


def test_huge_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "qna.yaml"
    with path.open("wb") as fh:  # sparse: 50 MB on paper, nothing on disk
        fh.truncate(50 * 1024 * 1024)
    started = time.perf_counter()
    with pytest.raises(YamlLoadError) as exc:
        read_bytes(path)
    assert exc.value.issue.rule == "file-too-large"
    assert "52,428,800 bytes" in exc.value.issue.message
    assert time.perf_counter() - started < 1.0


def test_universal_newlines_and_bom_like_the_reference(tmp_path):
    path = tmp_path / "qna.yaml"
    path.write_bytes("\ufeffa: 1\r\nb: two\r\n".encode("utf-8"))
    doc = load_bytes(path.read_bytes())
    assert doc.data == {"a": 1, "b": "two"}
    assert "\r" not in doc.text and not doc.text.startswith("\ufeff")
    assert doc.text == path.read_text(encoding="utf-8").lstrip("\ufeff")


@pytest.mark.parametrize("text", ["k: v\t\n", "k:\tv\n", "- a\t\n", "[a,\tb]\n", "k: >#c\n  x\n"])
def test_what_libyaml_accepts_and_the_reference_refuses_is_refused(text):
    # libyaml takes these; PyYAML's pure loader (the reference's) raises, so the reference rejects.
    yaml.load(text, Loader=yaml.CSafeLoader)
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(text)
    assert issue_of(text).rule == "yaml-syntax"


def test_acceptance_matches_pyyaml_on_random_documents():
    """Differential fuzzing: our verdict (libyaml + guards) equals PyYAML's pure loader's, the
    reference's, on thousands of random token soups (tabs, indicators, flow, anchors, unicode)."""
    import random

    rng = random.Random(1234)
    toks = ["a", "b: ", "- ", ": ", "\t", "  ", "\n", '"x"', "'y'", "[", "]", "{", "}", ",", "#c", "&a ", "*a",
            "!!str ", "|", ">", "? ", "%YAML 1.1\n", "---\n", "...\n", "\u2028", "\x85", "k:", "-", "z ", " \t",
            "\t\n", "1.5", "~", "@", "`", "|2", ">-", "<<: ", "2001-12-14", "é"]
    differ = []
    for _ in range(4000):
        text = "".join(rng.choice(toks) for _ in range(rng.randint(1, 14)))
        try:
            ref = yaml.safe_load(text)
            ref_ok = True
        except Exception:
            ref_ok = False
        try:
            ours = loads(text).data
            ours_ok = True
        except YamlLoadError:
            ours_ok = False
        if ours_ok != ref_ok or (ours_ok and ours != ref):
            differ.append(text)
    assert not differ, f"{len(differ)} differ, e.g. {differ[:5]!r}"


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "qna.yaml"
    os.mkfifo(fifo)
    with pytest.raises(YamlLoadError) as exc:
        read_bytes(fifo)
    assert exc.value.issue.rule == "not-a-file"
