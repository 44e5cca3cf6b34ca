"""`kdc compile` end to end against a real OpenAI-protocol teacher server on 127.0.0.1.

The example taxonomy (4 skills, 2 knowledge leaves with git documents) is copied into a temp
folder per test; the server's default responder builds valid, varied, grounded records from the
prompt, so every decision below is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.llm.cache import request_key
from compiler.cli import main
from compiler.taxonomy.documents import chunks_for
from compiler.llm.teacher import response_schema
from taxcopy import private_taxonomy
from teacher_server import FaultPlan, TeacherServer

ROOT = Path(__file__).resolve().parent.parent
HAIKU = "compositional_skills/writing/freeform/haiku"
SOLAR = "knowledge/science/astronomy/solar_system"
KEY = "sk-test-SECRET-7f3a9c"


@pytest.fixture
def tax(tmp_path, example_taxonomy) -> Path:
    return private_taxonomy(tmp_path, example_taxonomy)


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


@pytest.fixture
def kdc(capsys, caplog, monkeypatch):
    """Run the real CLI entry point in-process: (exit code, stdout, stderr). No traceback either on
    the streams or in a log record (pytest holds those; the real CLI would print them: asyncio's
    "Task exception was never retrieved" reaches stderr through logging's last-resort handler)."""
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        caplog.clear()
        monkeypatch.setattr(sys, "argv", ["kdc", *map(str, args)])
        with pytest.raises(SystemExit) as exc:
            main()
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        assert [r.getMessage() for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()] == []
        return exc.value.code, out, err
    return run


def compile_args(tax: Path, out: Path, srv: TeacherServer | str, *extra) -> list[str]:
    """These tests count generation requests: the teacher's self-judging (on by default for a real
    teacher, tests/test_verification.py) is off unless a test names a judge."""
    url = srv if isinstance(srv, str) else srv.url
    judge = () if "--judge" in extra else ("--no-judge",)
    return ["compile", tax, "--out", out, "--teacher", "openai/teacher-test", "--api-base", url,
            "--concurrency", "8", "--samples-per-node", "3", *judge, *extra]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def tree_hashes(out: Path) -> dict[str, str]:
    """sha256 of every dataset file (the cache and the run counters in manifest.json excluded)."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and ".kdc" not in p.parts and p.name != "manifest.json"}


def prompts_by_sha(srv: TeacherServer) -> dict[str, str]:
    return {request_key(e["body"]["messages"]): "\n".join(m["content"] for m in e["body"]["messages"])
            for e in srv.log}


# --------------------------------------------------------------------------- the main run
def test_compile_writes_datasets_with_provenance_and_a_consistent_manifest(tax, tmp_path, kdc):
    out = tmp_path / "out"
    with TeacherServer(latency=0.01) as srv:
        code, _, err = kdc(*compile_args(tax, out, srv))
        prompts = prompts_by_sha(srv)
        auth = {e["auth"] for e in srv.log}
    assert code == 0, err
    assert auth == {f"Bearer {KEY}"}
    m = json.loads((out / "manifest.json").read_text())
    assert set(m["nodes"]) == {HAIKU, SOLAR, "knowledge/technology/version_control/git_internals",
                               "compositional_skills/reasoning/freeform/word_problems",
                               "compositional_skills/extraction/grounded/meeting_action_items",
                               "compositional_skills/summarization/grounded/incident_report"}
    templates = m["templates"]
    for node_id, n in m["nodes"].items():
        # a knowledge leaf's quota grows with its documents (the example's kdc.yaml: per_chunk 0, the floor)
        want = max(3, m["config"]["per_chunk"] * n["chunks"]) if n["kind"] == "knowledge" else 3
        assert n["target"] == want and n["accepted"] == want and n["shortfall"] == 0
        assert n["attempts"] == n["accepted"] + sum(n["rejected"].values())
        train = read_jsonl(out / n["files"]["train"])
        rejected = read_jsonl(out / n["files"]["rejected"])
        evals = read_jsonl(out / n["files"]["eval"])
        if n["kind"] == "knowledge":  # every chunk grounds an accepted Q&A, none twice
            spans = {(s["metadata"]["document"]["file"], s["metadata"]["document"]["start"]) for s in train}
            assert n["coverage"] == {"chunks": n["chunks"], "covered": len(spans), "share": round(len(spans) / n["chunks"], 4)}
            if not sum(n["rejected"].values()):  # the first pass over the chunks: distinct chunks
                assert len(spans) == min(want, n["chunks"])
        assert len(train) == want and len(rejected) == sum(n["rejected"].values())
        assert len(evals) == n["eval_seeds"] >= 1 and all(e["node_id"] == node_id for e in evals)
        assert len({s["id"] for s in train}) == want
        for s in train:
            meta = s["metadata"]
            assert s["node_id"] == meta["node_id"] == node_id and meta["kind"] == n["kind"]
            assert meta["leaf_path"] == node_id.split("/")
            assert meta["template"]["sha256"] == templates[meta["template"]["name"]]
            assert meta["teacher"]["model"] == "openai/teacher-test"
            assert set(meta["teacher"]["sampling"]) == {"temperature", "top_p", "max_tokens", "seed"}
            assert meta["attempts"] == 1 and meta["usage"]["completion_tokens"] > 0
            assert set(meta["diversity"]) == {"persona", "difficulty", "style"}
            prompt = prompts[meta["prompt_sha256"]]  # the very prompt the teacher got
            for e in evals:
                assert e["question"] not in prompt  # held-out seeds never shown
            assert [m_["role"] for m_ in s["messages"]] == ["system", "user", "assistant"]
            assert s["messages"][2]["content"].endswith("Answer: " + s["record"]["answer"])
            assert s["record"]["question"] in s["messages"][1]["content"]
            if n["kind"] != "freeform_skill":
                assert s["record"]["context"] and s["record"]["context"] in s["messages"][1]["content"]
            if n["kind"] == "knowledge":
                doc = meta["document"]
                assert doc["commit"] and doc["file"].endswith(".md") and doc["end"] > doc["start"]
                assert hashlib.sha256(s["record"]["context"].encode()).hexdigest() == doc["sha256"]
                assert s["record"]["context"] in prompt
        assert sorted(n["files"]) == ["eval", "rejected", "train"]  # no Hugging Face copy: the card loads the JSONL
    assert not (out / "hf").exists()
    # the knowledge spans point at the real document text at the commit
    leaf = json.loads(json.dumps(read_jsonl(out / m["nodes"][SOLAR]["files"]["train"])[0]))
    doc = leaf["metadata"]["document"]
    chunks = chunks_for({"repo": doc["repo"], "commit": doc["commit"], "patterns": [doc["file"]]}, tax,
                        chunk_words=400)
    assert any(c.start == doc["start"] and c.end == doc["end"] and c.text == leaf["record"]["context"] for c in chunks)
    t = m["totals"]
    assert t["accepted"] == sum(n["target"] for n in m["nodes"].values()) >= 18 and t["shortfall"] == 0 and t["teacher_calls"] == srv.chat_requests
    assert (out / "mixes" / "phase1_knowledge.jsonl").is_file() and m["mixes"]
    assert m["config"]["samples_per_node"] == 3 and KEY not in json.dumps(m)


def test_rerun_is_free_and_byte_identical_and_an_edit_reasks_only_that_leaf(tax, tmp_path, kdc):
    out = tmp_path / "out"
    with TeacherServer() as srv:
        assert kdc(*compile_args(tax, out, srv))[0] == 0
        first = tree_hashes(out)
        calls = srv.chat_requests
        assert kdc(*compile_args(tax, out, srv))[0] == 0
        assert srv.chat_requests == calls  # zero teacher calls
        assert tree_hashes(out) == first  # byte-identical, Hugging Face copies included
        m = json.loads((out / "manifest.json").read_text())
        assert m["totals"]["teacher_calls"] == 0 and m["totals"]["cache_hits"] >= 18

        qna = tax / HAIKU / "qna.yaml"
        qna.write_text(qna.read_text().replace("no rhyme.", "no rhyme, and a season word."))
        srv.reset_log()
        assert kdc(*compile_args(tax, out, srv))[0] == 0
        asked = [e["body"]["messages"][1]["content"] for e in srv.log]
    assert asked and all("writing > freeform > haiku" in a and "a season word" in a for a in asked)
    after = tree_hashes(out)
    changed = {f for f in after if after[f] != first.get(f)}
    assert any(f.startswith(f"nodes/{HAIKU}/") for f in changed)
    assert not any(f.startswith("nodes/") and not f.startswith(f"nodes/{HAIKU}/") for f in changed)


def test_low_confidence_gate_asks_for_logprobs_and_rejects_unsure_answers(tax, tmp_path, kdc):
    out = tmp_path / "out"
    unsure = lambda content: -3.0 if hashlib.sha256(content.encode()).digest()[0] % 4 == 0 else -0.2  # noqa: E731
    cfg = tmp_path / "gated.yaml"
    cfg.write_text((tax / "kdc.yaml").read_text() + "gates: {min_mean_logprob: -1.5}\n")
    with TeacherServer(logprob=unsure) as srv:
        assert kdc(*compile_args(tax, out, srv, "--config", cfg))[0] == 0
        assert srv.log and all(e["body"].get("logprobs") is True for e in srv.log)
    m = json.loads((out / "manifest.json").read_text())
    assert sum(n["rejected"].get("low-confidence", 0) for n in m["nodes"].values()) >= 1
    for n in m["nodes"].values():
        assert n["shortfall"] == 0
        assert all(s["metadata"]["gates"]["confidence"] == -0.2 for s in read_jsonl(out / n["files"]["train"]))
        for r in read_jsonl(out / n["files"]["rejected"]):
            if r["reason"] == "low-confidence":
                assert r["metadata"]["gates"]["confidence"] == -3.0 and "-3.000 < -1.5" in r["detail"]
    with TeacherServer() as srv:  # without the gate, no logprobs are asked for
        assert kdc(*compile_args(tax, tmp_path / "plain", srv))[0] == 0
        assert srv.log and not any("logprobs" in e["body"] for e in srv.log)


def test_teacher_worker_processes_write_the_same_bytes_as_one_process(tax, tmp_path, kdc):
    one, two = tmp_path / "one", tmp_path / "two"
    with TeacherServer(latency=0.05) as srv:
        assert kdc(*compile_args(tax, one, srv))[0] == 0
        calls = srv.chat_requests
        srv.reset_log()
        assert kdc(*compile_args(tax, two, srv, "--teacher-workers", "2"))[0] == 0
        assert srv.chat_requests == calls
    assert json.loads((one / "manifest.json").read_text())["totals"]["teacher_workers"] == 1
    assert json.loads((two / "manifest.json").read_text())["totals"]["teacher_workers"] == 2
    datasets = lambda out: {f: h for f, h in tree_hashes(out).items() if f != "report.html"}  # noqa: E731
    assert datasets(one) == datasets(two)  # (the report shows the run's timings and worker count)


@pytest.mark.parametrize("kill_after,workers", [(2, 1), (20, 1), (20, 2)])
def test_kill_9_then_rerun_loses_nothing_and_duplicates_nothing(tax, tmp_path, kdc, kill_after, workers):
    ref, out = tmp_path / "ref", tmp_path / "out"
    with TeacherServer() as srv:
        assert kdc(*compile_args(tax, ref, srv, "--samples-per-node", "4"))[0] == 0
    with TeacherServer(latency=0.25) as srv:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "compiler", *map(str, compile_args(tax, out, srv)),
                                 "--samples-per-node", "4", "--concurrency", "2", "--teacher-workers", str(workers)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while srv.stats.snapshot()["by_status"].get(200, 0) < kill_after and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        answered = srv.stats.snapshot()["by_status"].get(200, 0)
        assert answered >= kill_after and not (out / "manifest.json").exists()
        srv.reset_log()
        assert kdc(*compile_args(tax, out, srv, "--samples-per-node", "4"))[0] == 0
        reasked = srv.chat_requests
    m = json.loads((out / "manifest.json").read_text())
    assert m["totals"]["cache_hits"] >= kill_after - 2  # answers stored before the kill were reused
    assert reasked + m["totals"]["cache_hits"] >= 24
    for node_id, n in m["nodes"].items():
        train = read_jsonl(out / n["files"]["train"])
        assert len(train) == 4 and len({s["id"] for s in train}) == 4
        assert (out / n["files"]["train"]).read_bytes() == (ref / n["files"]["train"]).read_bytes()


# --------------------------------------------------------------------------- misbehaving teachers
def test_every_fault_is_rejected_with_its_reason_and_the_quota_is_topped_up(tax, tmp_path, kdc):
    out = tmp_path / "out"
    faults = {1: "malformed-json", 2: "schema", 3: "empty", 4: "refusal", 5: "429", 6: "500", 7: "hang", 8: "drop"}
    with TeacherServer(faults=FaultPlan(by_request=faults), hang_s=10) as srv:
        code, _, err = kdc(*compile_args(tax, out, srv, "--max-retries", "0", "--timeout", "3"))
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    reasons: dict[str, int] = {}
    details = []
    for n in m["nodes"].values():
        assert n["accepted"] == 3 and n["shortfall"] == 0
        for r in read_jsonl(out / n["files"]["rejected"]):
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
            details.append(r["detail"])
            assert r["metadata"]["node_id"] == r["node_id"] and r["metadata"]["prompt_sha256"]
        for reason, count in n["rejected"].items():
            assert sum(1 for r in read_jsonl(out / n["files"]["rejected"]) if r["reason"] == reason) == count
    assert reasons == {"invalid-json": 1, "schema": 1, "empty": 1, "refusal": 1, "http-error": 3, "timeout": 1}
    assert any("429" in d for d in details) and any("500" in d or "InternalServerError" in d for d in details)


def test_transport_faults_are_retried_and_leave_no_trace_but_the_retry_count(tax, tmp_path, kdc):
    out = tmp_path / "out"
    faults = {1: "429", 2: "500", 3: "hang", 4: "drop"}
    with TeacherServer(faults=FaultPlan(by_request=faults), hang_s=10, retry_after=0.1) as srv:
        code, _, err = kdc(*compile_args(tax, out, srv, "--max-retries", "2", "--timeout", "3"))
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["totals"]["rejected"] == 0 and m["totals"]["accepted"] == 18 and m["totals"]["retries"] == 4
    attempts = [s["metadata"]["attempts"] for n in m["nodes"].values() for s in read_jsonl(out / n["files"]["train"])]
    assert sorted(attempts)[-4:] == [2, 2, 2, 2]


def test_a_node_that_cannot_be_filled_is_an_explicit_shortfall(tax, tmp_path, kdc):
    out = tmp_path / "out"
    refuse_haiku = FaultPlan(match=lambda body, n: "refusal" if "freeform > haiku" in body["messages"][1]["content"]
                             else None)
    with TeacherServer(faults=refuse_haiku) as srv:
        code, _, err = kdc(*compile_args(tax, out, srv, "--samples-per-node", "2", "--fail-on-shortfall"))
    assert code == 3
    assert "shortfall compositional_skills/writing/freeform/haiku: 0/2" in err
    m = json.loads((out / "manifest.json").read_text())
    haiku = m["nodes"][HAIKU]
    assert haiku["accepted"] == 0 and haiku["shortfall"] == 2 and haiku["stopped"] == "budget"
    assert haiku["attempts"] == 4 * 2 + 4 and haiku["rejected"] == {"refusal": 12}
    assert read_jsonl(out / haiku["files"]["train"]) == []
    assert m["totals"]["shortfall"] == 2 and all(n["shortfall"] == 0 for k, n in m["nodes"].items() if k != HAIKU)
    with TeacherServer(faults=refuse_haiku) as srv:  # without the flag, a shortfall is reported, not fatal
        assert kdc(*compile_args(tax, out, srv, "--samples-per-node", "2"))[0] == 0


def test_an_unreachable_teacher_ends_with_a_clear_error_and_a_manifest(tax, tmp_path, kdc):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    out = tmp_path / "out"
    code, _, err = kdc(*compile_args(tax, out, url, "--max-retries", "0", "--concurrency", "2"))
    assert code == 1 and "teacher stopped answering" in err
    m = json.loads((out / "manifest.json").read_text())
    assert {n["stopped"] for n in m["nodes"].values()} == {"teacher-unavailable"}
    assert m["totals"]["accepted"] == 0 and m["totals"]["shortfall"] == 18


def test_secrets_never_reach_outputs_or_logs(tax, tmp_path, kdc):
    out = tmp_path / "out"
    faults = FaultPlan(by_request={1: "500", 2: "refusal"})
    with TeacherServer(faults=faults) as srv:
        code, stdout, stderr = kdc(*compile_args(tax, out, srv, "--max-retries", "0"))
        assert srv.log[0]["auth"] == f"Bearer {KEY}"
    assert code == 0
    assert KEY not in stdout + stderr and "SECRET" not in stdout + stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert b"SECRET" not in path.read_bytes(), path


# --------------------------------------------------------------------------- other paths
def test_review_verdicts_reject_and_edit_samples_on_the_next_compile(tax, tmp_path, kdc):
    out = tmp_path / "out"
    with TeacherServer() as srv:
        assert kdc(*compile_args(tax, out, srv))[0] == 0
        train = read_jsonl(out / "nodes" / HAIKU / "train.jsonl")
        bad, fix = train[0]["id"], train[1]["id"]
        (out / "reviews").mkdir()
        lines = [{"id": bad, "node_id": HAIKU, "verdict": "reject", "by": "ana", "at": "2026-01-01T00:00:00Z",
                  "why": "off topic", "edited": None},
                 {"id": fix, "node_id": HAIKU, "verdict": "edit", "by": "ana", "at": "2026-01-01T00:00:00Z",
                  "why": "typo", "edited": {"question": "Write a haiku about rain?", "reasoning": ["Rain."],
                                            "answer": "Rain on the roof\nsoft drums in the dark\nmorning comes"}}]
        (out / "reviews" / "verdicts.jsonl").write_text("".join(json.dumps(v) + "\n" for v in lines))
        srv.reset_log()
        assert kdc(*compile_args(tax, out, srv))[0] == 0
        assert 1 <= srv.chat_requests <= 2  # top-up requests replace the rejected sample
    train = read_jsonl(out / "nodes" / HAIKU / "train.jsonl")
    assert len(train) == 3 and bad not in {s["id"] for s in train}
    edited = next(s for s in train if s["id"] == fix)
    assert edited["record"]["answer"].startswith("Rain on the roof")
    assert edited["messages"][2]["content"].endswith("Answer: Rain on the roof\nsoft drums in the dark\nmorning comes")
    assert edited["metadata"]["review"]["verdict"] == "edit" and edited["metadata"]["review"]["by"] == "ana"
    rejected = [r for r in read_jsonl(out / "nodes" / HAIKU / "rejected.jsonl") if r["reason"] == "review-rejected"]
    assert [r["id"] for r in rejected] == [bad]
    m = json.loads((out / "manifest.json").read_text())
    assert m["nodes"][HAIKU]["review"] == {"reviewed": 2, "rejected": 1, "flagged": False}


def test_dry_run_plans_without_asking(tax, tmp_path, kdc):
    with TeacherServer() as srv:
        code, out, _ = kdc("compile", tax, "--teacher", "openai/gpt-4o-mini", "--api-base", srv.url,
                           "--dry-run", "--json", "--samples-per-node", "5")
        assert srv.chat_requests == 0
    assert code == 0
    plan = json.loads(out)
    assert len(plan["nodes"]) == 6 and plan["totals"]["target"] == 30 and plan["totals"]["max_requests"] == 6 * 24
    solar = plan["nodes"][SOLAR]
    assert solar["chunks"] >= 3 and solar["est_prompt_tokens"] > 5 * 300 and solar["est_cost_usd"] > 0
    code, table, _ = kdc("compile", tax, "--dry-run", "--teacher", "openai/gpt-4o-mini", "--api-base", srv.url)
    assert code == 0 and "haiku" in table and "total" in table


def test_max_cost_is_a_hard_cap(tax, tmp_path, kdc):
    out = tmp_path / "out"
    with TeacherServer() as srv:
        code, _, err = kdc("compile", tax, "--out", out, "--teacher", "openai/gpt-4o-mini", "--api-base", srv.url,
                           "--samples-per-node", "3", "--max-cost", "0.003")
        calls = srv.chat_requests
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert 0 < calls < 18 and m["totals"]["spent_usd"] <= 0.003 and m["totals"]["cost_usd"] > 0
    assert "max-cost" in {n["stopped"] for n in m["nodes"].values()}


def test_an_invalid_taxonomy_is_refused_with_a_location(tmp_path, kdc):
    leaf = tmp_path / "tax" / "compositional_skills" / "bad"
    leaf.mkdir(parents=True)
    (leaf / "qna.yaml").write_text("version: 3\ncreated_by: x\ntask_description: t\nseed_examples: []\n")
    code, _, err = kdc("compile", tmp_path / "tax", "--out", tmp_path / "out", "--teacher", "openai/x",
                       "--api-base", "http://127.0.0.1:9/v1")
    assert code == 1 and "compositional_skills/bad/qna.yaml:" in err and "invalid taxonomy" in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_teacher_tokens_count_every_answer_fetched_surplus_included(tmp_path, kdc):
    """`tokens` are the decided samples' (the same on a re-run); `teacher_tokens` what the teacher
    processed in this run, as the server's usage adds up: answers still in flight when the quota
    was met included. Two of the first round's three answers break the schema, so the second
    round asks for six where two fill the quota."""
    from test_taxonomy import SKILL, write

    root = tmp_path / "tax"
    write(root, "compositional_skills/writing/greet/qna.yaml", SKILL)
    out = tmp_path / "out"
    with TeacherServer(faults=FaultPlan(by_request={1: "schema", 2: "schema"})) as srv:
        assert kdc(*compile_args(root, out, srv, "--samples-per-node", "3"))[0] == 0
        served = srv.stats.snapshot()
    t, node = (m := json.loads((out / "manifest.json").read_text()))["totals"], m["nodes"]["compositional_skills/writing/greet"]
    assert t["teacher_calls"] == served["by_status"][200] == 9 and t["accepted"] == 3 and t["rejected"] == 2
    assert t["teacher_tokens"] == node["run"]["teacher_tokens"] == served["tokens"]
    assert all(t["tokens"][k] < t["teacher_tokens"][k] for k in ("prompt", "completion"))  # 4 answers surplus
    before = t["tokens"]
    with TeacherServer() as srv:  # a re-run: every decision from the cache, nothing asked
        assert kdc(*compile_args(root, out, srv, "--samples-per-node", "3"))[0] == 0
        assert srv.chat_requests == 0
    t = json.loads((out / "manifest.json").read_text())["totals"]
    assert t["tokens"] == before and t["teacher_tokens"] == {"prompt": 0, "completion": 0}


def test_the_sandbox_passes_template_syntax_through_to_the_teacher(tmp_path, kdc):
    leaf = tmp_path / "tax" / "compositional_skills" / "writing" / "freeform" / "trick"
    leaf.mkdir(parents=True)
    seeds = "".join(f"  - question: What rhymes with word number {i}?\n    answer: Rhyme {i} is easy.\n"
                    for i in range(5))
    (leaf / "qna.yaml").write_text("version: 3\ncreated_by: tester\ntask_description: 'Say {{ 7*7 }} "
                                   "{% for x in range(3) %}X{% endfor %} please.'\nseed_examples:\n" + seeds)
    with TeacherServer() as srv:
        code, _, err = kdc(*compile_args(tmp_path / "tax", tmp_path / "out", srv, "--samples-per-node", "1"))
        user = srv.log[0]["body"]["messages"][1]["content"]
    assert code == 0, err
    assert "Say {{ 7*7 }} {% for x in range(3) %}X{% endfor %} please." in user and "49" not in user


def test_response_format_by_kind_reaches_the_teacher(tax, tmp_path, kdc):
    with TeacherServer() as srv:
        assert kdc(*compile_args(tax, tmp_path / "out", srv, "--samples-per-node", "1"))[0] == 0
        schemas = {e["body"]["messages"][1]["content"].splitlines()[0]: e["body"]["response_format"]["json_schema"]["schema"]
                   for e in srv.log}
    by_kind = {k: response_schema(k) for k in ("freeform_skill", "grounded_skill", "knowledge")}
    # a haiku asks for no reasoning steps (plan.reasoning_for); word problems and knowledge do
    assert schemas["Skill: compositional skills > writing > freeform > haiku"] == response_schema("freeform_skill", False)
    assert "reasoning" not in schemas["Skill: compositional skills > writing > freeform > haiku"]["properties"]
    assert schemas["Skill: compositional skills > reasoning > freeform > word problems"] == by_kind["freeform_skill"]
    assert schemas["Knowledge area: knowledge > science > astronomy > solar system"] == by_kind["knowledge"]
    assert "context" in by_kind["grounded_skill"]["required"]


def test_config_file_settings_apply_and_the_command_line_wins(tax, tmp_path, kdc):
    cfg = tmp_path / "custom.yaml"
    cfg.write_text(f"samples_per_node: 2\nnodes:\n  {HAIKU}: {{samples: 5}}\nteacher: openai/teacher-test\n"
                   "api_base: http://127.0.0.1:9/v1\naugment: false\n")  # one Q&A a call (tests/test_augment.py: K)
    code, out, err = kdc("compile", tax, "--config", cfg, "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    # per_chunk defaults to 1: a knowledge leaf's quota is at least its chunk count
    assert plan["nodes"][HAIKU]["target"] == 5 and plan["nodes"][SOLAR]["target"] == max(2, plan["nodes"][SOLAR]["chunks"])
    assert plan["teacher"] == "openai/teacher-test" and plan["api_bases"] == ["http://127.0.0.1:9/v1"]
    code, out, _ = kdc("compile", tax, "--config", cfg, "--dry-run", "--json", "--samples-per-node", "4")
    assert json.loads(out)["nodes"][SOLAR]["target"] == 4 and json.loads(out)["nodes"][HAIKU]["target"] == 5
    code, _, err = kdc("compile", tax, "--config", tmp_path / "missing.yaml", "--dry-run")
    assert code == 2 and "not found" in err


def test_per_chunk_plans_every_chunk_and_the_manifest_shows_coverage(tax, tmp_path, kdc):
    cfg = tmp_path / "cover.yaml"
    cfg.write_text("samples_per_node: 1\nper_chunk: 1\nchunk_words: 150\nseed: 7\naugment: false\n")  # one Q&A a chunk
    out = tmp_path / "out"
    with TeacherServer() as srv:
        assert kdc(*compile_args(tax, out, srv, "--config", cfg, "--samples-per-node", "1"))[0] == 0
    m = json.loads((out / "manifest.json").read_text())
    for node_id, n in m["nodes"].items():
        if n["kind"] != "knowledge":
            assert n["target"] == 1 and "coverage" not in n
            continue
        assert n["chunks"] >= 4 and n["target"] == n["chunks"] == n["coverage"]["chunks"]
        train = read_jsonl(out / n["files"]["train"])
        spans = {(s["metadata"]["document"]["file"], s["metadata"]["document"]["start"]) for s in train}
        assert n["coverage"]["covered"] == len(spans)
        if not n["rejected"]:  # one pass over the chunks, each once: full coverage
            assert len(spans) == n["chunks"] and n["coverage"]["share"] == 1.0
    card = (out / "README.md").read_text()
    c = m["nodes"][SOLAR]["coverage"]
    row = f"| <code>{SOLAR.replace('_', chr(92) + '_')}</code> | {c['chunks']} | {c['covered']} | {100 * c['share']:.0f} % |"
    assert "## Knowledge coverage" in card and row in card
    assert "Knowledge coverage" in (out / "report.html").read_text()
