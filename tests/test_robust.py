"""Robustness (issue 10): names no build can write, OS and SQLite errors as one line, one writer
per --out, stale removal that spares live nodes. Real files, real processes, a real teacher."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.validate.api import validate_paths
from teacher_server import TeacherServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_compile import HAIKU, KEY, compile_args, kdc, read_jsonl, tax  # noqa: E402,F401

ROOT = Path(__file__).resolve().parent.parent
LEAF = ROOT / "taxonomy" / HAIKU


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def _leaf(folder: bytes | Path) -> None:
    """A valid skill leaf (the example's haiku) in `folder` (bytes: any name the OS allows)."""
    os.makedirs(folder, exist_ok=True)
    for name in ("qna.yaml", "attribution.txt"):
        src = (LEAF / name).read_bytes()
        with open(os.path.join(os.fsencode(folder), name.encode()), "wb") as fh:
            fh.write(src)


# --------------------------------------------------------------------------- names
def test_validate_refuses_names_no_build_can_write(tmp_path, kdc):
    root = tmp_path / "tax"
    base = root / "compositional_skills" / "writing"
    _leaf(base / "ok")
    _leaf(base / ("a" * 201))
    _leaf(os.fsencode(base) + b"/bad\xff\xfename")
    _leaf(base / "tab\there")
    _leaf(base.joinpath(*["n" * 70] * 16))  # every name fits, the path does not
    results = {r.path: r for r in validate_paths([root], root=root)}
    rules = {path: sorted({p.rule for p in r.problems if p.severity == "error"}) for path, r in results.items()}
    w = "compositional_skills/writing/"
    assert rules[w + "ok/qna.yaml"] == []
    assert rules[w + "a" * 201 + "/qna.yaml"] == ["name-too-long"]
    assert rules[w + "bad\\xff\\xfename/qna.yaml"] == ["name-not-utf8"]
    assert rules[w + "tab\\there/qna.yaml"] == ["name-control-character"]
    assert rules[w + "/".join(["n" * 70] * 16) + "/qna.yaml"] == ["path-too-long"]
    bad = results[w + "bad\\xff\\xfename/qna.yaml"]
    assert (bad.problems[0].line, bad.problems[0].column) == (1, 1) and bad.problems[0].hint

    # the CLI prints them (no UnicodeEncodeError), and compile refuses before any teacher call
    code, out, err = kdc("validate", root, "--root", root, "--no-cache")
    assert code == 1 and "bad\\xff\\xfename/qna.yaml:1:1" in out and "[name-not-utf8]" in out
    with TeacherServer() as srv:
        code, out, err = kdc(*compile_args(root, tmp_path / "out", srv))
        assert code == 1 and "invalid taxonomy" in err and srv.chat_requests == 0
    assert not (tmp_path / "out" / "nodes").exists()


# --------------------------------------------------------------------------- OS and SQLite errors
def _one_error(err: str) -> str:
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err and "hint:" in err, err
    return lines[0]


def test_an_out_that_cannot_be_created_is_one_located_line(tax, tmp_path, kdc):
    (tmp_path / "file").write_text("x")
    with TeacherServer() as srv:
        code, _, err = kdc(*compile_args(tax, tmp_path / "file" / "out", srv))
    assert code == 1 and str(tmp_path / "file" / "out") in _one_error(err) and "Not a directory" in err


def test_a_corrupt_cache_is_one_located_line_and_is_kept(tax, tmp_path, kdc):
    cache = tmp_path / "out" / ".kdc" / "cache.sqlite"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"this is not a database" * 100)
    with TeacherServer() as srv:
        code, _, err = kdc(*compile_args(tax, tmp_path / "out", srv))
        assert srv.chat_requests == 0
    line = _one_error(err)
    assert code == 1 and str(cache) in line and "mv " in err
    assert cache.read_bytes() == b"this is not a database" * 100  # nothing of the user's is touched


