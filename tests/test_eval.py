"""`kdc eval`: scores right on known strings, prompts in the form the student was taught, a row per
node, a pairwise judge over a real OpenAI-protocol HTTP server, and a tuned tiny model that beats its base."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.errors import BuildError, TeacherError
from compiler.train.evaluate import (EvalItem, Judge, PromptStyle, evaluate, judge_pair, parse_verdict, prompt_style,
                               rouge_l, token_f1)
from compiler.train.trainer import PhaseConfig, TrainConfig, train
from teacher_server import TeacherServer
from train_fixtures import NODES, one_thread, tiny_model, write_build  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------- scores (by hand)

@pytest.mark.parametrize("pred,ref,rl,f1", [
    # LCS the,cat,on,the,mat = 5 of 6 both ways; bag overlap 5 of 6
    ("the cat sat on the mat", "the cat is on the mat", 5 / 6, 5 / 6),
    # same bag of words, order scrambled: LCS 3 of 5 (e.g. the,on,the), bag overlap 5 of 5
    ("mat the on cat the", "the cat on the mat", 3 / 5, 1.0),
    # P = 3/3, R = 3/7: F = 2 * 1 * 3/7 / (1 + 3/7) = 0.6
    ("Phobos and Deimos", "Mars has two moons, Phobos and Deimos.", 0.6, 0.6),
    # case and punctuation do not count
    ("Two.", "two", 1.0, 1.0),
    # repeated tokens: LCS a,a = 2 -> P 2/4, R 2/2 -> 2/3; bag overlap min(4,2) = 2 -> 2/3
    ("a a a a", "a a", 2 / 3, 2 / 3),
    ("", "", 1.0, 1.0),
    ("something", "", 0.0, 0.0),
    ("nothing shared", "entirely different", 0.0, 0.0),
])
def test_scores_on_known_strings(pred, ref, rl, f1):
    assert rouge_l(pred, ref) == pytest.approx(rl)
    assert token_f1(pred, ref) == pytest.approx(f1)


def test_prompt_style_is_read_off_the_training_sample():
    sample = {"messages": [
        {"role": "system", "content": "Answer from the context."},
        {"role": "user", "content": "Context:\nThe sky is blue {really}.\n\nQuestion: What colour is the sky?"},
        {"role": "assistant", "content": "Reasoning:\n1. The context says so.\n\nFinal answer: Blue."}],
        "record": {"question": "What colour is the sky?", "context": "The sky is blue {really}.",
                   "answer": "Blue.", "reasoning": ["The context says so."]}}
    style = prompt_style(sample)
    assert style.system == "Answer from the context."
    assert style.user == "Context:\n{context}\n\nQuestion: {question}"
    assert style.answer_marker == "Final answer: "
    msgs = style.messages(EvalItem("n", "Why {x}?", "ref", "Grass is {green}.", 0))
    assert msgs == [{"role": "system", "content": "Answer from the context."},
                    {"role": "user", "content": "Context:\nGrass is {green}.\n\nQuestion: Why {x}?"}]
    assert style.final_answer("Reasoning:\n1. hmm\n\nFinal answer: Green, because.") == "Green, because."
    assert style.final_answer("no marker here") == "no marker here"
    assert style.final_answer("1. x\nFinal answer:\nGreen.") == "Green."  # the marker's spacing may vary
    # literal braces in the layout survive
    braces = prompt_style({"messages": [{"role": "user", "content": "Reply in {json}: Q?"},
                                        {"role": "assistant", "content": "A"}],
                           "record": {"question": "Q?", "answer": "A"}})
    assert braces.messages(EvalItem("n", "Z?", "", None, 0))[0]["content"] == "Reply in {json}: Z?"
    assert prompt_style(None) == PromptStyle()


def test_parse_verdict():
    assert parse_verdict('{"winner": "A", "why": "x"}') == "A"
    assert parse_verdict('Sure! ```json\n{"winner": "b"}\n```') == "B"
    assert parse_verdict('{"winner": "tie"}') == "tie"
    assert parse_verdict("A is better") is None
    assert parse_verdict('{"winner": "C"}') is None


# --------------------------------------------------------------------------------- end to end (tiny)

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(build, student, tuned run): the tiny student fully fine-tuned long enough to learn the answers' form."""
    build = write_build(tmp_path_factory.mktemp("build"))
    student = tiny_model(tmp_path_factory.mktemp("tiny"))
    out = tmp_path_factory.mktemp("run")
    fast = PhaseConfig(epochs=1, learning_rate=3e-3, batch_size=2, grad_accum=1)
    train(build, out, TrainConfig(model=str(student), method="full", max_steps=60, max_length=256,
                                  phase_settings={1: fast, 2: fast}, save_steps=1000, overwrite=True))
    return build, student, out


