"""Issue 15 items 2-3 end to end against the real HTTP teacher (tests/teacher_server.py): the
augmentation stage (views per section, checked, cached) and typed questions (K per call, each a
sample with its type, with earlier rounds' accepted questions listed as "do not repeat")."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from compiler.augconfig import AugmentConfig
from compiler.compile.augment import check_view
from compiler.llm.cache import request_key
from compiler.compile.plan import LeafPlan, do_not_repeat, question_types_for, round_calls
from compiler.records import Chunk, Leaf
from taxcopy import private_taxonomy
from teacher_server import FaultPlan, TeacherServer, default_responder
from test_compile import ROOT, SOLAR, compile_args, kdc, read_jsonl, tree_hashes  # noqa: F401 (kdc: fixture)

GIT = "knowledge/technology/version_control/git_internals"
INVENTED = "Quantum llamas orbit the seventh moon of Neptune every ninety minutes exactly."


@pytest.fixture
def tax(tmp_path, example_taxonomy) -> Path:
    """The example taxonomy with augmentation on (its kdc.yaml turns it off for the demo)."""
    cfg = private_taxonomy(tmp_path, example_taxonomy) / "kdc.yaml"
    text = cfg.read_text()
    cfg.write_text(text.replace("  enabled: false", "  enabled: true\n  question_types: [definitional, "
                                "procedural, causal, numeric]\n  questions_per_call: 3")
                   + f"nodes: {{{SOLAR}: {{samples: 12}}}}\n")
    return tmp_path / "taxonomy"


def _typed(entry: dict) -> bool:
    fmt = (entry["body"].get("response_format") or {}).get("json_schema") or {}
    return fmt.get("name") == "kdc_knowledge_questions"


def _prompt(entry: dict) -> str:
    return "\n".join(m["content"] for m in entry["body"]["messages"])


def test_views_are_grounded_cached_and_asked_about(tax, tmp_path, kdc):
    out = tmp_path / "out"
    with TeacherServer() as srv:
        assert kdc(*compile_args(tax, out, srv))[0] == 0
        views_asked = [e for e in srv.log if e["body"]["response_format"]["json_schema"]["name"] in
                       ("kdc_detailed_summary", "kdc_extractive_summary", "kdc_atomic_facts")]
        first = tree_hashes(out)
        srv.reset_log()
        assert kdc(*compile_args(tax, out, srv))[0] == 0
        assert srv.chat_requests == 0  # views and typed answers all from the cache: nobody asked
    assert tree_hashes(out) == first
    m = json.loads((out / "manifest.json").read_text())
    n = m["nodes"][SOLAR]
    assert n["views"]["accepted"] == {"atomic_facts": n["chunks"], "detailed_summary": n["chunks"],
                                      "extractive_summary": n["chunks"]}
    assert len(views_asked) == 3 * (n["chunks"] + m["nodes"][GIT]["chunks"])
    views = read_jsonl(out / "nodes" / SOLAR / "views.jsonl")
    assert len(views) == 3 * n["chunks"] and all(v["status"] == "accepted" for v in views)
    doc_dir = tax.parent / "build" / "doc-repos" / "solar_system"
    assert doc_dir.is_dir()
    for v in views:  # provenance: the source span's hash, and extractive passages verbatim in it
        src = v["source"]
        assert src["file"].endswith(".md") and src["end"] > src["start"] and len(src["sha256"]) == 64
        if v["kind"] == "extractive_summary":
            assert v["items"] and v["sha256"] == hashlib.sha256("\n".join(v["items"]).encode()).hexdigest()
    by_sha = {v["sha256"]: v for v in views}
    train = read_jsonl(out / "nodes" / SOLAR / "train.jsonl")
    assert len(train) == n["target"] == n["accepted"]
    asked_views = [s["metadata"]["view"] for s in train if "view" in s["metadata"]]
    assert asked_views, "no question was asked about a view"
    for s in train:
        view = s["metadata"].get("view")
        if view:  # a sample from a view keeps the view and its source section
            assert view["sha256"] in by_sha
            assert by_sha[view["sha256"]]["source"]["sha256"] == s["metadata"]["document"]["sha256"]


def test_a_view_quoting_text_not_in_the_source_is_rejected(tax, tmp_path, kdc):
    def liar(request: dict, number: int) -> dict:
        made = default_responder(request, number)
        if "passages" in made:
            made["passages"] = made["passages"][:1] + [INVENTED]
        if "summary" in made:
            made["summary"] = INVENTED
        return made

    out = tmp_path / "out"
    with TeacherServer(responder=liar) as srv:
        assert kdc(*compile_args(tax, out, srv))[0] == 0
        typed_prompts = [_prompt(e) for e in srv.log if _typed(e)]
    m = json.loads((out / "manifest.json").read_text())
    for node in (SOLAR, GIT):
        n = m["nodes"][node]
        assert n["views"]["rejected"].get("not-verbatim") == n["chunks"]
        assert n["views"]["rejected"].get("unsupported") == n["chunks"]
        assert "extractive_summary" not in n["views"]["accepted"]
        assert "detailed_summary" not in n["views"]["accepted"]
        rejected = [v for v in read_jsonl(out / "nodes" / node / "views.jsonl")
                    if v["status"] == "rejected" and v["kind"] != "atomic_facts"]  # (a table row is no atomic fact)
        assert {v["reason"] for v in rejected} == {"not-verbatim", "unsupported"}
        assert all(INVENTED in v["raw"] for v in rejected)
        assert all("not in the section" in v["detail"] for v in rejected if v["reason"] == "not-verbatim")
    assert typed_prompts and not any(INVENTED in p for p in typed_prompts)  # never asked about


def _content_rows(out: Path, node: str) -> list[dict]:
    return read_jsonl(out / "mixes" / "sources" / "phase1_knowledge" / node / "content.jsonl")


def test_accepted_views_become_content_rows_and_rejected_ones_never(tax, tmp_path, kdc):
    """Item 4: summaries (and fact lists) as content rows, the view text the target; a build whose
    teacher invents its summaries keeps every invented one out of the mix."""
    def half_liar(request: dict, number: int) -> dict:  # lies on the detailed summaries only
        made = default_responder(request, number)
        if "summary" in made:
            made["summary"] = INVENTED
        return made

    out = tmp_path / "out"
    with TeacherServer(responder=half_liar) as srv:
        assert kdc(*compile_args(tax, out, srv))[0] == 0
    mix = read_jsonl(out / "mixes" / "phase1_knowledge.jsonl")
    for node in (SOLAR, GIT):
        views = read_jsonl(out / "nodes" / node / "views.jsonl")
        accepted = {v["sha256"]: v for v in views if v["status"] == "accepted"}
        rejected = [v for v in views if v["status"] == "rejected"]
        assert "detailed_summary" in {v["kind"] for v in rejected}  # (a table row is no atomic fact either)
        assert "detailed_summary" not in {v["kind"] for v in accepted.values()}
        rows = _content_rows(out, node)
        view_rows = [r for r in rows if "view" in r["metadata"]]
        assert {r["metadata"]["view"]["kind"] for r in view_rows} == {v["kind"] for v in accepted.values()}
        assert "extractive_summary" in {r["metadata"]["view"]["kind"] for r in view_rows}
        assert len(view_rows) == len({"\n".join(v["items"]) for v in accepted.values()})
        for r in view_rows:  # the target is exactly the accepted view's text, its provenance beside it
            meta = r["metadata"]["view"]
            v = accepted[meta["sha256"]]
            assert r["messages"][-1] == {"role": "assistant", "content": "\n".join(v["items"])}
            assert meta["source"]["sha256"] == v["source"]["sha256"] and meta["request_key"] == v["request_key"]
            assert meta["kind"] == v["kind"] and r["metadata"]["row_kind"] == "content"
            assert r["messages"][-2]["role"] == "user" and v["source"]["heading"] in r["messages"][-2]["content"]
        assert len({r["messages"][-2]["content"].split(" ", 1)[0] for r in view_rows}) > 1  # phrasings vary
        assert not any(INVENTED in m["content"] for r in rows for m in r["messages"])
        assert any("view" in r["metadata"] and r["metadata"]["node_id"] == node for r in mix)
    assert not any(INVENTED in m["content"] for r in mix for m in r["messages"])


def test_content_views_setting_picks_the_view_kinds(tax, tmp_path, kdc):
    cfg = tax / "kdc.yaml"
    cfg.write_text(cfg.read_text() + "mix: {content_views: [detailed_summary]}\n")
    out = tmp_path / "out"
    with TeacherServer() as srv:
        assert kdc(*compile_args(tax, out, srv))[0] == 0
    rows = _content_rows(out, SOLAR)
    assert {r["metadata"]["view"]["kind"] for r in rows if "view" in r["metadata"]} == {"detailed_summary"}
    assert any("view" not in r["metadata"] for r in rows)  # the sections themselves stay
    cfg.write_text(cfg.read_text().replace("[detailed_summary]", "[summaries]"))
    code, stdout, err = kdc(*compile_args(tax, tmp_path / "out2", "http://127.0.0.1:9/v1"))
    assert code != 0 and "mix.content_views" in stdout + err and "Traceback" not in stdout + err


def test_k_typed_questions_become_k_samples_with_their_types(tax, tmp_path, kdc):
    out = tmp_path / "out"
    with TeacherServer() as srv:
        assert kdc(*compile_args(tax, out, srv))[0] == 0
        calls = {request_key(e["body"]["messages"]): e["body"] for e in srv.log if _typed(e)}
    m = json.loads((out / "manifest.json").read_text())
    n = m["nodes"][SOLAR]
    train = read_jsonl(out / "nodes" / SOLAR / "train.jsonl")
    assert len(train) == n["target"] == 12 and n["views"]["questions_per_call"] == 3
    rejected = read_jsonl(out / "nodes" / SOLAR / "rejected.jsonl")  # e.g. a near-duplicate of a sibling record
    by_call: dict[str, list[dict]] = {}
    for s in train + rejected:
        by_call.setdefault(s["metadata"]["request_key"], []).append(s)
    assert len(by_call) >= 4 and any(len(g) == 3 and all(s in train for s in g) for g in by_call.values())
    for group in by_call.values():
        call = calls[group[0]["metadata"]["prompt_sha256"]]  # the very request the teacher got
        schema = call["response_format"]["json_schema"]["schema"]["properties"]["questions"]
        assert schema["minItems"] == schema["maxItems"] == 3
        types = schema["items"]["properties"]["type"]["enum"]  # the call's three types, in order
        assert len(set(types)) == 3 and set(types) <= {"definitional", "procedural", "causal", "numeric"}
        for i, t in enumerate(types, 1):
            assert f"{i}. {t}" in call["messages"][1]["content"]
        items = sorted(s["metadata"]["item"] for s in group)
        assert items == sorted(set(items)) and set(items) <= {0, 1, 2} and len({s["id"] for s in group}) == len(group)
        for s in group:  # each record is its own sample, labelled with the type the teacher gave it
            if s in train:
                assert s["metadata"]["question_type"] == types[s["metadata"]["item"]]
        tokens = [s["metadata"]["usage"]["completion_tokens"] for s in group]
        assert sum(tokens) == max(tokens) > 0  # the call's usage is counted once, on its first record


def _seed_questions(node: str | None = None) -> set[str]:
    from compiler.taxonomy.tree import load_taxonomy

    return {sd.question.strip() for leaf in load_taxonomy(ROOT / "taxonomy").leaves() for sd in leaf.seeds()
            if node in (None, leaf.node_id)}


SEED_QUESTIONS = _seed_questions()


def _listed(prompt: str) -> list[str]:
    """The prompt's "do not repeat" list."""
    if "Questions already asked" not in prompt:
        return []
    block = prompt.split("Questions already asked", 1)[1].split("\n\n")[0]
    return [line[2:] for line in block.splitlines()[1:] if line.startswith("- ")]


