"""Verification at full speed (issue 12): the judge runs concurrently yet a run writes the same
bytes at any concurrency; the PII gate leaves the expert's chunk alone; rejections keep evidence."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys

from compiler.records import Record, Sample
from teacher_server import TeacherServer, default_responder
from test_gates import PLANET_CHUNK, PLANETS, check, keeper, sample, taxonomy  # noqa: F401 (fixture)
from test_gates_e2e import compile_with, read

SKILL_DUP = "Explain how amber basalt relate to cedar delta?"


def dupping_teacher(body: dict, number: int) -> dict:
    """The default records, but one skill request in three returns the same record per leaf: which
    copy is accepted depends only on the build's order, not on which answer arrived first."""
    rec = default_responder(body, number)
    system = body["messages"][0]["content"]
    if "context" not in rec and "document" not in json.dumps(body) and random.Random(body.get("seed")).random() < 0.34:
        tag = hashlib.sha256(system.encode()).hexdigest()[:6]
        rec = {"question": f"{SKILL_DUP} ({tag})", "reasoning": ["Consider the words.", "Then answer."],
               "answer": f"They share the letters of {tag} and little else."}
    return rec


def judge_reply(body: dict, number: int) -> dict:
    """Scores from a hash of the prompt: deterministic per example, independent of arrival order."""
    low = hashlib.sha256(body["messages"][-1]["content"].encode()).digest()[0] % 4 == 0
    return {"faithfulness": 5, "relevance": 4, "format": 2 if low else 5, "standalone": 5, "rationale": "hash judge"}


def test_a_concurrent_judge_writes_the_same_bytes_as_a_serial_one(example_taxonomy, tmp_path):
    outputs, peaks, manifests = [], [], []
    for conc in (1, 8):
        out = tmp_path / f"c{conc}"
        with TeacherServer(responder=judge_reply, model="judge-test", latency=0.03) as judge_srv:
            manifests.append(compile_with(dupping_teacher, example_taxonomy, out,
                                          f"gates: {{judge_api_base: '{judge_srv.url}'}}\n",
                                          "--judge", "openai/judge-test", "--concurrency", str(conc)))
            peaks.append(judge_srv.stats.snapshot()["max_in_flight"])
        outputs.append({str(p.relative_to(out)): p.read_bytes()
                        for p in sorted(out.rglob("*.jsonl")) if ".kdc" not in p.parts})
    assert outputs[0] == outputs[1]
    assert peaks[0] == 1 and peaks[1] > 1  # the judge really ran concurrently at --concurrency 8
    reasons = {r for m in manifests for n in m["nodes"].values() for r in n["rejected"]}
    assert {"judge", "dup-exact"} <= reasons  # both an ordered gate and the judge decided something
    assert manifests[1]["config"]["gates"]["judge_concurrency"] == 8


def test_the_pii_gate_leaves_the_experts_chunk_alone(taxonomy):  # noqa: F811
    chunk = PLANET_CHUNK + " Questions to the curator: curator@planets.example.org."
    q, a = "Which planet is the largest?", "Jupiter is the largest planet in the solar system."
    for mode in ("drop", "redact"):
        v = check(keeper(taxonomy, pii=mode), sample(PLANETS, q, a, context=chunk, kind="knowledge"), context=chunk)
        assert v.accepted, (mode, v.reason, v.detail)
        assert v.sample.record.context == chunk and "pii_redacted" not in v.scores
        assert chunk in v.sample.messages[1]["content"]
    # what the teacher writes is still scanned (quoting the chunk's own address is not a leak)
    v = check(keeper(taxonomy), sample(PLANETS, q, a + " Mail me at bob@home.example.net or the curator "
                                                     "at curator@planets.example.org.", context=chunk,
                                       kind="knowledge"), context=chunk)
    assert v.accepted and "[EMAIL]" in v.sample.record.answer and "curator@planets" in v.sample.record.answer
    assert "bob@" not in v.sample.messages[2]["content"] and v.sample.record.context == chunk


def test_a_rejection_keeps_the_gates_evidence(taxonomy):  # noqa: F811
    v = check(keeper(taxonomy, pii="drop"), sample(PLANETS, "Which planet is the largest?",
                                                   "Jupiter; write to ann@example.org.", context=PLANET_CHUNK,
                                                   kind="knowledge"), context=PLANET_CHUNK)
    assert v.reason == "pii"
    (match,) = v.evidence["matches"]
    assert match["field"] == "answer" and match["kind"] == "email"
    assert "Jupiter; write to ann@example.org."[match["start"]:match["end"]] == "ann@example.org"
    v = check(keeper(taxonomy, grounding_threshold=0.9),
              sample(PLANETS, "Which planet is the largest?", "Neptune is windy and blue and cold.",
                     context=PLANET_CHUNK, kind="knowledge"), context=PLANET_CHUNK)
    assert v.reason == "ungrounded" and v.evidence["threshold"] == 0.9 and v.evidence["score"] < 0.9


