"""`kdc compile` against a teacher that misbehaves at known rates: duplicates, copies of seed
examples (shown ones and held-out ones), ungrounded answers, personal data and junk. Each gate must
catch its own, every leaf must still reach its quota by top-up, and the reasons must add up to the
totals in the manifest.

The teacher is a real HTTP server on 127.0.0.1 (tests/teacher_server.py) with a responder that
picks a category per request from a seeded draw and writes a record that can be recognised by its
content afterwards, so each line of train.jsonl / rejected.jsonl is checked against its category.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from compiler.compile.plan import split_seeds
from compiler.taxonomy.tree import load_taxonomy
from teacher_server import TeacherServer, default_responder

RATES = [("clean", 0.37), ("dup", 0.15), ("seed", 0.10), ("eval", 0.10), ("ungrounded", 0.10),
         ("pii", 0.08), ("junk", 0.10)]
UNGROUNDED = "zorblax"  # a word in no document, context or seed
PII_MAIL = "quality.lead@example.org"
JUNK = "<|im_start|>assistant"
TARGET = 6


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


class MisbehavingTeacher:
    """Responder for TeacherServer: a category per request at the RATES above."""

    def __init__(self, taxonomy_root: Path):
        leaves = load_taxonomy(taxonomy_root).leaves()
        self.leaves = {leaf.node_id: leaf.seeds() for leaf in leaves}
        # the held-out seeds, as compile splits them (eval_share 0.2, seed 7): never in a prompt
        self.held_out = {leaf.node_id: split_seeds(leaf, 0.2, 7)[1] for leaf in leaves}
        self.lock = threading.Lock()
        self.first_clean: dict[str, dict] = {}  # per leaf: the record its dups copy
        self.served: Counter = Counter()
        self.serial = Counter()
        self.pairs_used: dict[tuple[str, str], set] = defaultdict(set)  # clean knowledge records never repeat a pair

    def _leaf(self, shown: list[dict]) -> str:
        questions = {ex.get("question", "").strip() for ex in shown}
        for node_id, seeds in self.leaves.items():
            if questions and questions <= {s.question for s in seeds}:
                return node_id
        raise AssertionError(f"no leaf has the seeds shown in the prompt: {sorted(questions)[:2]}")

    def __call__(self, body: dict, number: int) -> dict:
        prompt = body["messages"][-1]["content"]
        shown = [json.loads(line) for line in prompt.splitlines() if line.startswith("{")]
        node = self._leaf(shown)
        kind = "knowledge" if node.startswith("knowledge/") else (
            "grounded_skill" if "grounded" in node else "freeform_skill")
        doc = re.search(r"<document>\n(.*?)\n</document>", prompt, re.S)
        draw = random.Random(hashlib.sha256(f"{prompt}\0{body.get('seed')}".encode()).digest()).random()
        acc, category = 0.0, "clean"
        for name, rate in RATES:
            acc += rate
            if draw < acc:
                category = name
                break
        with self.lock:
            self.serial[node] += 1
            k = self.serial[node]
            if category == "ungrounded" and kind == "freeform_skill":
                category = "clean"  # nothing to be grounded in
            if category == "dup" and node not in self.first_clean:
                category = "clean"
            record = self._record(category, node, kind, k, shown, doc.group(1) if doc else None)
            props = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema", {}).get("properties", {})
            if props and "reasoning" not in props:  # a leaf without reasoning steps (the haiku)
                record.pop("reasoning", None)
            if category == "clean" and node not in self.first_clean:
                self.first_clean[node] = record
            self.served[category] += 1
        return record

    def _record(self, category: str, node: str, kind: str, k: int, shown: list[dict], doc: str | None) -> dict:
        seeds = self.leaves[node]
        if category == "dup":  # the same record up to case and punctuation
            rec = dict(self.first_clean[node])
            return {**rec, "question": rec["question"].upper() + "?" * k}
        if category in ("seed", "eval"):
            shown_q = {ex.get("question", "").strip() for ex in shown}
            pool = [s for s in seeds if s.question in shown_q] if category == "seed" else self.held_out[node]
            assert pool and not (category == "eval" and {s.question for s in pool} & shown_q)
            s = pool[k % len(pool)]
            rec = {"question": s.question, "reasoning": ["Recall the expert's example."], "answer": s.answer}
            return {"context": s.context or "Notes.", **rec} if kind == "grounded_skill" else rec
        if kind == "knowledge":
            sentences = [x.strip() for x in re.split(r"(?<=[.!?])\s+", doc or "") if len(x.split()) >= 5]
            pairs = [(i, j) for i in range(len(sentences)) for j in range(i + 1, len(sentences))]
            used = self.pairs_used[(node, doc or "")]
            start = (k * 7) % len(pairs)  # the first pair not served yet: two clean records are never near-copies
            i, j = next((p for p in pairs[start:] + pairs[:start] if p not in used), pairs[start])
            used.add((i, j))
            answer = f"{sentences[i]} {sentences[j]}"
            question = f"What does the excerpt say in passage {k} about {' '.join(sentences[i].split()[:4])}?"
            context = None
        else:
            rng = random.Random(f"{node}:{k}")
            words = [f"{rng.choice('bcdfgklmnprstvz')}{rng.choice('aeiou')}{rng.choice('lmnrst')}"
                     f"{rng.choice('aeiou')}" for _ in range(40)]
            context = f"Notes {k}: " + " ".join(words[:24]) + "."
            question = f"Summarise item {k} about {' '.join(words[24:28])}?"
            answer = " ".join(words[2:14]) + "." if kind == "grounded_skill" else " ".join(words[28:40]) + "."
        reasoning = [f"Look at part {k} of the material.", "Then state what it says."]
        if category == "ungrounded":
            answer = f"The {UNGROUNDED} flux capacitor of quintessence {k} drives spectral {UNGROUNDED} engines."
        elif category == "pii":
            answer = f"{answer} Questions go to {PII_MAIL}."
        elif category == "junk":
            answer = f"{JUNK}\n{answer}"
        rec = {"question": question, "reasoning": reasoning, "answer": answer}
        return {"context": context, **rec} if kind == "grounded_skill" else rec


def compile_with(teacher, taxonomy: Path, out: Path, settings: str, *args: str) -> dict:
    config = out.parent / f"{out.name}.kdc.yaml"
    # per_chunk 0: every leaf's quota is TARGET (these tests are about the gates, not coverage);
    # augment off: the scripted teacher writes one record per call (typed calls: tests/test_augment.py)
    config.write_text(f"samples_per_node: {TARGET}\nper_chunk: 0\nseed: 7\nconcurrency: 2\naugment: false\n{settings}")
    with TeacherServer(responder=teacher) as srv:
        run = subprocess.run([sys.executable, "-m", "compiler", "compile", str(taxonomy), "--out", str(out),
                              "--config", str(config), "--teacher", "openai/teacher-test", "--api-base", srv.url,
                              "--quiet", *args], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads((out / "manifest.json").read_text())


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def classify(rec: dict, node: str, eval_qa: set, seeds: dict, first_clean: dict) -> str:
    text = json.dumps(rec)
    if UNGROUNDED in text:
        return "ungrounded"
    if "im_start" in text:
        return "junk"
    if PII_MAIL in text or "[EMAIL]" in text:
        return "pii"
    qa = (rec["question"], rec["answer"])
    if qa in eval_qa:
        return "eval"
    if qa in {(s.question, s.answer) for s in seeds[node]}:
        return "seed"
    fc = first_clean.get(node)
    if fc and _norm(rec["question"]) == _norm(fc["question"]) and _norm(rec["answer"]) == _norm(fc["answer"]):
        return "dup"
    return "clean"


@pytest.fixture(scope="module")
def built(example_taxonomy, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "build"
    teacher = MisbehavingTeacher(example_taxonomy)
    manifest = compile_with(teacher, example_taxonomy, out, "gates: {pii: redact}\n")
    return teacher, out, manifest


def _outcomes(teacher, out, manifest):
    seeds = teacher.leaves
    got: dict[str, Counter] = defaultdict(Counter)
    for node_id, node in manifest["nodes"].items():
        eval_qa = {(e["question"], e["answer"]) for e in read(out / node["files"]["eval"])}
        for s in read(out / node["files"]["train"]):
            got[classify(s["record"], node_id, eval_qa, seeds, teacher.first_clean)]["accepted"] += 1
        for r in read(out / node["files"]["rejected"]):
            rec = json.loads(r["raw"]) if r.get("raw") else {}
            got[classify(rec, node_id, eval_qa, seeds, teacher.first_clean)][r["reason"]] += 1
    return got


def test_each_gate_catches_its_own(built):
    teacher, out, manifest = built
    got = _outcomes(teacher, out, manifest)
    # every category was served and reached the gates (the test cannot pass vacuously)
    for category, _ in RATES:
        assert sum(got[category].values()) >= 1, (category, dict(got))
    assert set(got["ungrounded"]) == {"ungrounded"}
    assert set(got["junk"]) == {"sanity-markup"}
    assert set(got["seed"]) == {"dup-seed"}
    assert set(got["eval"]) == {"contaminated"}
    assert set(got["pii"]) == {"accepted"}  # redact mode: kept, with the address replaced
    assert set(got["clean"]) == {"accepted"}
    # a leaf's dups: its first clean record is kept (or counted under clean), every copy is rejected
    assert set(got["dup"]) <= {"dup-exact", "accepted"}
    per_node_kept = Counter()
    for node_id, node in manifest["nodes"].items():
        fc = teacher.first_clean.get(node_id)
        for s in read(out / node["files"]["train"]):
            if fc and _norm(s["record"]["question"]) == _norm(fc["question"]):
                per_node_kept[node_id] += 1
    assert all(n == 1 for n in per_node_kept.values()), per_node_kept
    assert got["dup"]["dup-exact"] >= 1


def test_quotas_are_met_by_top_up(built):
    teacher, out, manifest = built
    for node_id, node in manifest["nodes"].items():
        assert node["accepted"] == node["target"] == TARGET and node["shortfall"] == 0, node_id
        assert len(read(out / node["files"]["train"])) == TARGET
    assert sum(sum(n["rejected"].values()) for n in manifest["nodes"].values()) > 0  # top-up was needed


def test_reasons_add_up_to_the_totals(built):
    teacher, out, manifest = built
    total_rejected = 0
    for node_id, node in manifest["nodes"].items():
        lines = read(out / node["files"]["rejected"])
        assert Counter(r["reason"] for r in lines) == Counter(node["rejected"]), node_id
        assert node["attempts"] == node["accepted"] + sum(node["rejected"].values()), node_id
        total_rejected += len(lines)
        for r in lines:
            assert r["reason"] and r["detail"], r
    assert manifest["totals"]["rejected"] == total_rejected
    assert manifest["totals"]["accepted"] == sum(n["accepted"] for n in manifest["nodes"].values())


def test_personal_data_is_redacted_everywhere_and_counted(built):
    teacher, out, manifest = built
    redacted = 0
    for node_id, node in manifest["nodes"].items():
        train = read(out / node["files"]["train"])
        n = sum("[EMAIL]" in s["record"]["answer"] for s in train)
        assert node["pii_redacted"] == n, node_id
        redacted += n
        for s in train:
            if "[EMAIL]" in s["record"]["answer"]:
                assert s["metadata"]["gates"]["pii_redacted"] == ["email"]
                assert "[EMAIL]" in s["messages"][-1]["content"]
    assert redacted >= 1
    for path in list(out.rglob("*.jsonl")):
        if "rejected" not in path.name:
            assert PII_MAIL not in path.read_text(encoding="utf-8"), path


def test_gate_scores_and_diversity_reach_the_manifest(built):
    teacher, out, manifest = built
    for node_id, node in manifest["nodes"].items():
        div = node["diversity"]
        assert set(div) == {"distinct_1", "distinct_2", "near_dup_rate"} and 0 < div["distinct_1"] <= 1
        assert div["near_dup_rate"] == 0.0  # the gates removed them
        if node["kind"] in ("knowledge", "grounded_skill"):
            assert len(node["scores"]["grounding"]) == TARGET
            assert all(g >= 0.5 for g in node["scores"]["grounding"])
    mixes = manifest["mixes"]
    p1 = mixes["phase1_knowledge"]
    # every accepted Q&A reaches phase 1 three ways (closed-book, RAFT, open-book), every chunk as a content row
    assert set(p1["nodes"]) == {n for n, v in manifest["nodes"].items() if v["kind"] == "knowledge"}
    for node_id, n in p1["nodes"].items():
        kinds = n["row_kinds"]
        assert n["available"] == TARGET and set(kinds) == {"content", "closed_book", "raft", "open_book"}
        assert kinds["closed_book"] >= TARGET and kinds["raft"] >= TARGET and kinds["open_book"] >= TARGET
        assert kinds["content"] >= manifest["nodes"][node_id]["chunks"]
    assert p1["rows"] == sum(n["rows"] for n in p1["nodes"].values())
    by = mixes["phase2_skills"]["by_source"]
    assert by["synthetic"] == 4 * TARGET and by["seed"] / mixes["phase2_skills"]["rows"] <= 0.3 and by["replay"] > 0


def test_drop_mode_rejects_personal_data(example_taxonomy, tmp_path):
    teacher = MisbehavingTeacher(example_taxonomy)
    out = tmp_path / "drop"
    manifest = compile_with(teacher, example_taxonomy, out, "gates: {pii: drop}\n")
    got = _outcomes(teacher, out, manifest)
    assert set(got["pii"]) == {"pii"} and got["pii"]["pii"] >= 1
    assert all(n["pii_redacted"] == 0 and n["shortfall"] == 0 for n in manifest["nodes"].values())


def test_judge_gate_through_compile(example_taxonomy, tmp_path):
    """`--judge MODEL` with an HTTP judge: every accepted sample carries its rubric scores, the
    judge's low scores reject (reason `judge`), and the quotas are still met."""
    def judge(body: dict, number: int) -> dict:
        prompt = body["messages"][-1]["content"]
        low = hashlib.sha256(prompt.encode()).digest()[0] % 4 == 0  # about one in four
        return {"faithfulness": 5, "relevance": 4, "format": 2 if low else 5, "standalone": 5, "rationale": "test judge"}

    settings = "gates: {judge_api_base: '%s'}\n"
    with TeacherServer(responder=judge, model="judge-test") as judge_srv:
        manifest = compile_with(default_responder, example_taxonomy, tmp_path / "judged",
                                settings % judge_srv.url, "--judge", "openai/judge-test")
        judged = judge_srv.chat_requests
        asked = {e["body"]["messages"][-1]["content"] for e in judge_srv.log}
    out = tmp_path / "judged"
    first = {p: p.read_bytes() for p in sorted((out / "nodes").rglob("*.jsonl"))}
    # a re-run (or a resume after a crash) takes the verdicts from the cache: no example is judged
    # twice (the judge runs ahead of the ordered gates, so it may see a surplus answer it skipped before)
    with TeacherServer(responder=judge, model="judge-test") as judge_srv:
        again = compile_with(default_responder, example_taxonomy, out, settings % judge_srv.url,
                             "--judge", "openai/judge-test")
        assert not asked & {e["body"]["messages"][-1]["content"] for e in judge_srv.log}
        assert again["judge"]["calls"] == judge_srv.chat_requests
    assert {p: p.read_bytes() for p in sorted((out / "nodes").rglob("*.jsonl"))} == first
    assert manifest["judge"]["model"] == "openai/judge-test" and manifest["judge"]["calls"] == judged
    rejected = sum(n["rejected"].get("judge", 0) for n in manifest["nodes"].values())
    accepted = sum(n["accepted"] for n in manifest["nodes"].values())
    assert rejected >= 1 and judged >= rejected + accepted
    for node_id, node in manifest["nodes"].items():
        assert node["shortfall"] == 0 and len(node["scores"]["judge"]) == TARGET
        for s in read(out / node["files"]["train"]):
            assert s["metadata"]["gates"]["judge"] == {"faithfulness": 5, "relevance": 4, "format": 5, "standalone": 5}
        for r in read(out / node["files"]["rejected"]):
            if r["reason"] == "judge":
                assert "format 2 < 3" in r["detail"] and r["metadata"]["gates"]["judge"]["format"] == 2
