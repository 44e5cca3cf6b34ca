"""Multiphase mixes: what each phase holds, the replay and seed shares, per-node cap and floor, and
recipes that rebuild each mix exactly."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from compiler.errors import BuildError, ConfigError
from compiler.mix.phases import MixConfig, build_mixes, phase2_counts, rebuild_mix
from compiler.records import Chunk, Record, Sample, Seed
from compiler.taxonomy.tree import load_taxonomy

PLANETS = "knowledge/science/planets"
GIT = "knowledge/tech/git"
HAIKU = "compositional_skills/writing/freeform/haiku"
NOTES = "compositional_skills/extraction/grounded/notes"
FOUNDATION = "foundational_skills/reasoning/logic"


@pytest.fixture(scope="module")
def taxonomy(tmp_path_factory):
    root = tmp_path_factory.mktemp("tax")
    for node, body in [
        (PLANETS, "version: 3\ndomain: astronomy\ndocument: {repo: r, commit: c, patterns: ['*.md']}\n"),
        (GIT, "version: 3\ndomain: git\ndocument: {repo: r, commit: c, patterns: ['*.md']}\n"),
        (HAIKU, "version: 3\ntask_description: d\nseed_examples:\n  - question: q\n    answer: a\n"),
        (NOTES, "version: 3\ntask_description: d\nseed_examples:\n  - context: c\n    question: q\n    answer: a\n"),
        (FOUNDATION, "version: 3\ntask_description: d\nseed_examples:\n  - question: q\n    answer: a\n"),
    ]:
        (root / node).mkdir(parents=True)
        (root / node / "qna.yaml").write_text(body)
    return load_taxonomy(root)


def samples(node: str, n: int, kind: str, context: str | None = None, reasoning: bool = True) -> list[Sample]:
    out = []
    for i in range(n):
        rec = Record(f"Question {i} for {node}?", (f"Step for {i}.",) if reasoning else (), f"Answer {i} for {node}.",
                     context)
        user = f"{context}\n\n{rec.question}" if context else rec.question
        out.append(Sample(f"{node.rsplit('/', 1)[-1]}-{i:03d}", node, rec,
                          [{"role": "system", "content": f"You are skilled in {node}."},
                           {"role": "user", "content": user},
                           {"role": "assistant", "content": (f"1. {rec.reasoning[0]}\n\n" if reasoning else "")
                            + f"Answer: {rec.answer}"}],
                          {"kind": kind}))
    return out


def accepted(n_knowledge=6, n_skill=10) -> dict[str, list[Sample]]:
    return {PLANETS: samples(PLANETS, n_knowledge, "knowledge", "Jupiter is the largest planet."),
            GIT: samples(GIT, n_knowledge, "knowledge", "A commit points to a tree."),
            HAIKU: samples(HAIKU, n_skill, "freeform_skill", reasoning=False),
            NOTES: samples(NOTES, n_skill, "grounded_skill", "Priya will send the budget by Friday.")}


SEEDS = {
    HAIKU: [Seed(f"Write haiku {i}.", f"haiku {i}") for i in range(5)],
    NOTES: [Seed(f"Action items {i}?", f"Priya: task {i}", f"notes {i}") for i in range(5)],
    PLANETS: [Seed(f"Planet question {i}?", f"planet answer {i}", "chunk") for i in range(4)],
    GIT: [],
    FOUNDATION: [Seed("Is it true?", "Yes.")],
}


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def build(tmp_path, taxonomy, acc=None, seeds=None, chunks=None, **mix) -> tuple[Path, dict]:
    cfg = MixConfig.from_settings({"seed": 7, "mix": mix})
    section = build_mixes(tmp_path, taxonomy, acc if acc is not None else accepted(),
                          seeds if seeds is not None else SEEDS, cfg, chunks)
    return tmp_path / "mixes", section


# ------------------------------------------------------------------ phases ---------------------------
CHUNKS = {PLANETS: [Chunk("r", "c", "planets.md", 0, 30, "Jupiter is the largest planet.", "h1", "Planets", "Giants")],
          GIT: [Chunk("r", "c", "git.md", 0, 26, "A commit points to a tree.", "h2", "Git", "Objects > Commits")]}


def test_phase1_is_knowledge_with_its_context(tmp_path, taxonomy):
    mixes, section = build(tmp_path, taxonomy, chunks=CHUNKS)
    rows = read(mixes / "phase1_knowledge.jsonl")
    # per leaf: 1 content, 6 closed-book, 6 RAFT, 6 open-book candidates; the smallest total with
    # every row at least once at shares .25/.3/.25/.2 is 30: 8 + 9 + 8 + 6 (round half to even)
    per_leaf = {"content": 8, "closed_book": 9, "raft": 8, "open_book": 6}
    assert len(rows) == 62 and section["phase1_knowledge"]["rows"] == 62
    assert section["phase1_knowledge"]["nodes"][PLANETS] == {"available": 6, "rows": 31, "row_kinds": per_leaf}
    assert {r["metadata"]["node_id"] for r in rows} == {PLANETS, GIT}
    assert {r["metadata"]["source"] for r in rows} == {"synthetic"}
    kinds = Counter(r["metadata"]["row_kind"] for r in rows)
    assert kinds == {k: 2 * v for k, v in per_leaf.items()}
    for r in rows:
        assert set(r) == {"messages", "metadata"} and set(r["metadata"]) == {"node_id", "source", "id", "row_kind"}
        user = next(m for m in r["messages"] if m["role"] == "user")["content"]
        answer = r["messages"][-1]["content"]
        own, other = (("Jupiter is the largest planet.", "A commit points to a tree.")
                      if r["metadata"]["node_id"] == PLANETS else
                      ("A commit points to a tree.", "Jupiter is the largest planet."))
        kind = r["metadata"]["row_kind"]
        if kind == "content":  # the document's own text is the target, the question names the section
            assert answer == own and user in ("What does Planets say about Giants?",
                                              "What does Git say about Objects > Commits?")
        elif kind == "closed_book":
            assert own not in user and other not in user and user.startswith("Question ")
            assert r["metadata"]["id"].endswith(":closed_book")
        elif kind == "raft":  # a distractor from the other document, the gold one most of the time
            assert other in user and "<excerpt 1>" in user and user.rstrip().endswith("?")
        else:
            assert user.startswith(own + "\n\n")
    assert sum(own in next(m["content"] for m in r["messages"] if m["role"] == "user")
               for r in rows if r["metadata"]["row_kind"] == "raft"
               for own in ("Jupiter is the largest planet.", "A commit points to a tree.")) >= 2 * 8
    assert len({r["metadata"]["id"] for r in rows}) == 2 * (1 + 6 + 6 + 6)  # distinct ids; repeats are upsampling
    assert section["phase1_knowledge"]["row_kinds"] == {k: round(2 * v / 62, 4) for k, v in sorted(per_leaf.items())}


def test_raft_without_the_gold_and_without_other_documents(tmp_path, taxonomy):
    mixes, _ = build(tmp_path, taxonomy, chunks=CHUNKS, raft_gold_share=0.0)
    for r in read(mixes / "phase1_knowledge.jsonl"):
        if r["metadata"]["row_kind"] == "raft":
            user = r["messages"][-2]["content"]
            assert ("Jupiter" in user) != ("commit" in user)  # only the other document's excerpt
    acc = {PLANETS: accepted()[PLANETS]}
    mixes, section = build(tmp_path / "one", taxonomy, acc=acc, chunks={PLANETS: CHUNKS[PLANETS]})
    kinds = section["phase1_knowledge"]["nodes"][PLANETS]["row_kinds"]
    assert "raft" not in kinds and set(kinds) == {"content", "closed_book", "open_book"}


@pytest.mark.parametrize("shares,fragment", [
    ({"content": 0.5, "closed_book": 0.5, "raft": 0.05}, "from 0.1 to 1"),
    ({"content": 0.5, "closed_book": 0.4}, "add up to 1"),
    ({"summary": 1.0}, "unknown row kind"),
])
def test_bad_knowledge_shares(shares, fragment):
    with pytest.raises(ConfigError) as err:
        MixConfig.from_settings({"mix": {"knowledge_shares": shares}})
    assert fragment in err.value.message and "content: 0.25" in err.value.hint


def test_phase2_is_skills_plus_replay_plus_seeds(tmp_path, taxonomy):
    mixes, section = build(tmp_path, taxonomy)
    p1 = read(mixes / "phase1_knowledge.jsonl")
    rows = read(mixes / "phase2_skills.jsonl")
    by = Counter(r["metadata"]["source"] for r in rows)
    # 20 synthetic skill rows; seeds at most 30 %: floor(0.3/0.5 * 20) = 12, but only the haiku's 5 seeds
    # are usable: the notes leaf reasons (its seeds would teach skipping the steps), the knowledge
    # leaf's seeds stay out of phase 2; replay 20 % of the total: round(0.25 * (20 + 5)) = 6
    assert by == {"synthetic": 20, "seed": 5, "replay": 6}
    assert by["seed"] / len(rows) <= 0.3
    assert abs(by["replay"] / len(rows) - 0.2) < 0.01
    assert section["phase2_skills"]["by_source"] == dict(sorted(by.items()))
    assert section["phase2_skills"]["rows"] == 31 and section["phase2_skills"]["seeds_available"] == 5
    assert section["phase2_skills"]["seeds_skipped_reasoning"] == 9  # 5 notes + 4 planets
    synthetic = {r["metadata"]["node_id"] for r in rows if r["metadata"]["source"] == "synthetic"}
    assert synthetic == {HAIKU, NOTES}
    # replay rows are phase-1 rows, unchanged but for their source
    p1_by_id = {r["metadata"]["id"]: r for r in p1}
    for r in (r for r in rows if r["metadata"]["source"] == "replay"):
        assert r["messages"] == p1_by_id[r["metadata"]["id"]]["messages"]
    # seed rows: the experts' own examples, shaped like the synthetic rows; never foundational ones
    seed_rows = [r for r in rows if r["metadata"]["source"] == "seed"]
    known = {(s.question, s.answer) for node, ss in SEEDS.items() for s in ss}
    for r in seed_rows:
        user = next(m for m in r["messages"] if m["role"] == "user")["content"]
        answer = r["messages"][-1]["content"]
        assert r["messages"][-1]["role"] == "assistant" and answer.startswith("Answer: ")
        q = user.split("\n\n")[-1]
        assert (q, answer[len("Answer: "):]) in known
        assert r["metadata"]["node_id"] != FOUNDATION
        if r["metadata"]["node_id"] == NOTES:
            assert user.startswith("notes ")  # the context travels with a grounded seed
    assert len({r["metadata"]["id"] for r in seed_rows}) == len(seed_rows)  # drawn without repeats


def test_shares_are_configurable(tmp_path, taxonomy):
    mixes, section = build(tmp_path, taxonomy, replay_share=0.0, seed_share=0.1)
    by = Counter(r["metadata"]["source"] for r in read(mixes / "phase2_skills.jsonl"))
    assert by == {"synthetic": 20, "seed": 2}  # floor(0.1/0.9 * 20) = 2; no replay
    assert not (mixes / "sources" / "phase2_skills" / "replay_phase1_knowledge.jsonl").exists()


def test_replay_never_repeats_phase1(tmp_path, taxonomy):
    mixes, _ = build(tmp_path, taxonomy, acc=accepted(n_knowledge=1, n_skill=30), replay_share=0.5, seed_share=0.1)
    rows = read(mixes / "phase2_skills.jsonl")
    p1 = read(mixes / "phase1_knowledge.jsonl")
    assert len(p1) == 8  # per leaf: 1 content, 2 closed-book, 1 open-book (no other document for RAFT)
    assert Counter(r["metadata"]["source"] for r in rows)["replay"] == len(p1)  # all of phase 1, once


def test_phase2_counts():
    cfg = MixConfig(replay_share=0.2, seed_share=0.3)
    assert phase2_counts(20, 15, 12, cfg) == (12, 8)
    assert phase2_counts(20, 3, 12, cfg) == (3, 6)  # few seeds: all of them
    assert phase2_counts(0, 5, 12, cfg) == (5, 1)  # no synthetic skills: the seeds are the skill data
    assert phase2_counts(20, 15, 0, cfg) == (12, 0)  # nothing to replay
    assert phase2_counts(0, 0, 0, cfg) == (0, 0)


# ------------------------------------------------------------------ per-node cap and floor -----------
def test_per_node_cap_and_floor(tmp_path, taxonomy):
    acc = accepted()
    acc[HAIKU] = samples(HAIKU, 25, "freeform_skill")
    acc[NOTES] = samples(NOTES, 2, "grounded_skill", "Priya will send the budget by Friday.")
    mixes, section = build(tmp_path, taxonomy, acc=acc, per_node_cap=8, per_node_floor=5)
    rows = [r for r in read(mixes / "phase2_skills.jsonl") if r["metadata"]["source"] == "synthetic"]
    per_node = Counter(r["metadata"]["node_id"] for r in rows)
    assert per_node == {HAIKU: 8, NOTES: 5}
    # the capped node gives distinct rows; the floored one repeats its two rows
    assert len({r["metadata"]["id"] for r in rows if r["metadata"]["node_id"] == HAIKU}) == 8
    notes_ids = Counter(r["metadata"]["id"] for r in rows if r["metadata"]["node_id"] == NOTES)
    assert sorted(notes_ids.values()) == [2, 3]
    assert section["phase2_skills"]["nodes"] == {HAIKU: {"available": 25, "rows": 8},
                                                 NOTES: {"available": 2, "rows": 5}}
    p1 = Counter(r["metadata"]["node_id"] for r in read(mixes / "phase1_knowledge.jsonl"))
    assert p1 == {PLANETS: 8, GIT: 8}  # the cap bounds a knowledge leaf's rows of all kinds together


def test_a_leaf_without_samples_gets_no_rows(tmp_path, taxonomy):
    acc = accepted()
    acc[NOTES] = []
    mixes, section = build(tmp_path, taxonomy, acc=acc, per_node_floor=3)
    rows = read(mixes / "phase2_skills.jsonl")
    assert not any(r["metadata"]["node_id"] == NOTES and r["metadata"]["source"] == "synthetic" for r in rows)
    assert NOTES not in section["phase2_skills"]["nodes"]


# ------------------------------------------------------------------ recipes --------------------------
@pytest.mark.parametrize("phase", ["phase1_knowledge", "phase2_skills"])
def test_recipe_rebuilds_the_mix_exactly(tmp_path, taxonomy, phase):
    mixes, _ = build(tmp_path, taxonomy, per_node_floor=12)
    recipe_path = mixes / f"{phase}.recipe.yaml"
    recipe = yaml.safe_load(recipe_path.read_text())
    assert set(recipe) == {"datasets", "seed"} and recipe["seed"] == 7
    for entry in recipe["datasets"]:
        assert set(entry) == {"path", "sampling_size"}
        assert (mixes / entry["path"]).is_file()
        assert isinstance(entry["sampling_size"], int)
    rows = read(mixes / f"{phase}.jsonl")
    assert rebuild_mix(recipe_path) == rows
    assert sum(e["sampling_size"] for e in recipe["datasets"]) == len(rows)


def test_recipe_names_every_source_and_nothing_else(tmp_path, taxonomy):
    mixes, _ = build(tmp_path, taxonomy)
    named = {e["path"] for p in ("phase1_knowledge", "phase2_skills")
             for e in yaml.safe_load((mixes / f"{p}.recipe.yaml").read_text())["datasets"]}
    on_disk = {p.relative_to(mixes).as_posix() for p in (mixes / "sources").rglob("*.jsonl")}
    assert named == on_disk
    # a leaf that leaves the tree takes its source with it
    acc = accepted()
    del acc[GIT]
    build(tmp_path, taxonomy, acc=acc)
    assert not any("knowledge/tech/git" in p.as_posix() for p in (mixes / "sources").rglob("*"))


def test_builds_are_byte_identical_and_seeded(tmp_path, taxonomy):
    a, _ = build(tmp_path / "a", taxonomy)
    b, _ = build(tmp_path / "b", taxonomy)
    for name in ("phase1_knowledge.jsonl", "phase2_skills.jsonl", "phase2_skills.recipe.yaml"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    c, _ = build(tmp_path / "c", taxonomy, seed=8)
    rows_a, rows_c = read(a / "phase2_skills.jsonl"), read(c / "phase2_skills.jsonl")
    assert [r["metadata"]["id"] for r in rows_a] != [r["metadata"]["id"] for r in rows_c]
    assert Counter(r["metadata"]["source"] for r in rows_a) == Counter(r["metadata"]["source"] for r in rows_c)


def test_rows_are_shuffled_across_sources(tmp_path, taxonomy):
    mixes, _ = build(tmp_path, taxonomy)
    sources = [r["metadata"]["source"] for r in read(mixes / "phase2_skills.jsonl")]
    runs = sum(1 for x, y in zip(sources, sources[1:]) if x != y)
    assert runs > 10  # not three blocks


def test_hand_edited_recipe_with_a_share(tmp_path, taxonomy):
    mixes, _ = build(tmp_path, taxonomy)
    recipe = yaml.safe_load((mixes / "phase2_skills.recipe.yaml").read_text())
    recipe["datasets"] = [{"path": recipe["datasets"][0]["path"], "sampling_size": 0.5}]
    (mixes / "custom.recipe.yaml").write_text(yaml.safe_dump(recipe))
    rows = rebuild_mix(mixes / "custom.recipe.yaml")
    assert len(rows) == 5 and len({r["metadata"]["id"] for r in rows}) == 5


def test_bad_recipes_are_located_errors(tmp_path, taxonomy):
    mixes, _ = build(tmp_path, taxonomy)
    bad = mixes / "bad.recipe.yaml"
    bad.write_text("datasets:\n  - path: sources/missing.jsonl\n    sampling_size: 3\nseed: 1\n")
    with pytest.raises(BuildError) as err:
        rebuild_mix(bad)
    assert "does not exist" in err.value.message and err.value.hint and err.value.path == str(bad)
    bad.write_text("datasets:\n  - sampling_size: 3\n")
    with pytest.raises(BuildError, match="needs a `path`"):
        rebuild_mix(bad)
    bad.write_text("datasets: [\n")
    with pytest.raises(BuildError, match="cannot read"):
        rebuild_mix(bad)
    with pytest.raises(BuildError, match="cannot read"):
        rebuild_mix(mixes / "absent.recipe.yaml")


def test_mix_lines_are_conversational_for_trl(tmp_path, taxonomy):
    from trl.data_utils import is_conversational

    mixes, _ = build(tmp_path, taxonomy)
    for name in ("phase1_knowledge.jsonl", "phase2_skills.jsonl"):
        for row in read(mixes / name):
            assert is_conversational(row)
            roles = [m["role"] for m in row["messages"]]
            assert roles[-1] == "assistant" and roles[-2] == "user" and set(roles) <= {"system", "user", "assistant"}


def test_empty_build(tmp_path, taxonomy):
    mixes, section = build(tmp_path, taxonomy, acc={}, seeds={})
    assert (mixes / "phase1_knowledge.jsonl").read_text() == "" and (mixes / "phase2_skills.jsonl").read_text() == ""
    assert rebuild_mix(mixes / "phase2_skills.recipe.yaml") == []
    assert section["phase1_knowledge"]["rows"] == 0 and section["phase2_skills"]["rows"] == 0


# ------------------------------------------------------------------ settings -------------------------
def test_settings():
    assert MixConfig.from_settings({}) == MixConfig()
    cfg = MixConfig.from_settings({"seed": 3, "mix": {"replay_share": 0.1, "per_node_cap": 50}})
    assert (cfg.seed, cfg.replay_share, cfg.seed_share, cfg.per_node_cap) == (3, 0.1, 0.3, 50)
    assert MixConfig.from_settings({"seed": 3, "mix": {"seed": 9}}).seed == 9
    assert cfg.to_dict()["per_node_cap"] == 50


@pytest.mark.parametrize("mix,fragment", [
    ({"replay": 0.2}, "unknown mix setting"),
    ({"replay_share": 1.2}, "under 1"),
    ({"replay_share": 0.6, "seed_share": 0.5}, "must stay under 1"),
    ({"seed_share": "lots"}, "must be a number"),
    ({"per_node_cap": 0}, "at least 1"),
    ({"per_node_floor": -1}, "must not be negative"),
    ({"per_node_cap": 3, "per_node_floor": 5}, "over mix.per_node_cap"),
    ({"per_node_floor": 2.5}, "must be an integer"),
])
def test_bad_settings(mix, fragment):
    with pytest.raises(ConfigError) as err:
        MixConfig.from_settings({"mix": mix})
    assert fragment in err.value.message