def test_rejected_jsonl_carries_the_evidence(example_taxonomy, tmp_path):
    out = tmp_path / "ev"
    manifest = compile_with(dupping_teacher, example_taxonomy, out, "")
    rows = [r for n in manifest["nodes"].values() for r in read(out / n["files"]["rejected"])]
    dups = [r for r in rows if r["reason"] == "dup-exact"]
    assert dups and all(r["evidence"]["match"].startswith("exact duplicate of ") for r in dups)


SCHEMA_400 = ("Invalid schema for response_format 'kdc_record': In context=('properties', 'reasoning'), "
              "array schema minItems is not supported")


def test_a_provider_that_refuses_the_schema_falls_back_to_json_object(example_taxonomy, tmp_path):
    out = tmp_path / "fb"
    config = tmp_path / "fb.kdc.yaml"
    config.write_text("samples_per_node: 4\nseed: 7\nconcurrency: 4\n")
    with TeacherServer(refuse_json_schema=SCHEMA_400) as srv:
        run = subprocess.run([sys.executable, "-m", "compiler", "compile", str(example_taxonomy), "--out", str(out),
                              "--config", str(config), "--teacher", "openai/teacher-test", "--api-base", srv.url],
                             capture_output=True, text=True, timeout=600,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
        grading = [e["body"]["messages"][0]["content"].startswith("You grade") for e in srv.log]
        formats = [e["body"]["response_format"]["type"] for e, g in zip(srv.log, grading) if not g]
        judged = [e["body"]["response_format"]["type"] for e, g in zip(srv.log, grading) if g]
    assert run.returncode == 0, run.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    used = manifest["teacher"]["response_format"]
    assert (used["type"], used["fallback_from"], used["refused"]) == ("json_object", "json_schema", "minItems")
    assert used["reason"].endswith(SCHEMA_400)
    assert "refused the JSON schema" in run.stderr and "minItems" in run.stderr
    assert formats.count("json_schema") <= 4 and formats[-1] == "json_object"  # refused once per request in flight
    assert judged.count("json_schema") <= 4 and judged[-1] == "json_object"  # the self-judge falls back too
    assert manifest["totals"]["shortfall"] == 0 and not any(
        n["rejected"].get("http-error") or n["stopped"] for n in manifest["nodes"].values())


def _judge_requests(srv: TeacherServer) -> int:
    return sum(1 for e in srv.log
               if ((e["body"].get("response_format") or {}).get("json_schema") or {}).get("name") == "judge_scores")


def test_a_real_teacher_judges_its_own_samples_unless_told_not_to(example_taxonomy, tmp_path):
    config = tmp_path / "k.yaml"
    config.write_text("samples_per_node: 2\nseed: 7\nconcurrency: 4\n")
    seen = {}
    for name, extra in (("default", ()), ("off", ("--no-judge",))):
        out = tmp_path / name
        with TeacherServer() as srv:
            run = subprocess.run([sys.executable, "-m", "compiler", "compile", str(example_taxonomy), "--out",
                                  str(out), "--config", str(config), "--teacher", "openai/teacher-test",
                                  "--api-base", srv.url, *extra], capture_output=True, text=True, timeout=600,
                                 env={**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
            assert run.returncode == 0, run.stderr[-2000:]
            seen[name] = (_judge_requests(srv), json.loads((out / "manifest.json").read_text()), run.stderr)
    judged, manifest, err = seen["default"]
    assert judged > 0 and manifest["judge"]["model"] == "openai/teacher-test"
    assert "teacher judges its own samples" in manifest["judge"]["why"] and "teacher judges its own" in err
    for node in manifest["nodes"].values():
        for s in read(tmp_path / "default" / node["files"]["train"]):
            assert set(s["metadata"]["gates"]["judge"]) == {"faithfulness", "relevance", "format", "standalone"}
    judged, manifest, _ = seen["off"]
    assert judged == 0 and manifest["judge"]["model"] is None and manifest["judge"]["why"] == "off (--no-judge)"


def test_the_embedded_teacher_keeps_the_judge_off_and_says_why():
    from types import SimpleNamespace

    from compiler.gates.chain import GateConfig
    from compiler.gates.judging import default_judge

    gates = GateConfig()
    why = default_judge(SimpleNamespace(judge=None, teacher="kdc/gemma-3-270m", api_base=()), gates)
    assert gates.judge is None and "embedded teacher is too weak" in why and "--judge" in why
    gates = GateConfig()
    default_judge(SimpleNamespace(judge=None, teacher="hosted_vllm/m", api_base=("http://h:8000/v1",)), gates)
    assert (gates.judge, gates.judge_api_base) == ("hosted_vllm/m", "http://h:8000/v1")


def test_the_judge_endpoint_is_redacted_in_the_manifest_settings():
    from compiler.gates.chain import GateConfig

    cfg = GateConfig.from_settings({"gates": {"judge_api_base": "http://user:s3cret@judge.local:8000/v1"}})
    assert cfg.to_dict()["judge_api_base"] == "http://***@judge.local:8000/v1"
    assert cfg.judge_api_base.startswith("http://user:s3cret@")  # the client still gets the real one