def test_a_full_disk_is_one_line_and_a_rerun_reuses_what_was_paid(tax, tmp_path, kdc):
    """RLIMIT_FSIZE makes the kernel refuse writes past a size (EFBIG), as a full disk does."""
    out = tmp_path / "out"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (96 * 1024, 96 * 1024))

    with TeacherServer() as srv:
        proc = subprocess.run([sys.executable, "-m", "compiler", *map(str, compile_args(tax, out, srv))],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=limit,
                              capture_output=True, text=True, timeout=300)
        paid = srv.chat_requests
        assert proc.returncode == 1 and paid > 0, proc.stderr
        _one_error(proc.stderr)
        assert not (out / "manifest.json").exists()
        srv.reset_log()
        code, _, err = kdc(*compile_args(tax, out, srv))
        assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["totals"]["cache_hits"] > 0 and m["totals"]["teacher_calls"] + m["totals"]["cache_hits"] >= 18


def test_disk_full_inside_a_write_is_one_line(tax, tmp_path, kdc, monkeypatch):
    import errno

    import compiler.io.fsutil as fsutil

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fsutil.os, "fsync", full)
    with TeacherServer() as srv:
        code, _, err = kdc(*compile_args(tax, tmp_path / "out", srv))
    assert code == 1 and "No space left on device" in _one_error(err) and "free space" in err


# --------------------------------------------------------------------------- one writer per --out
HOLD = "import sys, time; from compiler.io.outlock import hold\nwith hold(sys.argv[1], 'compile'):\n" \
       "    print('held', flush=True); time.sleep(600)\n"


def test_a_second_writer_into_the_same_out_is_refused_at_once(tax, tmp_path, kdc):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with TeacherServer() as srv:
            started = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "compiler", *map(str, compile_args(tax, out, srv))],
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                                  timeout=120)
            assert proc.returncode == 1 and srv.chat_requests == 0
            line = _one_error(proc.stderr)
            assert f"in use by kdc compile (pid {holder.pid})" in line and time.monotonic() - started < 60
            code, _, err = kdc("review", out, "--apply", tax / HAIKU / "qna.yaml")
            assert code == 1 and "in use by kdc compile" in err
            holder.send_signal(signal.SIGKILL)  # the OS releases the lock of a killed holder
            holder.wait()
            code, _, err = kdc(*compile_args(tax, out, srv))
            assert code == 0, err
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- stale removal
def test_removing_a_parent_leaf_keeps_its_live_child(tax, tmp_path, kdc):
    child = tax / HAIKU / "renga"
    child.mkdir()
    shutil.copy(tax / HAIKU / "qna.yaml", child / "qna.yaml")
    shutil.copy(tax / HAIKU / "attribution.txt", child / "attribution.txt")
    out = tmp_path / "out"
    with TeacherServer() as srv:
        assert kdc(*compile_args(tax, out, srv))[0] == 0
        before = (out / "nodes" / HAIKU / "renga" / "train.jsonl").read_bytes()
        (tax / HAIKU / "qna.yaml").unlink()
        assert kdc(*compile_args(tax, out, srv))[0] == 0
    m = json.loads((out / "manifest.json").read_text())
    assert HAIKU not in m["nodes"] and HAIKU + "/renga" in m["nodes"]
    for rel in m["nodes"][HAIKU + "/renga"]["files"].values():
        assert (out / rel).exists(), rel
    assert (out / "nodes" / HAIKU / "renga" / "train.jsonl").read_bytes() == before
    assert len(read_jsonl(out / "nodes" / HAIKU / "renga" / "train.jsonl")) == 3
    assert not (out / "nodes" / HAIKU / "train.jsonl").exists() and not (out / "hf").exists()
    assert sorted(p.name for p in (out / "nodes" / HAIKU).iterdir()) == ["renga"]


# --------------------------------------------------------------------------- broken leaves
SOLAR = "knowledge/science/astronomy/solar_system"


