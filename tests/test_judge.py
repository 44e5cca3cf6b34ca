"""The LLM judge, end to end through its real path: judge templates -> litellm -> an HTTP judge on
127.0.0.1 speaking the OpenAI chat-completions protocol -> schema -> thresholds -> gate verdict.

The judge double replays the verdict recorded with each golden case (tests/golden/judge_cases.yaml:
a known-good and a known-bad answer per rubric) after checking that the rendered prompt carries
the rubrics and the case's own sections, so a template that loses part of the example, or a parser
or threshold that misreads the reply, fails these tests; nothing here scores text. The few-shot
examples in templates/judge_system.j2 must be golden cases with the golden labels, and each
recorded verdict must agree with its label. benchmarks/judge_golden.py grades the golden cases
with a real model."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from compiler.gates.chain import GateConfig, Gatekeeper
from compiler.gates.judge import Judge, JudgeError, parse_scores, render_messages, template_hashes
from compiler.records import Record, Sample
from compiler.resources import load_schema
from compiler.taxonomy.tree import load_taxonomy
from teacher_server import TeacherServer

GOLDEN = yaml.safe_load((Path(__file__).parent / "golden" / "judge_cases.yaml").read_text(encoding="utf-8"))
THRESHOLDS = {"faithfulness": 3, "relevance": 3, "format": 3, "standalone": 3}


# ------------------------------------------------------------------ the judge double -----------------
def _section(prompt: str, tag: str) -> str:
    m = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", prompt, re.S)
    assert m, f"the judge prompt has no <{tag}> section"
    return m.group(1)


def golden_judge(body: dict, number: int) -> dict:
    """Replays the verdict recorded with the golden case whose answer the prompt carries; no score
    is computed here. It refuses a prompt that lacks what a judge needs to grade the example:
    the rubric definitions, and the case's own context, question and reasoning in their sections."""
    system, prompt = body["messages"][0]["content"], body["messages"][-1]["content"]
    for rubric in THRESHOLDS:
        assert f"- {rubric}:" in system, f"the system prompt does not define {rubric}"
    answer = _section(prompt, "answer").strip()
    (case,) = [c for c in GOLDEN if c["answer"].strip() == answer]
    assert _section(prompt, "question").strip() == case["question"].strip()
    assert _section(prompt, "context").strip() == (case.get("context") or "(none)").strip()
    for step in case["reasoning"]:
        assert step in _section(prompt, "reasoning")
    return case["verdict"]


@pytest.fixture(scope="module")
def judge_server():
    with TeacherServer(responder=golden_judge, model="judge-test") as srv:
        yield srv


def record_of(case: dict) -> Record:
    return Record(case["question"], tuple(case["reasoning"]), case["answer"], case.get("context"))


def passes(scores: dict) -> bool:
    return all(scores[r] >= t for r, t in THRESHOLDS.items())


# ------------------------------------------------------------------ golden cases ---------------------
def test_golden_file_has_a_good_and_a_bad_case_per_rubric():
    pairs = {(c["rubric"], c["label"]) for c in GOLDEN}
    assert pairs == {(r, lab) for r in THRESHOLDS for lab in ("good", "bad")}


@pytest.mark.parametrize("case", GOLDEN, ids=[c["name"] for c in GOLDEN])
def test_each_recorded_verdict_is_real_shaped_and_agrees_with_its_label(case):
    jsonschema.validate(case["verdict"], load_schema("judge.json"))
    if case["label"] == "good":
        assert passes(case["verdict"])
    else:
        assert case["verdict"][case["rubric"]] < THRESHOLDS[case["rubric"]]
        assert all(v >= THRESHOLDS[r] for r, v in case["verdict"].items() if r in THRESHOLDS and r != case["rubric"])


