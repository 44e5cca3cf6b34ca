"""`kdc compile --profile FILE`: phase timings of a run, written beside the build, never into it."""

from __future__ import annotations

import asyncio
import json
import shutil

from compiler.compile.profile import NULL, Profile
from teacher_server import TeacherServer
from test_compile import _env, compile_args, kdc, tax, tree_hashes  # noqa: F401  (fixtures)

PHASES = ["import", "config", "load", "setup", "validate", "plan", "generation", "writing", "card", "report"]


def test_profile_times_every_phase_in_order_and_leaves_the_build_bytes_alone(tax, tmp_path, kdc):
    out, prof = tmp_path / "out", tmp_path / "profile.json"
    with TeacherServer(latency=0.01) as srv:
        assert kdc(*compile_args(tax, out, srv))[0] == 0
        plain = tree_hashes(out)
        plain_manifest = json.loads((out / "manifest.json").read_text())
        shutil.rmtree(out)  # a fresh build (no cache), this time profiled
        assert kdc(*compile_args(tax, out, srv, "--profile", prof))[0] == 0
        requests = srv.chat_requests
    assert tree_hashes(out) == plain
    manifest = json.loads((out / "manifest.json").read_text())
    for m in (manifest, plain_manifest):  # the run counters are the only part allowed to differ
        for k in ("seconds", "mean_in_flight", "http_attempts", "retries"):
            m["totals"].pop(k)
    assert manifest == plain_manifest
    assert not any("profile" in p.name for p in out.rglob("*"))

    p = json.loads(prof.read_text())
    assert list(p["phases"]) == PHASES
    assert all(v >= 0 for v in p["phases"].values())
    at = p["at"]
    starts = [at[f"{name}_start"] for name in PHASES]
    assert starts == sorted(starts)  # the phases ran in this order
    for name in PHASES:
        assert at[f"{name}_end"] >= at[f"{name}_start"]
    # the first request went out and the last answer came back inside generation
    base = p["process_started"]
    assert requests > 0 and p["since"] == "process start"
    assert at["generation_start"] <= base + p["first_request_s"] <= base + p["last_answer_s"] <= at["generation_end"]
    assert p["after_last_answer_s"] >= p["phases"]["writing"] + p["phases"]["report"]
    assert p["gating_s"]["decide"] > 0 and p["gating_s"]["screen"] > 0  # every answer was gated
    assert p["total_s"] >= sum(v for k, v in p["phases"].items() if k != "import")


def test_a_failed_compile_still_writes_the_phases_it_reached(tmp_path, kdc):
    prof = tmp_path / "profile.json"
    (tmp_path / "tax").mkdir()
    code, _, err = kdc("compile", tmp_path / "tax", "--out", tmp_path / "out", "--profile", prof)
    assert code != 0 and "no leaf to compile" in err
    p = json.loads(prof.read_text())
    assert "validate" in p["phases"] and "generation" not in p["phases"]
    assert p["first_request_s"] is None and p["last_answer_s"] is None


def test_timed_sums_sync_and_async_calls_and_null_adds_nothing(tmp_path):
    prof = Profile()

    def work(x):
        return x * 2

    async def answer(x):
        await asyncio.sleep(0.01)
        return x + 1

    timed, asked = prof.timed(work, "decide"), prof.requests(prof.timed(answer, "screen"))
    assert [timed(i) for i in range(3)] == [0, 2, 4]
    assert asyncio.run(asked(1)) == 2
    assert 0 < prof.inner["decide"] < prof.inner["screen"]
    assert prof.first_request is not None and prof.last_answer >= prof.first_request
    prof.write(tmp_path / "p.json")  # also unhooks its GC callback
    assert json.loads((tmp_path / "p.json").read_text())["gating_s"]["screen"] >= 0.01
    assert NULL.timed(work, "decide") is work and NULL.requests(answer) is answer  # no wrapper per call
    with NULL.phase("x"):
        pass
    assert not hasattr(NULL, "phases")