def _flaky(request: dict, number: int) -> str | None:
    """Round 1's typed calls fail one time in two (by prompt hash, so at any arrival order); calls
    that list earlier accepted questions (not only seeds) never fail, so the build completes in a
    later round."""
    if not _typed({"body": request}):
        return None
    text = request["messages"][1]["content"]
    if set(_listed(text)) - SEED_QUESTIONS:
        return None
    return "malformed-json" if hashlib.sha256(text.encode()).digest()[0] % 2 else None


def test_do_not_repeat_lists_seeds_from_round_1_and_questions_accepted_in_earlier_rounds(tax, tmp_path, kdc):
    out = tmp_path / "out"
    with TeacherServer(faults=FaultPlan(match=_flaky)) as srv:
        assert kdc(*compile_args(tax, out, srv))[0] == 0
        prompts = {request_key(e["body"]["messages"]): e["body"]["messages"][1]["content"] for e in srv.log if _typed(e)}
    train = read_jsonl(out / "nodes" / SOLAR / "train.jsonl")
    held_out = {e["question"].strip() for e in read_jsonl(out / "nodes" / SOLAR / "eval.jsonl")}
    seeds = _seed_questions(SOLAR) - held_out
    assert held_out and held_out <= _seed_questions(SOLAR)
    accepted = {s["record"]["question"]: s for s in train}
    # round 1 asks for 12 samples in 4 calls of 3 (indexes 0-3); half fail, so later rounds top up
    later = {}
    for s in train:
        listed = _listed(prompts[s["metadata"]["prompt_sha256"]])
        assert listed and not set(listed) & held_out  # seeds from round 1 on; held-out seeds never
        if s["metadata"]["sample_index"] < 4:
            assert set(listed) <= seeds and len(listed) == min(20, len(seeds))  # round 1: the seeds only
        else:
            later[s["metadata"]["sample_index"]] = (s, listed)
    round1 = [s for s in train if s["metadata"]["sample_index"] < 4]
    # every seed and every question accepted in round 1, up to the limit (which calls fail depends on
    # the prompts' hashes, so how many round 1 accepted is not fixed)
    assert later and all(len(v[1]) == min(20, len(seeds) + len(round1)) for v in later.values())
    for index, (s, listed) in later.items():
        asked = [q for q in listed if q not in SEED_QUESTIONS]
        assert asked and all(q in accepted for q in asked)  # only accepted questions
        assert all(accepted[q]["metadata"]["sample_index"] < index for q in asked)  # from an earlier round
        same = [r["record"]["question"] for r in round1
                if r["metadata"]["document"]["sha256"] == s["metadata"]["document"]["sha256"]]
        assert listed[:len(same)] == same  # round 1's questions about the same section come first
        assert set(listed[len(same):]) & seeds  # then the leaf's own seeds


