"""Teacher worker processes (compiler/llm/transport.py) against a real OpenAI-protocol server on
127.0.0.1: the calls really run in the workers, a dead worker is routed around, a killed parent
leaves no orphan, big messages cross the pipes whole, and a compile writes the same bytes with
or without workers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.llm.teacher import Completion, Teacher, response_format
from compiler.llm.transport import InProcess, WorkerPool
from teacher_server import TeacherServer

ROOT = Path(__file__).resolve().parent.parent
FMT = response_format("freeform_skill")


def messages(i: int, size: int = 40) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You write data."},
            {"role": "user", "content": f"Write example {i}. " + "word " * size}]


def run(teacher: Teacher, n: int, size: int = 40, during=None) -> list:
    async def go():
        tasks = [asyncio.ensure_future(teacher.complete(messages(i, size), FMT, seed=i)) for i in range(n)]
        if during is not None:
            await during()
        return await asyncio.gather(*tasks, return_exceptions=True)
    return asyncio.run(go())


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-transport")


def test_auto_worker_count_follows_concurrency_and_the_embedded_model_stays_in_process():
    """Auto: in-process below 128 in flight (hosted teachers run at tens of requests a second,
    where workers only cost), then one worker per 64 in flight, up to the cores. This is litellm's
    rule; the direct client never needs workers (tests/test_httpclient.py)."""
    cores = os.cpu_count() or 1
    base = ["http://127.0.0.1:9/v1"]
    assert Teacher("openai/t", api_bases=base, concurrency=8, workers=None, transport="litellm").workers == 1
    assert Teacher("openai/t", api_bases=base, concurrency=64, workers=None, transport="litellm").workers == 1
    assert Teacher("openai/t", api_bases=base, concurrency=127, workers=None, transport="litellm").workers == 1
    assert Teacher("openai/t", api_bases=base, concurrency=128, workers=None, transport="litellm").workers == min(cores, 2)
    assert Teacher("openai/t", api_bases=base, concurrency=512, workers=None, transport="litellm").workers == min(cores, 8)
    assert Teacher("openai/t", api_bases=["http://127.0.0.1:9/v1"], concurrency=2, workers=5).workers == 2
    assert Teacher("kdc/gemma3-270m", workers=4).workers == 1


def test_the_calls_run_in_the_workers_not_in_this_process(monkeypatch):
    with TeacherServer(latency=0.05) as srv:
        teacher = Teacher("openai/teacher-test", api_bases=[srv.url], concurrency=8, workers=2, timeout=10,
                          transport="litellm")
        with teacher:
            assert isinstance(teacher._transport, WorkerPool) and len(teacher._transport.pids) == 2

            async def broken(**_kw):
                raise AssertionError("litellm was called in the parent")
            monkeypatch.setattr(teacher._litellm, "acompletion", broken)  # the forked workers keep theirs
            answers = run(teacher, 16)
        assert all(isinstance(a, Completion) and json.loads(a.text)["question"] for a in answers)
        assert srv.chat_requests == 16 and teacher.stats.calls == 16 and not teacher.stats.failures
    assert isinstance(teacher._transport, InProcess)  # stopped on exit


def test_messages_bigger_than_a_pipe_buffer_cross_whole():
    size = 60_000  # ~300 KB of prompt: several pipe buffers per request
    with TeacherServer() as srv:
        teacher = Teacher("openai/teacher-test", api_bases=[srv.url], concurrency=4, workers=2, timeout=20)
        with teacher:
            answers = run(teacher, 4, size=size)
        sent = sorted(e["body"]["messages"][1]["content"] for e in srv.log)
    assert all(isinstance(a, Completion) for a in answers)
    assert sent == sorted(messages(i, size)[1]["content"] for i in range(4))


def test_a_killed_worker_fails_only_its_attempts_and_they_are_retried_on_the_other():
    with TeacherServer(latency=0.4) as srv:
        teacher = Teacher("openai/teacher-test", api_bases=[srv.url], concurrency=8, workers=2,
                          timeout=10, max_retries=2)
        with teacher:
            victim = teacher._transport.pids[0]

            async def kill_one():
                await asyncio.sleep(0.2)  # requests are in flight in both workers
                os.kill(victim, signal.SIGKILL)
            answers = run(teacher, 8, during=kill_one)
            assert [w.alive for w in teacher._transport.workers] == [False, True]
    assert all(isinstance(a, Completion) for a in answers)
    assert teacher.stats.failures.get("http-error", 0) >= 1
    assert teacher.stats.retries == teacher.stats.failures["http-error"]
    assert not teacher.unavailable


def test_with_every_worker_dead_the_calls_fall_back_to_this_process():
    with TeacherServer() as srv:
        teacher = Teacher("openai/teacher-test", api_bases=[srv.url], concurrency=4, workers=2, timeout=10)
        with teacher:
            for pid in teacher._transport.pids:
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while any(alive(p) for p in teacher._transport.pids):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            answers = run(teacher, 4)
    assert all(isinstance(a, Completion) for a in answers)


def test_kill_9_of_the_parent_leaves_no_orphan_worker(tmp_path):
    tax = tmp_path / "tax"
    leaf = tax / "compositional_skills" / "demo" / "explain"
    leaf.mkdir(parents=True)
    seeds = "".join(f"  - question: How would you explain idea {j} to a colleague?\n"
                    f"    answer: Idea {j} is explained with one example and a short summary.\n" for j in range(6))
    (leaf / "qna.yaml").write_text(f"version: 3\ncreated_by: test\ntask_description: Explain ideas.\n"
                                   f"seed_examples:\n{seeds}", encoding="utf-8")
    with TeacherServer(latency=0.3) as srv:
        proc = subprocess.Popen([sys.executable, "-m", "compiler", "compile", str(tax), "--out", str(tmp_path / "out"),
                                 "--teacher", "openai/teacher-test", "--api-base", srv.url, "--concurrency", "8",
                                 "--teacher-workers", "2", "--samples-per-node", "40", "-q"],
                                env={**os.environ, "PYTHONPATH": str(ROOT)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while srv.stats.snapshot()["by_status"].get(200, 0) < 4:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        workers = children(proc.pid)
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while any(alive(p) for p in workers):
            assert time.monotonic() < deadline, "a teacher worker outlived its parent"
            time.sleep(0.05)