def test_eval_table_has_a_row_per_node_and_tuned_beats_base(trained, tmp_path):
    build, student, run = trained
    report = evaluate(build, str(run), max_new_tokens=40, out=tmp_path / "eval.json")
    assert report.base == str(student)  # the base defaults to the student the run started from
    assert report.model == str(run / "phase2" / "model")
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert [n["node_id"] for n in saved["nodes"]] == sorted(NODES)
    for node in saved["nodes"]:
        assert node["n"] == len(NODES[node["node_id"]][2])
        for label in ("tuned", "base"):
            assert set(node[label]) == {"rouge_l", "f1"}
            assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in node[label].values())
    assert len(saved["items"]) == sum(len(v[2]) for v in NODES.values())
    for item in saved["items"]:
        assert item["tuned"]["f1"] == pytest.approx(token_f1(item["tuned"]["answer"], item["reference"]), abs=1e-4)
        assert item["tuned"]["rouge_l"] == pytest.approx(rouge_l(item["tuned"]["answer"], item["reference"]),
                                                         abs=1e-4)
    # the student learnt the answers' form ("... Answer: <fact>") and some of the facts: it beats its base
    assert saved["overall"]["delta"]["f1"] > 0.05, saved["overall"]
    assert saved["overall"]["tuned"]["f1"] > saved["overall"]["base"]["f1"]
    assert any("Answer:" in item["tuned_output"] for item in saved["items"])


def test_pairwise_judge_over_http(trained, tmp_path):
    build, student, run = trained
    prompts: list[str] = []

    def longer_wins(request: dict, number: int) -> str:
        text = request["messages"][-1]["content"]
        prompts.append(text)
        a = text.split("<answer_a>\n", 1)[1].split("\n</answer_a>", 1)[0]
        b = text.split("<answer_b>\n", 1)[1].split("\n</answer_b>", 1)[0]
        return json.dumps({"winner": "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie", "why": "len"})

    with TeacherServer(responder=longer_wins) as srv:
        report = evaluate(build, str(run), max_new_tokens=16, judge=Judge("openai/judge-test", srv.url),
                          out=tmp_path / "eval.json")
        assert srv.chat_requests == 2 * len(report.items)  # both orders for every question
    for item in report.items:
        mine, theirs = len(item["tuned_output"]), len(item["base_output"])
        assert item["judge"] == ("model" if mine > theirs else "base" if theirs > mine else "tie")
    wins = sum(i["judge"] == "model" for i in report.items)
    ties = sum(i["judge"] == "tie" for i in report.items)
    assert report.overall["judge"]["win_rate"] == pytest.approx((wins + 0.5 * ties) / len(report.items), abs=1e-4)
    assert all(n["judge"] is not None for n in report.nodes)
    assert any("<reference>\nPhobos and Deimos.\n</reference>" in p for p in prompts)

    # a judge that always prefers the first position is neutralised: every verdict is a tie
    item = EvalItem("n", "What is {{ 7 * 7 }}?", "ref", None, 0)
    seen: list[str] = []

    def always_a(request: dict, number: int) -> str:
        seen.append(request["messages"][-1]["content"])
        return '{"winner": "A"}'

    with TeacherServer(responder=always_a) as srv:
        assert judge_pair(Judge("openai/judge-test", srv.url), item, "x", "y") == "tie"
    assert "What is {{ 7 * 7 }}?" in seen[0]  # user text is data, never template source