@pytest.mark.parametrize("case", GOLDEN, ids=[c["name"] for c in GOLDEN])
def test_golden_case_through_the_real_judge_path(judge_server, case):
    judge = Judge("openai/judge-test", api_base=judge_server.url, num_retries=0)
    judge_server.reset_log()
    result = asyncio.run(judge.score(record_of(case), case.get("context"), case["kind"]))
    assert result.error is None
    if case["label"] == "good":
        assert passes(result.scores), result.scores
    else:
        assert result.scores[case["rubric"]] < THRESHOLDS[case["rubric"]], result.scores
    # what went over the wire: the rendered prompt with the example in it, and the schema
    (entry,) = judge_server.log
    body = entry["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == load_schema("judge.json")
    assert body["temperature"] == 0
    assert case["answer"] in body["messages"][-1]["content"]


@pytest.mark.parametrize("case", GOLDEN, ids=[c["name"] for c in GOLDEN])
def test_golden_case_through_the_gate(judge_server, tmp_path, case):
    node = {"knowledge": "knowledge/astro/planets", "freeform_skill": "compositional_skills/w/f/haiku",
            "grounded_skill": "compositional_skills/e/g/notes"}[case["kind"]]
    (tmp_path / node).mkdir(parents=True)
    (tmp_path / node / "qna.yaml").write_text(
        "version: 3\ncreated_by: t\ntask_description: d\ndomain: d\nseed_examples:\n"
        + ("  - context: c\n    question: q\n    answer: a\n" if case["kind"] == "grounded_skill" else ""))
    cfg = GateConfig.from_settings({"gates": {"judge_api_base": judge_server.url, "grounding_threshold": 0.0}},
                                   judge="openai/judge-test")
    gk = Gatekeeper(cfg, load_taxonomy(tmp_path), {}, {})
    rec = record_of(case)
    messages = [{"role": "user", "content": rec.question}, {"role": "assistant", "content": rec.answer}]
    s = Sample("g1", node, rec, messages, {"kind": case["kind"]})
    v = asyncio.run(gk.check(s, context=case.get("context")))
    assert set(v.scores["judge"]) == set(THRESHOLDS)
    if case["label"] == "good":
        assert v.accepted, v.detail
    else:
        assert v.reason == "judge" and case["rubric"] in v.detail


# ------------------------------------------------------------------ few-shot labels ------------------
def few_shot_problems(system_prompt: str) -> list[str]:
    """Every few-shot example must be a golden case, graded as the golden label says."""
    by_answer = {c["answer"].strip(): c for c in GOLDEN}
    examples = re.findall(r"Example (\d+):\n(.*?)\nGrade: (\{.*?\})\n", system_prompt + "\n", re.S)
    problems = []
    if not examples:
        return ["no few-shot examples found"]
    labels = set()
    for number, block, grade in examples:
        answer = re.search(r"<answer>\n(.*?)\n</answer>", block, re.S).group(1).strip()
        case = by_answer.get(answer)
        if case is None:
            problems.append(f"example {number} is not a golden case")
            continue
        scores = json.loads(grade)
        jsonschema.validate(scores, load_schema("judge.json"))
        labels.add(case["label"])
        if case["label"] == "good" and not passes(scores):
            problems.append(f"example {number} ({case['name']}) is known-good but graded {scores}")
        if case["label"] == "bad" and scores[case["rubric"]] >= THRESHOLDS[case["rubric"]]:
            problems.append(f"example {number} ({case['name']}) is known-bad but graded {scores}")
        if case["question"].strip() not in block:
            problems.append(f"example {number} ({case['name']}) has another question than its golden case")
    if labels != {"good", "bad"}:
        problems.append(f"few-shot examples should show both good and bad answers, got {sorted(labels)}")
    return problems


def test_few_shot_examples_carry_the_golden_labels():
    system = render_messages(Record("q?", ("s",), "a"), None, "freeform_skill")[0]["content"]
    assert few_shot_problems(system) == []


def test_a_mislabelled_few_shot_would_fail():
    system = render_messages(Record("q?", ("s",), "a"), None, "freeform_skill")[0]["content"]
    good = ('{"faithfulness": 5, "relevance": 5, "format": 5, "standalone": 5, "rationale": '
            '"Both claims are stated in the context and answer the question directly."}')
    assert good in system
    swapped = system.replace(good, good.replace('"faithfulness": 5', '"faithfulness": 1'))
    assert any("known-good" in p for p in few_shot_problems(swapped))
    bad_grade = re.search(r'Grade: (\{"faithfulness": 1, .*?\})', system).group(1)
    relabelled = system.replace(bad_grade, bad_grade.replace('"faithfulness": 1', '"faithfulness": 5'))
    assert any("known-bad" in p for p in few_shot_problems(relabelled))


# ------------------------------------------------------------------ prompts and replies --------------
def test_sample_text_is_data_not_template():
    rec = Record("What is {{ 7 * 7 }}? {% for x in range(3) %}x{% endfor %}", ("{{ config }}",),
                 "It is {{ 7*7 }} and {# not a comment #}", "{{ ''.__class__ }}")
    system, user = render_messages(rec, rec.context, "grounded_skill")
    assert "What is {{ 7 * 7 }}? {% for x in range(3) %}x{% endfor %}" in user["content"]
    assert "1. {{ config }}" in user["content"]
    assert "It is {{ 7*7 }} and {# not a comment #}" in user["content"]
    assert "{{ ''.__class__ }}" in user["content"]
    assert "49" not in user["content"]
    assert "faithfulness: every claim" in system["content"]


def test_thresholds_stay_out_of_the_judge_prompt():
    """kdc applies the thresholds to the scores: a changed threshold must not change the prompt
    (and so the verdict cache key), or every cached verdict would be paid for again."""
    system = render_messages(Record("q?", ("s",), "a"), None, "knowledge")[0]["content"]
    assert ">=" not in system and "kdc decides" in system


@pytest.mark.parametrize("reply,fragment", [
    ("not json at all", "not JSON"),
    ('{"faithfulness": 9, "relevance": 3, "format": 3, "rationale": ""}', "does not match"),
    ('{"faithfulness": 4, "relevance": 3}', "does not match"),
])
def test_parse_scores_rejects_bad_replies(reply, fragment):
    assert fragment in parse_scores(reply).error


def test_parse_scores_accepts_fenced_json():
    r = parse_scores('```json\n{"faithfulness": 4, "relevance": 5, "format": 3, "standalone": 5, "rationale": "ok"}\n```')
    assert r.error is None and r.scores == {"faithfulness": 4, "relevance": 5, "format": 3, "standalone": 5}


def test_invalid_reply_is_retried_then_rejects_the_sample(tmp_path):
    replies = iter(["oops", '{"faithfulness": 5, "relevance": 5, "format": 5, "standalone": 5, "rationale": "fine"}'])
    with TeacherServer(responder=lambda body, n: next(replies, "still not json")) as srv:
        judge = Judge("openai/judge-test", api_base=srv.url, num_retries=0)
        rec = Record("Write a haiku about rain?", ("step",), "Rain taps on the roof")
        assert asyncio.run(judge.score(rec, None, "freeform_skill")).scores["format"] == 5
        assert srv.chat_requests == 2
        # the retry tells the model what was wrong
        assert "not JSON" in srv.log[1]["body"]["messages"][-1]["content"]
        result = asyncio.run(judge.score(rec, None, "freeform_skill"))
        assert result.error and "not JSON" in result.error and srv.chat_requests == 4


def test_unreachable_judge_is_a_located_error():
    with TeacherServer() as srv:
        url = srv.url
    judge = Judge("openai/judge-test", api_base=url, num_retries=0, timeout=5)
    with pytest.raises(JudgeError) as err:
        asyncio.run(judge.score(Record("q?", ("s",), "a"), None, "freeform_skill"))
    assert err.value.hint and "judge" in err.value.message


def test_missing_key_variable_is_a_config_problem(monkeypatch):
    monkeypatch.delenv("KDC_TEST_JUDGE_KEY", raising=False)
    judge = Judge("openai/x", api_key_env="KDC_TEST_JUDGE_KEY")
    with pytest.raises(JudgeError) as err:
        asyncio.run(judge.score(Record("q?", ("s",), "a"), None, "freeform_skill"))
    assert "KDC_TEST_JUDGE_KEY" in err.value.message


def test_template_hashes():
    hashes = template_hashes()
    assert set(hashes) == {"judge_system.j2", "judge.j2"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes.values())