def test_waves_list_the_questions_of_earlier_waves(tax, tmp_path, kdc):
    """With augment.wave_calls: 2, round 1 is cut into waves of two calls: calls 2-3 list what
    calls 0-1 had accepted, though no call failed."""
    cfg = tax / "kdc.yaml"
    cfg.write_text(cfg.read_text().replace("  questions_per_call: 3", "  questions_per_call: 3\n  wave_calls: 2"))
    out = tmp_path / "out"
    with TeacherServer() as srv:
        assert kdc(*compile_args(tax, out, srv))[0] == 0
        prompts = {request_key(e["body"]["messages"]): e["body"]["messages"][1]["content"] for e in srv.log if _typed(e)}
    train = read_jsonl(out / "nodes" / SOLAR / "train.jsonl")
    index = {s["record"]["question"]: s["metadata"]["sample_index"] for s in train}
    waves: dict[int, set[str]] = {}
    for s in train:
        listed = set(_listed(prompts[s["metadata"]["prompt_sha256"]])) - SEED_QUESTIONS
        waves.setdefault(s["metadata"]["sample_index"] // 2, set()).update(listed)
        assert all(index[q] // 2 < s["metadata"]["sample_index"] // 2 for q in listed if q in index)
    assert waves[0] == set() and waves[1] and max(waves) >= 1
    first = {q for q, i in index.items() if i < 2}
    assert first and first <= waves[1]  # everything wave 0 accepted is listed in wave 1


def test_typed_build_is_byte_identical_at_concurrency_1_and_8(tax, tmp_path, kdc):
    cfg = tax / "kdc.yaml"
    cfg.write_text(cfg.read_text().replace("  questions_per_call: 3", "  questions_per_call: 3\n  wave_calls: 2"))
    outs = {}
    for conc in ("1", "8"):
        with TeacherServer(faults=FaultPlan(match=_flaky)) as srv:
            out = tmp_path / f"out{conc}"
            args = compile_args(tax, out, srv)
            args[args.index("--concurrency") + 1] = conc  # (waves of 2 calls: see the config below)
            assert kdc(*args)[0] == 0
            outs[conc] = {f: h for f, h in tree_hashes(out).items() if f != "report.html"}  # it names its folder
    assert outs["1"] == outs["8"]
    assert any(f.endswith("views.jsonl") for f in outs["1"])


# --------------------------------------------------------------------------- units
def _chunk(text: str) -> Chunk:
    return Chunk("repo", "c0", "doc.md", 0, len(text), text, hashlib.sha256(text.encode()).hexdigest())


def test_check_view_grounding_rules():
    src = _chunk("The Sun holds 99.8 percent of the mass of the solar system. Jupiter is the largest planet.")
    aug = AugmentConfig()
    ok = check_view("extractive_summary", src, json.dumps({"passages": ["Jupiter is the  largest planet."]}),
                    "stop", aug, "k")
    assert ok.kind == "extractive_summary" and ok.items == ("Jupiter is the largest planet.",)
    bad = check_view("extractive_summary", src, json.dumps({"passages": ["Jupiter is the biggest planet."]}),
                     "stop", aug, "k")
    assert bad.reason == "not-verbatim"
    facts = check_view("atomic_facts", src, json.dumps({"facts": ["Jupiter is the largest planet.", INVENTED]}),
                       "stop", aug, "k")
    assert facts.items == ("Jupiter is the largest planet.",) and facts.dropped == 1
    assert check_view("detailed_summary", src, json.dumps({"summary": INVENTED}), "stop", aug, "k").reason == \
        "unsupported"
    assert check_view("atomic_facts", src, json.dumps({"facts": "one"}), "stop", aug, "k").reason == "schema"
    assert check_view("atomic_facts", src, "not json", "length", aug, "k").reason == "invalid-json"


def test_question_types_and_do_not_repeat_are_deterministic():
    leaf = Leaf("knowledge/x", "knowledge/x/qna.yaml", "knowledge", 3, {}, "h")
    lp = LeafPlan(leaf, 3, 10, [], [], [], questions=3, question_types=("a", "b", "c", "d"))
    picks = [question_types_for(lp, i, 0) for i in range(20)]
    assert all(len(set(p)) == 3 and set(p) <= {"a", "b", "c", "d"} for p in picks)
    assert picks == [question_types_for(lp, i, 0) for i in range(20)] and len({tuple(p) for p in picks}) > 1
    lp.avoid = (("s1", "q1"), ("s2", "q2"), ("s1", "q3"), ("s2", "q4"))
    assert do_not_repeat(lp, "s1", 3) == ["q1", "q3", "q4"]  # the same section first, then the latest others
    assert do_not_repeat(lp, "s2", 1) == ["q4"] and do_not_repeat(lp, "s1", 0) == []
    lp.seed_avoid = ("seed a", "q2", "seed b")  # the seeds come after the same section's, before the rest
    assert do_not_repeat(lp, "s1", 5) == ["q1", "q3", "seed a", "q2", "seed b"]
    assert do_not_repeat(lp, "s1", 6) == ["q1", "q3", "seed a", "q2", "seed b", "q4"]  # q2 listed once
    lp.avoid = ()
    assert do_not_repeat(lp, "s1", 2) == ["seed a", "q2"]  # round 1: the seeds alone
    assert [round_calls(lp, n, 8) for n in (3, 8, 30)] == [3, 8, 8] and round_calls(lp, 30, 0) == 30
    lp.questions = 0
    assert round_calls(lp, 30, 8) == 30  # one Q&A a call (no typed mode): no waves


def test_bad_augment_setting_is_a_located_error(tax, tmp_path, kdc):
    cfg = tax / "kdc.yaml"
    cfg.write_text(cfg.read_text().replace("questions_per_call: 3", "questions_per_call: 0"))
    line = next(i for i, l in enumerate(cfg.read_text().splitlines(), 1) if "questions_per_call" in l)
    code, out, err = kdc(*compile_args(tax, tmp_path / "out", "http://127.0.0.1:9/v1"))
    assert code != 0 and f"kdc.yaml:{line}:" in out + err and "questions_per_call" in out + err


def test_dry_run_counts_the_view_calls(tax, tmp_path, kdc):
    with TeacherServer() as srv:
        code, out, _ = kdc(*compile_args(tax, tmp_path / "out", srv, "--dry-run", "--json"))
        assert code == 0 and srv.chat_requests == 0
    nodes = json.loads(out)["nodes"]
    for node in (SOLAR, GIT):
        n = nodes[node]
        assert n["view_requests"] == 3 * n["chunks"] and n["template"] == "generate_knowledge_typed.j2"
        assert n["est_prompt_tokens"] > n["est_view_prompt_tokens"] > 0