def test_unreachable_judge_and_bad_build(trained, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(TeacherError) as err:
        judge_pair(Judge("openai/judge-test", f"http://127.0.0.1:{port}/v1", timeout=5, retries=0),
                   EvalItem("n", "q", "a", None, 0), "x", "y")
    assert "--judge" in err.value.hint
    with pytest.raises(BuildError):
        evaluate(tmp_path / "nowhere", str(trained[2]))


def test_eval_of_an_adapter_without_base_flag(trained, tmp_path):
    build, student, _run = trained
    fast = PhaseConfig(epochs=1, learning_rate=3e-3, batch_size=2, grad_accum=1)
    run = tmp_path / "adapter-run"
    train(build, run, TrainConfig(model=str(student), merge=False, max_steps=2, max_length=256,
                                  phase_settings={1: fast, 2: fast}, save_steps=1000))
    report = evaluate(build, str(run), max_new_tokens=4, limit=1, out=tmp_path / "e.json")
    assert report.model == str(run / "phase2" / "adapter") and report.base == str(student)
    assert [n["node_id"] for n in report.nodes] == sorted(NODES) and all(n["n"] == 1 for n in report.nodes)
    alone = evaluate(build, str(student), max_new_tokens=4, limit=1, out=tmp_path / "alone.json")
    assert alone.base is None and all(n["base"] is None and n["delta"] is None for n in alone.nodes)
    assert all(isinstance(n["tuned"]["f1"], float) for n in alone.nodes)


def test_cli_eval(trained, tmp_path):
    build, student, run = trained
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    out = tmp_path / "e.json"
    proc = subprocess.run([sys.executable, "-m", "compiler", "eval", str(build), "--model", str(run),
                           "--max-new-tokens", "8", "--out", str(out), "--limit", "1"],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for node_id in NODES:
        assert node_id in proc.stdout
    assert "overall (macro)" in proc.stdout
    data = json.loads(out.read_text())
    assert len(data["items"]) == len(NODES)  # --limit 1: one question per node
    assert all(i["question"] and i["reference"] for i in data["items"])


# ----------------------------------------------------------------------- knowledge modes, forgetting

def test_knowledge_modes_shape_the_prompt():
    from compiler.train.evaluate import knowledge_messages
    style = PromptStyle(system="Be brief.", user="Context:\n{context}\n\nQ: {question}")
    item = EvalItem("knowledge/a", "How many moons?", "Two.", "Mars has two moons.", 5)
    pool = [("knowledge/a", "Mars has two moons."), ("knowledge/b", "Bread rises."), ("knowledge/c", "Git stores blobs.")]
    closed = knowledge_messages(style, item, "closed-book", pool)
    assert closed == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How many moons?"}]
    assert knowledge_messages(style, item, "open-book", pool)[-1]["content"] == \
        "Context:\nMars has two moons.\n\nQ: How many moons?"
    raft = knowledge_messages(style, item, "raft", pool)[-1]["content"]
    assert raft.endswith("Some of the excerpts above may be irrelevant. How many moons?")
    for text in ("Mars has two moons.", "Bread rises.", "Git stores blobs."):
        assert raft.count(f"\n{text}\n</excerpt") == 1  # the gold and both other leaves' contexts, once each
    assert raft == knowledge_messages(style, item, "raft", pool)[-1]["content"]  # seeded: same order every run
    lone = EvalItem("knowledge/a", "Q?", "A", None, 1)  # no context: RAFT falls back to the question alone
    assert knowledge_messages(style, lone, "raft", pool)[-1]["content"] == "Q?"


@pytest.mark.parametrize("mode", ["closed-book", "open-book", "raft"])
def test_eval_mode_is_recorded_and_used(trained, tmp_path, mode):
    from train_fixtures import CONTEXTS
    build, student, run = trained
    report = evaluate(build, str(run), max_new_tokens=4, mode=mode, out=tmp_path / "e.json")
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["settings"]["mode"] == mode and saved["format"] == 2
    for node in saved["nodes"]:
        knowledge = NODES[node["node_id"]][0] == "knowledge"
        assert node["mode"] == (mode if knowledge else "as-trained")
        assert set(node["tuned"]) == set(node["base"]) == {"rouge_l", "f1"}
    for item in report.items:
        ctx = CONTEXTS.get(item["node_id"])
        if ctx is None:
            assert item["prompt"] == item["question"]  # skills: as taught (these seeds have no context)
        elif mode == "closed-book":
            assert item["prompt"] == item["question"]
        elif mode == "open-book":
            assert ctx in item["prompt"] and item["question"] in item["prompt"]
        else:
            others = [c for n, c in CONTEXTS.items() if n != item["node_id"]]
            assert ctx in item["prompt"] and all(o in item["prompt"] for o in others)


def test_forgetting_check_scores_skills_after_the_knowledge_phase(trained, tmp_path):
    build, student, run = trained
    report = evaluate(build, str(run), max_new_tokens=12, out=tmp_path / "e.json")
    f = json.loads((tmp_path / "e.json").read_text())["forgetting"]
    assert f["phase1_model"] == str(run / "phase1" / "model")
    skills = sorted(n for n, v in NODES.items() if v[0] != "knowledge")
    assert [n["node_id"] for n in f["nodes"]] == skills
    for node in f["nodes"]:
        mine = [i for i in report.items if i["node_id"] == node["node_id"]]
        assert all("after_knowledge" in i for i in mine)
        mean = sum(i["after_knowledge"]["f1"] for i in mine) / len(mine)
        assert node["after_knowledge"]["f1"] == pytest.approx(mean, abs=1e-4)
        assert node["delta"]["f1"] == pytest.approx(node["after_knowledge"]["f1"] - node["base"]["f1"], abs=1e-4)
    # the phase-1 model gave those answers: the same greedy outputs as asking it directly
    from compiler.train.evaluate import generate
    asked = [i for i in report.items if "after_knowledge" in i]
    from train_fixtures import SYSTEM
    direct = generate(run / "phase1" / "model", [[{"role": "system", "content": SYSTEM},
                                                  {"role": "user", "content": i["prompt"]}] for i in asked],
                      max_new_tokens=12)
    assert [i["after_knowledge_output"] for i in asked] == direct
    assert all("after_knowledge" not in i for i in report.items if NODES[i["node_id"]][0] == "knowledge")
    off = evaluate(build, str(run), max_new_tokens=4, limit=1, forgetting=False, out=tmp_path / "off.json")
    assert off.forgetting is None


def test_bad_mode_is_a_config_error(trained):
    from compiler.errors import ConfigError
    with pytest.raises(ConfigError) as err:
        evaluate(trained[0], str(trained[2]), mode="book")
    assert "closed-book" in err.value.message
