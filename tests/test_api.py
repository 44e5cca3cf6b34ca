"""The library API (`import compiler as kdc`): lazy, documented, and the CLI's own code path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import compiler as kdc
from compiler.errors import ConfigError
from teacher_server import TeacherServer
from test_compile import KEY, compile_args, tree_hashes

ROOT = Path(__file__).resolve().parent.parent
LEAVES = {"compositional_skills/writing/freeform/haiku", "compositional_skills/reasoning/freeform/word_problems",
          "compositional_skills/extraction/grounded/meeting_action_items",
          "compositional_skills/summarization/grounded/incident_report",
          "knowledge/science/astronomy/solar_system", "knowledge/technology/version_control/git_internals"}


@pytest.fixture
def tax(tmp_path, example_taxonomy, monkeypatch) -> Path:
    """A private copy of the example taxonomy and its document repos (same relative layout)."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    shutil.copytree(example_taxonomy, tmp_path / "taxonomy")
    shutil.copytree(ROOT / "build" / "doc-repos", tmp_path / "build" / "doc-repos", symlinks=True)
    (tmp_path / ".git").mkdir()
    return tmp_path / "taxonomy"


def test_import_compiler_loads_no_stage():
    probe = "import sys, compiler; print(sorted(m for m in sys.modules if m.startswith('compiler.') or m == 'numpy'))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


def test_every_exported_name_resolves_and_is_documented():
    for name in kdc.__all__:
        value = getattr(kdc, name)
        assert name == "__version__" or (value.__doc__ or "").strip(), name
    assert set(kdc.__all__) <= set(dir(kdc))
    with pytest.raises(AttributeError, match="no attribute 'compile'"):
        kdc.__getattr__("compile")  # the stage folders are not API names


def test_validate_finds_the_example_valid_and_locates_a_broken_file(tax):
    results = kdc.validate_taxonomy(tax)
    assert {r.path.rsplit("/", 1)[0] for r in results} == LEAVES and all(r.valid for r in results)
    haiku = tax / "compositional_skills/writing/freeform/haiku/qna.yaml"
    haiku.write_text(haiku.read_text().replace("created_by:", "created_by_typo:", 1))
    [bad] = [r for r in kdc.validate_taxonomy(tax, [haiku.parent]) if not r.valid]
    assert bad.path == "compositional_skills/writing/freeform/haiku/qna.yaml"
    assert any(p.line > 1 and p.rule.startswith("schema/") for p in bad.problems)


def test_settings_and_plan(tax):
    settings = kdc.load_settings(tax, out=tax.parent / "out", samples_per_node=4)
    assert isinstance(settings, kdc.CompileConfig) and settings.samples_per_node == 4
    plans = kdc.plan_taxonomy(settings)
    assert {p.leaf.node_id for p in plans} == LEAVES
    for p in plans:
        assert p.eval_seeds and p.train_seeds  # held-out seeds are never training seeds
        assert not {s.question for s in p.eval_seeds} & {s.question for s in p.train_seeds}
        if p.leaf.kind == "knowledge":
            assert p.chunks and p.target >= 4
        else:
            assert p.target == 4
    with pytest.raises(ConfigError, match="unknown setting"):
        kdc.load_settings(tax, samples=3)
    with pytest.raises(ConfigError, match="unknown train setting"):
        kdc.train_settings(epochs=3)
    assert kdc.train_settings(max_steps=2, method="full").max_steps == 2


def test_compile_through_the_api_writes_the_cli_build_byte_for_byte(tax, tmp_path, capsys, monkeypatch):
    with TeacherServer() as srv:
        settings = kdc.load_settings(tax, out=tmp_path / "api", teacher="openai/teacher-test",
                                     api_base=[srv.url], concurrency=8, samples_per_node=3, judge="")
        build = kdc.compile_taxonomy(settings)
        monkeypatch.setattr(sys, "argv", ["kdc", *map(str, compile_args(tax, tmp_path / "cli", srv))])
        with pytest.raises(SystemExit) as exc:
            from compiler.cli import main
            main()
        assert exc.value.code == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "api" / "manifest.json").read_text())
    assert build.out == tmp_path / "api" and build.manifest["nodes"].keys() == manifest["nodes"].keys() == LEAVES
    assert all(n["accepted"] >= 1 for n in manifest["nodes"].values())
    api, cli = tree_hashes(tmp_path / "api"), tree_hashes(tmp_path / "cli")
    assert api.pop("report.html") and cli.pop("report.html")  # its footer names the build folder
    assert api == cli and {n["files"]["train"] for n in manifest["nodes"].values()} <= api.keys()
