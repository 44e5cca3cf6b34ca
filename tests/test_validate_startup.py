"""A one-file `kdc validate` (a contributor's pull request in CI) imports only what it uses.

Start-up is most of such a run, so the heavy libraries stay out of it: each check runs the real
CLI in a fresh interpreter and reads its sys.modules at exit. Also: yamllint's configuration,
resolved without yamllint.config, is the one YamlLintConfig builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from compiler.validate import lint

ROOT = Path(__file__).resolve().parent.parent

# Imported by some other command or path, never by a one-file validate.
HEAVY = ["numpy", "scipy", "datasketch", "jsonschema", "referencing", "attrs", "attr", "networkx", "rich",
         "pathspec", "yamllint.config", "importlib.metadata", "jinja2", "litellm", "multiprocessing"]
# What a one-file validate does use: proof that the checks ran.
USED = ["yaml", "yamllint.linter", "compiler.validate.schemaeval", "compiler.validate.lint",
        "compiler.minhash"]

DRIVER = textwrap.dedent("""
    import atexit, json, sys
    out, argv = sys.argv[1], sys.argv[2:]
    atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
    sys.argv = ["kdc", *argv]
    from compiler.cli import main
    main()
""")

SKILL = "".join(["version: 3\ncreated_by: tester\ntask_description: Answer questions.\nseed_examples:\n"]
                + [f"  - question: Question number {w}?\n    answer: Answer number {w}.\n"
                   for w in ("one", "two", "three", "four", "five")])


def _validate(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    out = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", DRIVER, str(out), "validate", *args], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    return run, set(json.loads(out.read_text()))


def _leaf(tmp_path: Path, folder: str, text: str) -> Path:
    f = tmp_path / "taxonomy" / folder / "qna.yaml"
    f.parent.mkdir(parents=True)
    f.write_text(text, encoding="utf-8")
    (f.parent / "attribution.txt").write_text("Title of work: tests\n", encoding="utf-8")
    return f


@pytest.fixture
def warmed(tmp_path):
    """A user cache as any earlier run leaves it (the MinHash permutations are written once)."""
    f = _leaf(tmp_path, "compositional_skills/warm", SKILL)
    run, _ = _validate(tmp_path, str(f), "--no-cache")
    assert run.returncode == 0, run.stderr
    return tmp_path


def _assert_light(modules: set[str]) -> None:
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert not heavy, f"a one-file validate imported {heavy}"
    assert set(USED) <= modules, sorted(set(USED) - modules)


def test_valid_skill_file_imports_nothing_heavy(warmed):
    f = _leaf(warmed, "compositional_skills/writing/a", SKILL)
    run, modules = _validate(warmed, str(f), "--no-cache")
    assert run.returncode == 0, run.stderr
    assert "1 file checked: 1 valid, 0 invalid (0 errors, 0 warnings)" in run.stdout
    _assert_light(modules)


def test_broken_file_reports_the_same_problems_without_heavy_imports(warmed):
    text = SKILL.replace("created_by: tester", "created_by: tester  \nauthor: x")
    text = text.replace("answer: Answer number two.", "answer: ''")
    f = _leaf(warmed, "compositional_skills/writing/b", text)
    run, modules = _validate(warmed, str(f), "--no-cache", "--format", "json")
    assert run.returncode == 1, run.stderr
    rules = [(p["line"], p["rule"]) for p in json.loads(run.stdout)["files"][0]["problems"]]
    assert rules == [(2, "yamllint/trailing-spaces"), (3, "schema/unevaluated"), (9, "schema/min-length")]
    _assert_light(modules)


def test_knowledge_file_with_a_local_document_repo(warmed, example_taxonomy):
    f = example_taxonomy / "knowledge" / "science" / "astronomy" / "solar_system" / "qna.yaml"
    run, modules = _validate(warmed, str(f), "--root", str(example_taxonomy), "--no-cache")
    assert run.returncode == 0, run.stderr
    assert "(0 errors, 0 warnings)" in run.stdout  # the documents were found with git
    assert "compiler.io.gitrepo" in modules
    _assert_light(modules)


def test_warm_cache_run_reads_no_package_metadata(warmed):
    f = _leaf(warmed, "compositional_skills/writing/c", SKILL)
    first, _ = _validate(warmed, str(f), "--format", "json")
    second, modules = _validate(warmed, str(f), "--format", "json")
    assert json.loads(second.stdout)["summary"]["cache_hits"] == 1
    assert json.loads(first.stdout)["files"] == json.loads(second.stdout)["files"]
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert not heavy and "tempfile" not in modules, heavy


@pytest.mark.parametrize("spec", [
    lint.REFERENCE_CONFIG, "extends: default", "{extends: relaxed}", "{rules: {trailing-spaces: enable}}",
    "extends: relaxed\nrules:\n  indentation: {spaces: 4, level: warning}\n  truthy: enable\n  line-length: {max: 99}",
])
def test_yamllint_rules_resolve_as_yamllint_config_does(spec):
    from yamllint.config import YamlLintConfig

    ours, theirs = lint._config(spec), YamlLintConfig(spec)
    assert isinstance(ours, lint._Rules)  # resolved here, not by YamlLintConfig
    assert list(ours.rules.items()) == list(theirs.rules.items())
    assert [r.ID for r in ours.enabled_rules("")] == [r.ID for r in theirs.enabled_rules("")]


@pytest.mark.parametrize("spec", [
    "{extends: relaxed, ignore: 'x/*.yaml'}",  # ignore patterns need pathspec
    "{rules: {trailing-spaces: {level: warning, ignore: ['a.yaml']}}}",
    "{extends: relaxed, locale: C}",
])
def test_other_yamllint_configs_go_to_yamllint(spec):
    from yamllint.config import YamlLintConfig

    assert isinstance(lint._config(spec), YamlLintConfig)


@pytest.mark.parametrize("spec", ["{rules: {trailing-spaces: {level: fatal}}}", "{rules: {colons: {max: 2}}}",
                                  "{rules: {no-such-rule: enable}}"])
def test_invalid_yamllint_configs_raise_yamllints_error(spec):
    from yamllint.config import YamlLintConfigError

    with pytest.raises(YamlLintConfigError):
        lint._config(spec)
