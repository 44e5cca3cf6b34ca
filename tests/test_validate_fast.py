"""`kdc validate`'s click-free fast path (compiler/cli/validate_fast.py) against the click command:
the same parameters for every argument list it accepts, click's own messages for the rest, the
same output and exit status end to end, and no click import on the fast path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.cli import validate_cmd
from compiler.cli.validate_fast import parse

ROOT = Path(__file__).resolve().parent.parent
SKILL = ("version: 3\ncreated_by: tester\ntask_description: Answer questions.\nseed_examples:\n"
         + "".join(f"  - question: Question number {w}?\n    answer: Answer number {w}.\n"
                   for w in ("one", "two", "three", "four", "five")))


@pytest.fixture
def tree(tmp_path, monkeypatch):
    leaf = tmp_path / "taxonomy" / "compositional_skills" / "a"
    leaf.mkdir(parents=True)
    (leaf / "qna.yaml").write_text(SKILL, encoding="utf-8")
    (leaf / "attribution.txt").write_text("Title of work: tests\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _click_params(argv: list[str]) -> dict:
    with validate_cmd.validate.make_context("validate", list(argv)) as ctx:
        return dict(ctx.params)


ACCEPTED = [
    [],
    ["taxonomy/compositional_skills/a/qna.yaml"],
    ["taxonomy", "--strict", "--no-cache", "--fetch"],
    ["--root", "taxonomy", "taxonomy/compositional_skills", "--format", "json"],
    ["--root=taxonomy", "--format=github", "-j", "3", "--allow-repo", "../x", "--allow-repo=https://h/"],
    ["-j2", "--jobs", "0", "--max-context-words", "10", "--max-qa-words=7", "--max-skill-words", "1_000"],
    ["--near-dup-threshold", "0.5", "--changed-since", "main", "--", "taxonomy"],
    ["--near-dup-threshold=1", "--format", "human", "--format", "json", "--root", "taxonomy", "--root", "."],
]
REFUSED = [
    ["--help"], ["-h"], ["--strict=yes"], ["--unknown"], ["--jobs", "-1"], ["-j", "x"], ["--format", "xml"],
    ["--near-dup-threshold", "0"], ["--near-dup-threshold", "1.5"], ["--max-qa-words", "0"], ["no/such/file"],
    ["--root", "taxonomy/compositional_skills/a/qna.yaml"], ["--root"], ["--root", "--strict"], ["-"],
]


@pytest.mark.parametrize("argv", ACCEPTED)
def test_accepted_arguments_give_clicks_parameters(tree, argv):
    ours = parse(argv)
    assert ours is not None
    assert ours == _click_params(argv)


@pytest.mark.parametrize("argv", REFUSED)
def test_anything_else_is_left_to_click(tree, argv):
    assert parse(argv) is None


def _kdc(cwd: Path, *args: str, driver: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-c", driver, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


FAST = "import sys; sys.argv = ['kdc', *sys.argv[1:]]; from compiler.cli import main; main()"
CLICK = "import sys; sys.argv = ['kdc', *sys.argv[1:]]; from compiler.cli.group import main; main()"
MODULES = ("import atexit, json, sys; atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
           + FAST.replace("; ", "\n"))


@pytest.mark.parametrize("args", [
    ["taxonomy"], ["taxonomy", "--format", "json", "--no-cache"], ["taxonomy", "--format", "github"],
    ["taxonomy", "--strict", "--max-qa-words", "3"], ["no/such/file"], ["--jobs", "-1", "taxonomy"],
])
def test_fast_and_click_paths_print_the_same(tree, args):
    (tree / "taxonomy" / "compositional_skills" / "b").mkdir()
    (tree / "taxonomy" / "compositional_skills" / "b" / "qna.yaml").write_text(SKILL.replace("tester", "tester  "))
    fast, slow = _kdc(tree, "validate", *args, driver=FAST), _kdc(tree, "validate", *args, driver=CLICK)
    assert fast.returncode == slow.returncode != 0
    if "--format" in args and "json" in args:
        a, b = json.loads(fast.stdout), json.loads(slow.stdout)
        a["summary"].pop("seconds"), b["summary"].pop("seconds")
        assert a == b and a["summary"]["invalid"] == 1
    else:
        assert fast.stdout == slow.stdout
        assert fast.stderr == slow.stderr


def test_the_fast_path_does_not_import_click(tree):
    run = _kdc(tree, "validate", "taxonomy", "--no-cache", driver=MODULES)
    assert run.returncode == 0, run.stderr
    assert "1 file checked: 1 valid" in run.stdout
    modules = json.loads(run.stderr.strip().splitlines()[-1])
    assert "click" not in modules and "compiler.validate.lint" in modules


def test_help_and_other_commands_still_go_through_click(tree):
    run = _kdc(tree, "validate", "--help", driver=FAST)
    assert run.returncode == 0 and "--near-dup-threshold" in run.stdout and "--allow-repo" in run.stdout
    run = _kdc(tree, "--version", driver=FAST)
    assert run.returncode == 0 and "kdc" in run.stdout