def _broken_leaves(tax: Path) -> dict[str, str]:
    """Two copies of the solar-system leaf whose documents cannot load: a pattern that matches
    no file, a commit that is not in the repo (validate only warns: compile must report both)."""
    text = (tax / SOLAR / "qna.yaml").read_text()
    made = {}
    for name, old, new in (("no_match", '"*.md"', '"*.rst"'),
                           ("no_commit", "ba82826c31b3073f80213f54e606f5b0d528898c", "deadbeef" * 5)):
        leaf = tax / "knowledge" / "science" / "astronomy" / name
        leaf.mkdir()
        (leaf / "qna.yaml").write_text(text.replace(old, new))
        shutil.copy(tax / SOLAR / "attribution.txt", leaf / "attribution.txt")
        made[f"knowledge/science/astronomy/{name}"] = f"knowledge/science/astronomy/{name}/qna.yaml"
    return made


def test_compile_lists_every_broken_leaf_and_keep_going_compiles_the_rest(tax, tmp_path, kdc):
    broken = _broken_leaves(tax)
    out = tmp_path / "out"
    with TeacherServer() as srv:
        code, _, err = kdc(*compile_args(tax, out, srv))
        assert code == 1 and srv.chat_requests == 0
        assert "2 knowledge leaves cannot be compiled" in err and "--keep-going" in err
        for file in broken.values():
            assert file in err
        code, _, err = kdc(*compile_args(tax, out, srv, "--keep-going"))
    assert code == 4, err
    m = json.loads((out / "manifest.json").read_text())
    assert sorted(m["broken"]) == sorted(broken)
    assert m["broken"]["knowledge/science/astronomy/no_match"]["file"] == broken["knowledge/science/astronomy/no_match"]
    assert "matches" in m["broken"]["knowledge/science/astronomy/no_match"]["error"]
    assert "deadbeef" in m["broken"]["knowledge/science/astronomy/no_commit"]["error"]
    assert not set(broken) & set(m["nodes"]) and len(m["nodes"]) == 6
    for node_id, n in m["nodes"].items():
        assert n["accepted"] == n["target"] == 3, node_id
        assert len(read_jsonl(out / n["files"]["train"])) == 3


def test_compile_after_a_crashed_review_apply_undoes_it_first(tax, tmp_path, kdc, monkeypatch):
    import csv

    import compiler.io.builddir as writer
    import compiler.review.apply as review
    import compiler.review.sheet as sheets

    out = tmp_path / "out"
    with TeacherServer() as srv:
        assert kdc(*compile_args(tax, out, srv))[0] == 0
        sheet = sheets.draw_sheet(out, seed=1)
        with sheet.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        rows[0].update(verdict="reject", why="wrong")
        with sheet.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\r\n")
            w.writeheader()
            w.writerows(rows)
        real, calls = writer.atomic_write, []

        class Crash(BaseException):
            pass

        def crash_on_second(path, data):
            calls.append(path)
            if len(calls) == 2:
                raise Crash()
            real(path, data)

        monkeypatch.setattr(writer, "atomic_write", crash_on_second)
        with pytest.raises(Crash):
            review.apply_sheet(out, sheet, reviewer="alice")
        monkeypatch.setattr(writer, "atomic_write", real)
        assert (out / ".kdc" / "apply-journal").is_dir() and (out / "reviews" / "verdicts.jsonl").is_file()
        assert kdc(*compile_args(tax, out, srv))[0] == 0
        assert not (out / ".kdc" / "apply-journal").exists()
        assert not (out / "reviews" / "verdicts.jsonl").exists()  # the crashed apply did not happen
        assert review.apply_sheet(out, sheet, reviewer="alice").rejected == 1
    assert rows[0]["id"] not in {s["id"] for s in read_jsonl(out / "nodes" / rows[0]["node_id"] / "train.jsonl")}
