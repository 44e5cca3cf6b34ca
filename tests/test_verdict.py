"""compile/verdict.py: the taxonomy's check, worked out in a forked child beside the compile's
start-up, refuses a bad taxonomy exactly as the check in this process did: same located error,
no request, no build folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from compiler.compile.verdict import Verdict, first_error
from compiler.errors import TaxonomyError
from teacher_server import TeacherServer
from test_taxonomy import SKILL, write

ROOT = Path(__file__).resolve().parent.parent
BAD = "version: 3\ncreated_by: x\ntask_description: t\nseed_examples: []\n"


def _taxonomy(tmp_path: Path, bad: bool) -> Path:
    root = tmp_path / "tax"
    for name in ("a", "b"):
        write(root, f"compositional_skills/writing/{name}/qna.yaml", SKILL.replace("Ann", f"Ann {name}"))
    if bad:
        write(root, "compositional_skills/writing/c/qna.yaml", BAD)
        write(root, "compositional_skills/writing/d/qna.yaml", "version: 3\n  created_by: [\n")  # not even YAML
    return root


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    """`code` in a fresh, single-threaded interpreter (where the check forks)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_first_error_is_the_first_located_error_of_the_validation(tmp_path):
    root = _taxonomy(tmp_path, bad=True)
    err = first_error(root)
    assert err["path"] == "compositional_skills/writing/c/qna.yaml" and err["line"] and err["column"]
    assert err["message"].startswith("invalid taxonomy: ") and err["message"].endswith("]")  # its rule id
    assert err["hint"].startswith("2 invalid file(s),") and f"kdc validate {root}" in err["hint"]
    assert first_error(_taxonomy(tmp_path / "ok", bad=False)) is None


def test_the_forked_check_gives_the_same_verdict_as_the_check_in_process(tmp_path):
    bad, good = _taxonomy(tmp_path / "x", bad=True), _taxonomy(tmp_path / "y", bad=False)
    run = _python("""
        import json, sys
        from compiler.compile.verdict import Verdict
        from compiler.errors import TaxonomyError
        out = []
        for root in sys.argv[1:]:
            v = Verdict(root)
            try:
                v.check()
                error = None
            except TaxonomyError as exc:
                error = {"message": exc.message, "path": exc.path, "line": exc.line, "column": exc.column,
                         "hint": exc.hint}
            out.append({"forked": v.forked, "seconds": v.seconds, "error": error})
        print(json.dumps(out))
    """, str(bad), str(good))
    assert run.returncode == 0, run.stderr
    got_bad, got_good = json.loads(run.stdout)
    assert got_bad["forked"] and got_good["forked"]  # a child worked them out
    assert got_bad["error"] == first_error(bad) and got_good["error"] is None
    assert got_bad["seconds"] > 0 and got_good["seconds"] > 0


def test_a_child_that_dies_without_a_verdict_is_replaced_by_the_check_in_process(tmp_path):
    bad = _taxonomy(tmp_path, bad=True)
    run = _python("""
        import os, signal, sys
        from compiler.compile.verdict import Verdict
        from compiler.errors import TaxonomyError
        v = Verdict(sys.argv[1])
        assert v.forked
        os.kill(v._proc.pid, signal.SIGKILL)
        try:
            v.check()
        except TaxonomyError as exc:
            print(exc.path, v.seconds)
        v.close()  # nothing left to stop: it was reaped
    """, str(bad))
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["compositional_skills/writing/c/qna.yaml", "None"]


def test_with_threads_running_the_check_runs_here_when_asked(tmp_path):
    """A harness with threads (this one: pytest, a teacher server) is not forked: the check runs
    in this process at `check()`, and says the same."""
    bad = _taxonomy(tmp_path, bad=True)
    with TeacherServer():  # at least one more thread
        v = Verdict(bad)
        assert not v.forked
        with pytest.raises(TaxonomyError) as exc:
            v.check()
    assert exc.value.path == first_error(bad)["path"]
    with pytest.raises(TaxonomyError):  # known now: raised again at once
        v.check()


def test_the_cli_refuses_a_bad_taxonomy_from_the_child_before_any_request_or_file(tmp_path):
    bad = _taxonomy(tmp_path, bad=True)
    expected = first_error(bad)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "sk-test"}
    with TeacherServer() as srv:
        for extra in ((), ("--dry-run",)):
            out = tmp_path / "out"
            run = subprocess.run([sys.executable, "-m", "compiler", "compile", str(bad), "--out", str(out),
                                  "--teacher", "openai/teacher-test", "--api-base", srv.url, "--no-judge",
                                  "--profile", str(tmp_path / "p.json"), *extra],
                                 env=env, capture_output=True, text=True, timeout=120)
            assert run.returncode == 1 and "Traceback" not in run.stderr
            assert f"{expected['path']}:{expected['line']}:{expected['column']}: {expected['message']}" in run.stderr
            assert expected["hint"] in run.stderr
            assert not out.exists()  # not even the build folder
            assert "load" in json.loads((tmp_path / "p.json").read_text())["phases"]  # it got that far
        assert srv.chat_requests == 0


def test_the_cli_profile_shows_the_check_done_beside_the_start_up(tmp_path):
    good = _taxonomy(tmp_path, bad=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "sk-test"}
    prof = tmp_path / "p.json"
    with TeacherServer() as srv:
        run = subprocess.run([sys.executable, "-m", "compiler", "compile", str(good), "--out", str(tmp_path / "out"),
                              "--teacher", "openai/teacher-test", "--api-base", srv.url, "--no-judge",
                              "--samples-per-node", "2", "--profile", str(prof)],
                             env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert srv.chat_requests > 0
    p = json.loads(prof.read_text())
    assert p["beside_s"]["validate"] > 0  # the child's own time
    at = p["at"]
    # the verdict was read after the tree's load and the set-up, and before the plan and any request
    assert at["load_end"] <= at["validate_start"] <= at["validate_end"] <= at["plan_start"]
    assert at["validate_end"] <= p["process_started"] + p["first_request_s"]
