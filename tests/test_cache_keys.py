"""Caches that never lie (issue 12 §4): every input that changes an answer is in its cache key,
and every input that only changes the verdict re-gates cached answers without asking again.
Each step counts the requests that reach the loopback teacher and judge."""

from __future__ import annotations

import hashlib
import shutil

import compiler.gates.judge
from compiler.resources import data_dir
from teacher_server import TeacherServer
from test_compile import _env, compile_args, kdc, read_jsonl, tax  # noqa: F401 (fixtures)


def judge_reply(body: dict, number: int) -> dict:
    low = hashlib.sha256(body["messages"][-1]["content"].encode()).digest()[0] % 4 == 0
    return {"faithfulness": 5, "relevance": 4, "format": 2 if low else 5, "standalone": 5, "rationale": "hash judge"}


def _lines(out, manifest_nodes, kind):
    return {n: (out / m["files"][kind]).read_bytes() for n, m in manifest_nodes.items()}


def test_each_input_is_in_the_right_key(tax, tmp_path, kdc, monkeypatch):  # noqa: F811
    import json

    out = tmp_path / "out"
    base = (tax / "kdc.yaml").read_text()

    def run(gates: str = "", extra: str = "") -> tuple[int, int, dict]:
        cfg = tmp_path / "k.yaml"
        cfg.write_text(base + extra + f"gates: {{judge_api_base: '{judge.url}', {gates}}}\n")
        with TeacherServer() as srv:
            code, _, err = kdc(*compile_args(tax, out, srv, "--config", cfg, "--judge", "openai/judge-test"))
            assert code == 0, err
            asked = srv.chat_requests
        return asked, judge.chat_requests, json.loads((out / "manifest.json").read_text())

    with TeacherServer(responder=judge_reply, model="judge-test") as judge:
        asked, judged, m1 = run()
        assert asked > 0 and judged > 0
        assert any(n["rejected"].get("judge") for n in m1["nodes"].values())
        train1 = _lines(out, m1["nodes"], "train")

        # a gate threshold (the judge's included) re-gates the cached answers: nobody is asked again
        judge.reset_log()
        asked, judged, m2 = run("judge_thresholds: {format: 1}, grounding_threshold: 0.0")
        assert (asked, judged) == (0, 0)
        assert not any(n["rejected"].get("judge") for n in m2["nodes"].values())
        assert _lines(out, m2["nodes"], "train") != train1  # a formerly judged-out answer now passes

        # the judge's prompt is in the verdict key: an edited judge template asks the judge again
        templates = tmp_path / "templates"
        shutil.copytree(data_dir("templates"), templates)
        (templates / "judge_system.j2").write_text((templates / "judge_system.j2").read_text() + "\nBe strict.\n")
        with monkeypatch.context() as mp:
            mp.setattr(compiler.gates.judge, "data_dir", lambda name: templates)
            judge.reset_log()
            asked, judged, _ = run()
        assert asked == 0 and judged > 0
        assert all("Be strict." in e["body"]["messages"][0]["content"] for e in judge.log)

        # asking for logprobs changes the answer: cached answers without them are not reused
        judge.reset_log()
        asked, _, m3 = run("min_mean_logprob: -5")
        assert asked > 0
        for n in m3["nodes"].values():
            assert all("confidence" in s["metadata"]["gates"] for s in read_jsonl(out / n["files"]["train"]))

        # sampling is in the key: another temperature asks again
        asked, _, _ = run(extra="temperature: 0.3\n")
        assert asked >= sum(n["accepted"] for n in m1["nodes"].values())

        # and an unchanged tree asks nobody
        judge.reset_log()
        assert run(extra="temperature: 0.3\n")[:2] == (0, 0)
