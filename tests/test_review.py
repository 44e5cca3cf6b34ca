"""kdc review: seeded review sheets, applying verdicts, and refusing bad sheets without losing data."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from compiler.errors import ReviewError
from compiler.io.builddir import load_build, load_verdicts
from compiler.review.apply import apply_sheet
from compiler.review.sheet import COLUMNS, draw_sheet, sample_size

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the build-directory helper, any import mode
from test_report import NODES, make_build  # noqa: E402

SOLAR = "knowledge/science/astronomy/solar_system"
HAIKU = "compositional_skills/writing/freeform/haiku"
MEETING = "compositional_skills/extraction/grounded/meeting_action_items"
WORDS = "compositional_skills/reasoning/freeform/word_problems"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def build(tmp_path: Path) -> Path:
    return make_build(tmp_path / "build")


def snapshot(root: Path) -> dict[str, str]:
    """Every file's hash, kdc's private .kdc/ (the lock, the apply journal) aside."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".kdc" not in p.relative_to(root).parts}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def csv_text(rows: list[dict]) -> str:
    """A review sheet's text, written the way kdc writes sheets (CRLF rows)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\r\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_bytes(csv_text(rows).encode("utf-8"))


def train_ids(build: Path, node_id: str) -> list[str]:
    return [json.loads(x)["id"] for x in (build / "nodes" / node_id / "train.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------------- draw


@pytest.mark.parametrize("n", [10, 11, 15, 19, 20, 29, 40, 99, 100, 101, 250, 1000, 4321])
def test_sample_size_is_five_to_ten_percent(n: int) -> None:
    k = sample_size(n, 0.1)
    assert 0.05 <= k / n <= 0.10


def test_sample_size_at_least_one_per_node() -> None:
    assert [sample_size(n, 0.1) for n in range(0, 10)] == [0] + [1] * 9


def test_draw_is_seeded_and_covers_every_node(build: Path, tmp_path: Path) -> None:
    a = draw_sheet(build, seed=3)
    assert a == build / "reviews" / "sheet-seed3.csv"
    b = draw_sheet(build, seed=3, out=tmp_path / "again.csv")
    c = draw_sheet(build, seed=4, out=tmp_path / "other.csv")
    assert a.read_bytes() == b.read_bytes()
    rows = read_csv(a)
    by_node: dict[str, list[dict]] = {}
    for r in rows:
        by_node.setdefault(r["node_id"], []).append(r)
    assert {n: len(v) for n, v in by_node.items()} == {SOLAR: 4, HAIKU: 1, MEETING: 1}  # 10 %, >= 1, none of 0
    assert {r["id"] for r in rows} != {r["id"] for r in read_csv(c)}
    for r in rows:  # every row comes from its node's train set and shows its provenance
        assert r["id"] in train_ids(build, r["node_id"])
        sample = next(json.loads(x) for x in (build / "nodes" / r["node_id"] / "train.jsonl").read_text().splitlines()
                      if json.loads(x)["id"] == r["id"])
        assert r["question"] == sample["record"]["question"]
        assert r["reasoning"].split("\n") == sample["record"]["reasoning"]
        assert r["answer"] == sample["record"]["answer"]
        assert r["context"] == (sample["record"]["context"] or "")
        assert r["seeds_shown"] == ",".join(map(str, sample["metadata"]["seeds_shown"]))
        assert r["verdict"] == r["why"] == r["edited_answer"] == ""
        assert len(r["sha256"]) == 64
    solar = by_node[SOLAR][0]
    assert solar["source"].startswith("../build/doc-repos/solar@aaaaaaaaaaaa:solar.md[")
    assert solar["context"].startswith("Chunk ")


def test_draw_refuses_to_overwrite_and_bad_share(build: Path) -> None:
    draw_sheet(build, seed=1)
    with pytest.raises(ReviewError, match="already exists"):
        draw_sheet(build, seed=1)
    with pytest.raises(Exception, match="share"):
        draw_sheet(build, share=0)


def test_draw_shows_seed_examples_from_the_taxonomy(tmp_path: Path) -> None:
    tax = tmp_path / "tax"
    leaf = tax / HAIKU
    leaf.mkdir(parents=True)
    seeds = "".join(f"  - question: Seed question {i}?\n    answer: Seed answer {i}.\n" for i in range(6))
    (leaf / "qna.yaml").write_text(f"version: 2\ntask_description: haiku\ncreated_by: me\nseed_examples:\n{seeds}")
    build = make_build(tmp_path / "build", taxonomy=tax)
    rows = [r for r in read_csv(draw_sheet(build, seed=0, fmt="csv")) if r["node_id"] == HAIKU]
    held = {json.loads(x)["seed_index"] for x in (build / "nodes" / HAIKU / "eval.jsonl").read_text().splitlines()}
    training = [i for i in range(6) if i not in held]
    for r in rows:
        shown = [int(i) for i in r["seeds_shown"].split(",")]
        for i in shown:  # indexes into the training seeds (held-out eval seeds removed)
            assert f"[{i}] Q: Seed question {training[i]}?\n    A: Seed answer {training[i]}." in r["seed_examples"]
    # samples name the qna.yaml they were built from: a changed file shows no (possibly wrong) seeds
    train = build / "nodes" / HAIKU / "train.jsonl"
    samples = [json.loads(x) for x in train.read_text().splitlines()]
    for s in samples:
        s["metadata"]["leaf_sha256"] = hashlib.sha256((leaf / "qna.yaml").read_bytes()).hexdigest()
    train.write_text("".join(json.dumps(s) + "\n" for s in samples))
    rows = [r for r in read_csv(draw_sheet(build, seed=0, out=tmp_path / "a.csv")) if r["node_id"] == HAIKU]
    assert rows and all(r["seed_examples"].startswith("[") for r in rows)
    (leaf / "qna.yaml").write_text((leaf / "qna.yaml").read_text().replace("Seed answer 1.", "Changed."))
    rows = [r for r in read_csv(draw_sheet(build, seed=0, out=tmp_path / "b.csv")) if r["node_id"] == HAIKU]
    assert rows and all(r["seed_examples"] == "" and r["seeds_shown"] for r in rows)


# ---------------------------------------------------------------------------------------- apply


def fill(rows: list[dict[str, str]]) -> dict[str, str]:
    """Verdicts for a drawn sheet: solar 2 rejected, 1 edited, 1 accepted; haiku rejected; meeting blank."""
    solar = [r for r in rows if r["node_id"] == SOLAR]
    haiku = next(r for r in rows if r["node_id"] == HAIKU)
    solar[0].update(verdict="reject", why="wrong: Venus is hotter")
    solar[1].update(verdict="Reject ", why="not in the chunk")
    solar[2].update(verdict="edit", why="tighter answer", edited_answer="About 4.6 billion years.",
                    edited_reasoning="The chunk says 4.6 billion years.\nSo that is the age.")
    solar[3].update(verdict="accept")
    haiku.update(verdict="reject", why="not a haiku", reviewer="Dr. Poet")
    return {"rej": [solar[0]["id"], solar[1]["id"], haiku["id"]], "edit": solar[2]["id"], "acc": solar[3]["id"]}


def test_apply_drops_rejected_applies_edits_and_records_verdicts(build: Path) -> None:
    sheet = draw_sheet(build, seed=5)
    rows = read_csv(sheet)
    ids = fill(rows)
    write_csv(sheet, rows)
    before = {n: (build / "nodes" / n / "train.jsonl").read_text().splitlines() for n in NODES}
    old_edit = next(json.loads(x) for x in before[SOLAR] if json.loads(x)["id"] == ids["edit"])
    mix_before = [json.loads(x) for x in (build / "mixes" / "phase1_knowledge.jsonl").read_text().splitlines()]

    res = apply_sheet(build, sheet, reviewer="alice", now=NOW)
    assert (res.accepted, res.edited, res.rejected, res.unreviewed) == (1, 1, 3, 1)

    # exactly the rejected are gone; every other line is unchanged except the reviewed ones
    for node_id, lines in before.items():
        after = (build / "nodes" / node_id / "train.jsonl").read_text().splitlines()
        kept = [x for x in lines if json.loads(x)["id"] not in ids["rej"]]
        assert [json.loads(x)["id"] for x in after] == [json.loads(x)["id"] for x in kept]
        for a, b in zip(after, kept):
            if json.loads(a)["id"] not in (ids["edit"], ids["acc"]):
                assert a == b
    # rejected samples move to rejected.jsonl with the reviewer's reason and the whole sample
    moved = [json.loads(x) for x in (build / "nodes" / SOLAR / "rejected.jsonl").read_text().splitlines()][-2:]
    assert [m["id"] for m in moved] == ids["rej"][:2]
    assert [m["reason"] for m in moved] == ["review-rejected"] * 2
    assert moved[0]["detail"] == "rejected in review by alice: wrong: Venus is hotter"
    assert json.loads(moved[0]["raw"]) == json.loads(next(x for x in before[SOLAR] if ids["rej"][0] in x))["record"]
    assert moved[0]["metadata"]["review"] == {"verdict": "reject", "by": "alice", "at": "2026-03-01T12:00:00+00:00",
                                              "why": "wrong: Venus is hotter"}
    # the edit: record and chat messages updated, verdict in metadata.review
    new_edit = next(json.loads(x) for x in (build / "nodes" / SOLAR / "train.jsonl").read_text().splitlines()
                    if json.loads(x)["id"] == ids["edit"])
    assert new_edit["record"]["answer"] == "About 4.6 billion years."
    assert new_edit["record"]["reasoning"] == ["The chunk says 4.6 billion years.", "So that is the age."]
    assert new_edit["record"]["question"] == old_edit["record"]["question"]
    assistant = new_edit["messages"][2]["content"]
    assert "About 4.6 billion years." in assistant and old_edit["record"]["answer"] not in assistant
    assert "The chunk says 4.6 billion years." in assistant
    assert new_edit["messages"][1] == old_edit["messages"][1]
    assert new_edit["metadata"]["review"] == {"verdict": "edit", "by": "alice", "at": "2026-03-01T12:00:00+00:00",
                                              "why": "tighter answer"}
    # the verdict log (build-layout contract), reviewer column wins over --reviewer
    log = [json.loads(x) for x in (build / "reviews" / "verdicts.jsonl").read_text().splitlines()]
    assert len(log) == 5
    haiku = next(v for v in log if v["node_id"] == HAIKU)
    assert haiku == {"id": ids["rej"][2], "node_id": HAIKU, "verdict": "reject", "by": "Dr. Poet",
                     "at": "2026-03-01T12:00:00+00:00", "why": "not a haiku", "edited": None}
    edit = next(v for v in log if v["verdict"] == "edit")
    assert edit["edited"] == {"question": old_edit["record"]["question"],
                              "reasoning": ["The chunk says 4.6 billion years.", "So that is the age."],
                              "answer": "About 4.6 billion years."}
    # mixes (and their sources, replays included) no longer carry rejected samples; edits are carried in
    mix = [json.loads(x) for x in (build / "mixes" / "phase1_knowledge.jsonl").read_text().splitlines()]
    assert len(mix) == len(mix_before) - 2
    assert next(m for m in mix if m["metadata"]["id"] == ids["edit"])["messages"] == new_edit["messages"]
    for f in (build / "mixes").rglob("*.jsonl"):
        rows = [json.loads(x) for x in f.read_text().splitlines()]
        assert not {m["metadata"]["id"] for m in rows} & set(ids["rej"]), f
        assert all(m["messages"] == new_edit["messages"] for m in rows if m["metadata"]["id"] == ids["edit"])
    phase2 = [json.loads(x) for x in (build / "mixes" / "phase2_skills.jsonl").read_text().splitlines()]
    # manifest: counts, reasons, review stats and the flag (haiku: 1 of 1 rejected; solar: 2 of 4 is not most)
    man = json.loads((build / "manifest.json").read_text())
    assert man["nodes"][SOLAR]["accepted"] == 38 and man["nodes"][SOLAR]["shortfall"] == 2
    assert man["nodes"][SOLAR]["rejected"]["review-rejected"] == 2
    assert man["nodes"][SOLAR]["review"] == {"reviewed": 4, "rejected": 2, "flagged": False}
    assert man["nodes"][HAIKU]["review"] == {"reviewed": 1, "rejected": 1, "flagged": True}
    assert man["nodes"][MEETING]["review"] == {"reviewed": 0, "rejected": 0, "flagged": False}
    assert man["mixes"]["phase1_knowledge"]["rows"] == len(mix)
    assert man["mixes"]["phase1_knowledge"]["by_source"] == {"synthetic": len(mix)}
    assert man["mixes"]["phase2_skills"]["rows"] == len(phase2)
    assert man["mixes"]["phase2_skills"]["by_source"]["seed"] == 1
    assert man["totals"]["accepted"] == sum(v[1] for v in NODES.values()) - 3 == 55
    assert res.flagged == [HAIKU]
    # report and card regenerated with the flag
    html = (build / "report.html").read_text()
    assert 'class="flag"' in html and "Review flagged 1 node(s)" in html and HAIKU in html.split('class="flag"')[1]
    card = (build / "README.md").read_text()
    haiku_row = next(x for x in card.splitlines() if x.startswith("| <code>compositional\\_skills/writing/freeform"))
    assert "| **yes** |" in haiku_row
    assert list((build / "reviews" / "applied").iterdir())  # the applied sheet is archived

    # a new draw skips what was reviewed; the same sheet applied again changes nothing
    again = read_csv(draw_sheet(build, seed=5, out=build / "reviews" / "round2.csv"))
    assert not {r["id"] for r in again} & {v["id"] for v in log}
    before = snapshot(build)
    res2 = apply_sheet(build, sheet, reviewer="alice")
    assert (res2.already, res2.accepted, res2.rejected, res2.edited) == (5, 0, 0, 0)
    assert snapshot(build) == before
    # a different verdict for a sample already rejected is still refused
    again = read_csv(sheet)
    next(r for r in again if r["id"] == ids["rej"][0]).update(verdict="accept", why="")
    write_csv(sheet, again)
    with pytest.raises(ReviewError, match="already rejected by an earlier review"):
        apply_sheet(build, sheet, reviewer="alice")


def test_apply_jsonl_sheet_and_blank_sheet(build: Path) -> None:
    sheet = draw_sheet(build, seed=2, fmt="jsonl")
    rows = [json.loads(x) for x in sheet.read_text().splitlines()]
    snap = snapshot(build)
    res = apply_sheet(build, sheet)
    assert (res.accepted, res.rejected, res.edited, res.unreviewed) == (0, 0, 0, 6)
    assert snapshot(build) == snap  # a blank sheet changes nothing
    target = next(r for r in rows if r["node_id"] == MEETING)
    target.update(verdict="edit", edited_question="Which action items did Dana take?",
                  edited_reasoning=["Dana said she would send the notes."])
    sheet.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = apply_sheet(build, sheet, reviewer="bob")
    assert res.edited == 1
    s = next(json.loads(x) for x in (build / "nodes" / MEETING / "train.jsonl").read_text().splitlines()
             if json.loads(x)["id"] == target["id"])
    assert s["record"]["question"] == "Which action items did Dana take?"
    assert s["messages"][1]["content"].endswith("Which action items did Dana take?")
    assert s["messages"][1]["content"].startswith(s["record"]["context"])
    assert s["record"]["reasoning"] == ["Dana said she would send the notes."]
    assert s["metadata"]["review"]["by"] == "bob"


def test_apply_keeps_the_manifest_in_step_and_the_card_loads_the_result(tmp_path: Path) -> None:
    """No Hugging Face copy to keep in step: the card's configs load the rewritten JSONL itself."""
    import datasets
    from collections import Counter
    build = make_build(tmp_path / "build")
    sheet = draw_sheet(build, seed=5)
    rows = read_csv(sheet)
    ids = fill(rows)
    write_csv(sheet, rows)
    apply_sheet(build, sheet, reviewer="alice")
    view = load_build(build)
    for node_id, entry in view.nodes.items():
        train, rejected = view.train[node_id], view.rejected[node_id]
        assert entry.accepted == len(train) and entry.rejected == dict(sorted(Counter(
            r["reason"] for r in rejected).items()))
        assert entry.lengths["answer_words"] == [len(s["record"]["answer"].split()) for s in train]
    assert view.nodes[SOLAR].rejected["review-rejected"] == 2 and view.nodes[SOLAR].shortfall == 2
    assert view.manifest.totals["accepted"] == sum(len(t) for t in view.train.values())
    assert not (build / "hf").exists()
    ds = datasets.load_dataset(str(build), "knowledge_science_astronomy_solar_system",
                               cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert ds.num_rows == 38 and not set(ds["id"]) & set(ids["rej"])
    row = next(r for r in ds if r["id"] == ids["edit"])
    assert row["record"]["answer"] == "About 4.6 billion years." and row["metadata"]["review"]["verdict"] == "edit"


# ----------------------------------------------------------------------------------- bad sheets


def _line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def _bad(build: Path, sheet: Path, text: str) -> ReviewError:
    sheet.write_text(text, encoding="utf-8")
    snap = snapshot(build)
    with pytest.raises(ReviewError) as err:
        apply_sheet(build, sheet, reviewer="alice")
    assert snapshot(build) == snap, "a refused sheet must change nothing"
    assert err.value.path == str(sheet)
    return err.value


@pytest.fixture
def filled(build: Path, tmp_path: Path) -> tuple[Path, Path, str]:
    sheet = draw_sheet(build, seed=5, out=tmp_path / "sheet.csv")
    rows = read_csv(sheet)
    fill(rows)
    write_csv(sheet, rows)
    return build, sheet, sheet.read_text(encoding="utf-8")


def test_unknown_id_is_refused_with_line_and_column(filled) -> None:
    build, sheet, text = filled
    rows = read_csv(sheet)
    victim = rows[2]["id"]
    err = _bad(build, sheet, text.replace(victim, "f" * 24))
    assert (err.line, err.column) == (_line_of(text, victim), 1)
    assert "unknown sample id" in err.message


def test_tampered_integrity_field_is_refused(filled) -> None:
    build, sheet, text = filled
    sha = read_csv(sheet)[1]["sha256"]
    err = _bad(build, sheet, text.replace(sha, "0" * 64))
    assert err.column == COLUMNS.index("sha256") + 1 and "integrity field" in err.message
    assert err.line == _line_of(text, read_csv(sheet)[1]["id"])


def test_edited_provenance_is_refused(filled) -> None:
    build, sheet, text = filled
    rows = read_csv(sheet)
    rows[3]["question"] += " (improved)"
    rows[0]["source"] = "somewhere else"
    sheet.write_text("")
    err = _bad(build, sheet, csv_text(rows))
    assert err.column == COLUMNS.index("source") + 1 and "provenance was edited" in err.message
    assert f"column {COLUMNS.index('question') + 1} (question): provenance was edited" in err.message  # listed too


def test_broken_csv_quoting_is_refused(filled) -> None:
    build, sheet, text = filled
    rows = read_csv(sheet)
    why = rows[1]["why"]  # "not in the chunk" -> "not in the "chunk"" breaks the quoted field
    assert f",{why}," in text
    broken = text.replace(f",{why},", ',"not in the "chunk"",', 1)
    err = _bad(build, sheet, broken)
    assert err.line == _line_of(broken, '"not in the "chunk"')
    assert err.column == COLUMNS.index("why") + 1 and "broken CSV quoting" in err.message
    # an unclosed quote: located where the field opens
    unclosed = text.replace(f",{why},", ',"never closed,', 1)
    err = _bad(build, sheet, unclosed)
    assert err.line == _line_of(unclosed, '"never closed') and err.column == COLUMNS.index("why") + 1
    assert "a closing quote is missing" in err.message
    # a quote that runs to the end of the file
    dangling = text + 'f00,"dangling\r\n'
    err = _bad(build, sheet, dangling)
    assert (err.line, err.column) == (_line_of(dangling, "f00,"), 2) and "never closed" in err.message


def test_bad_verdict_and_inconsistent_edits_are_refused(filled) -> None:
    build, sheet, text = filled
    rows = read_csv(sheet)
    rows[0]["verdict"] = "maybe"
    next(r for r in rows if r["verdict"] == "accept")["edited_answer"] = "something"  # accept with an edit
    err = _bad(build, sheet, csv_text(rows))
    assert err.column == COLUMNS.index("verdict") + 1 and "'maybe' is not accept, reject or edit" in err.message
    assert "edited_answer is filled but the verdict is accept" in err.message


def test_wrong_header_row_length_and_duplicates_are_refused(filled) -> None:
    build, sheet, text = filled
    err = _bad(build, sheet, text.replace("edited_answer", "notes", 1))
    assert err.line == 1 and "edited_answer" in err.message
    head, rest = text.split("\n", 1)
    err = _bad(build, sheet, head + ",extra\n" + rest)
    assert err.line == 1 and "unknown column 'extra'" in err.message
    rows = list(csv.DictReader(io.StringIO(text)))
    err = _bad(build, sheet, csv_text(rows + [rows[0]]))
    assert "is already on line 2" in err.message


def test_bad_jsonl_sheet_is_refused(build: Path, tmp_path: Path) -> None:
    sheet = draw_sheet(build, seed=5, fmt="jsonl", out=tmp_path / "s.jsonl")
    lines = sheet.read_text().splitlines()
    err = _bad(build, sheet, "\n".join(lines[:2] + ['{"id": "x",'] + lines[2:]) + "\n")
    assert (err.line, err.column) == (3, 12) and "not valid JSON" in err.message
    row = json.loads(lines[1])
    row["id"] = "nope"
    err = _bad(build, sheet, "\n".join([lines[0], json.dumps(row)] + lines[2:]) + "\n")
    assert err.line == 2 and err.column is None and "unknown sample id 'nope'" in err.message


def test_review_cli_round_trip(build: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))

    def kdc(*args):
        return subprocess.run([sys.executable, "-m", "compiler", *args], capture_output=True, text=True, env=env,
                              timeout=120)

    r = kdc("review", str(build), "--seed", "9", "--reviewer", "carol")
    assert r.returncode == 0, r.stderr
    sheet = build / "reviews" / "sheet-seed9.csv"
    assert str(sheet) in r.stdout
    rows = read_csv(sheet)
    assert {x["reviewer"] for x in rows} == {"carol"}
    haiku = next(x for x in rows if x["node_id"] == HAIKU)
    haiku.update(verdict="reject", why="off topic")
    write_csv(sheet, rows)
    r = kdc("review", str(build), "--apply", str(sheet))
    assert r.returncode == 0, r.stderr
    assert "0 accepted, 0 edited, 1 rejected" in r.stdout and f"flagged: {HAIKU}" in r.stdout
    assert load_verdicts(build)[haiku["id"]]["by"] == "carol"
    assert haiku["id"] not in train_ids(build, HAIKU)
    r = kdc("review", str(build), "--apply", str(sheet))  # the same sheet again: a no-op
    assert r.returncode == 0 and "1 verdicts already applied" in r.stdout and "nothing changed" in r.stdout
    haiku.update(verdict="accept", why="")  # a conflicting verdict is refused, located
    write_csv(sheet, rows)
    r = kdc("review", str(build), "--apply", str(sheet))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{sheet}:{_line_of(sheet.read_text(), haiku['id'])}:1:" in r.stderr and "hint:" in r.stderr


def test_csv_cells_never_start_a_formula(build: Path) -> None:
    p = build / "nodes" / HAIKU / "train.jsonl"
    samples = [json.loads(x) for x in p.read_text().splitlines()]
    for s in samples:
        s["record"]["answer"] = '=HYPERLINK("x","click")'
        s["record"]["reasoning"] = ["- first", "+ second"]
    p.write_text("".join(json.dumps(s) + "\n" for s in samples))
    sheet = draw_sheet(build, seed=5)
    raw = [r for r in csv.DictReader(io.StringIO(sheet.read_text())) if r["node_id"] == HAIKU]
    assert raw[0]["answer"] == "'=HYPERLINK(\"x\",\"click\")" and raw[0]["reasoning"].startswith("'- first")
    # a spreadsheet that saves the cell without its quote, and one that keeps it, both apply
    rows = read_csv(sheet)
    row = next(r for r in rows if r["node_id"] == HAIKU)
    row.update(verdict="edit", edited_answer="'=1+1")
    row["answer"] = row["answer"][1:]
    write_csv(sheet, rows)
    apply_sheet(build, sheet, reviewer="x")
    edited = next(json.loads(x) for x in p.read_text().splitlines() if json.loads(x)["id"] == row["id"])
    assert edited["record"]["answer"] == "=1+1"


def test_edit_messages_follows_compiles_chat_layout() -> None:
    from compiler.compile import generate
    from compiler.compile.plan import LeafPlan
    from compiler.records import Leaf, Record
    from compiler.review.apply import edit_messages

    leaf = Leaf(node_id=SOLAR, file=f"{SOLAR}/qna.yaml", kind="knowledge", version=3,
                content={"domain": "Astronomy"}, content_hash="0")
    lp = LeafPlan(leaf=leaf, target=1, budget=1, train_seeds=[], eval_seeds=[], eval_indexes=[])
    old = {"question": "How old is it?", "reasoning": ["1. The chunk says 4.6 Gyr.", "So: old."],
           "answer": "4.6 billion years", "context": "The Solar System formed 4.6 billion years ago."}
    for new in ({"question": "How old is the Solar System?"}, {"reasoning": ["It says 4.6.", "That is it.", "Done."]},
                {"answer": "About 4.6 billion years."}):
        after = {**old, **new}
        expected = generate.chat_messages(lp, Record(after["question"], tuple(after["reasoning"]), after["answer"],
                                                     after["context"]))
        msgs = generate.chat_messages(lp, Record(old["question"], tuple(old["reasoning"]), old["answer"],
                                                 old["context"]))
        assert edit_messages(msgs, old, after) == expected
    # another layout: texts are replaced where they stand
    custom = [{"role": "user", "content": "Q> How old is it?"},
              {"role": "assistant", "content": "<think>1. The chunk says 4.6 Gyr. So: old.</think> 4.6 billion years"}]
    out = edit_messages(custom, old, {**old, "answer": "About 4.6 billion years."})
    assert out[1]["content"] == "<think>1. The chunk says 4.6 Gyr. So: old.</think> About 4.6 billion years."
    assert out[0] == custom[0]


# ------------------------------------------------------------------------------ crash-safe apply


class _Crash(BaseException):
    """Stands for kill -9: not an Exception, so apply's own rollback does not run."""


def test_apply_interrupted_at_any_write_then_reapplied_gives_the_same_bytes(tmp_path: Path, monkeypatch) -> None:
    import compiler.io.builddir as review  # every write of an apply goes through the build-dir writer

    ref = make_build(tmp_path / "b")  # every run in the same folder: the report names it
    sheet = draw_sheet(ref, seed=5)
    rows = read_csv(sheet)
    fill(rows)
    filled = csv_text(rows).encode("utf-8")
    sheet.write_bytes(filled)
    pristine = snapshot(ref)
    real = review.atomic_write
    calls = []
    monkeypatch.setattr(review, "atomic_write", lambda p, d: (calls.append(p), real(p, d)))
    apply_sheet(ref, sheet, reviewer="alice", now=NOW)
    want = snapshot(ref)
    assert want != pristine and len(calls) >= 6
    for k in range(len(calls)):
        shutil.rmtree(ref)
        build = make_build(tmp_path / "b")
        (build / "reviews").mkdir(exist_ok=True)
        (build / "reviews" / sheet.name).write_bytes(filled)
        assert snapshot(build) == pristine
        n = iter(range(10 ** 6))

        def crash_at_k(path, data):
            if next(n) == k:
                raise _Crash()
            real(path, data)

        monkeypatch.setattr(review, "atomic_write", crash_at_k)
        with pytest.raises(_Crash):
            apply_sheet(build, build / "reviews" / sheet.name, reviewer="alice", now=NOW)
        monkeypatch.setattr(review, "atomic_write", real)
        assert (build / ".kdc" / "apply-journal").is_dir()
        res = apply_sheet(build, build / "reviews" / sheet.name, reviewer="alice", now=NOW)
        assert res.rejected == 3 and snapshot(build) == want, k
        assert not (build / ".kdc" / "apply-journal").exists()


def test_apply_that_fails_rolls_back_at_once(build: Path, monkeypatch) -> None:
    import compiler.io.builddir as review  # every write of an apply goes through the build-dir writer

    sheet = draw_sheet(build, seed=5)
    rows = read_csv(sheet)
    fill(rows)
    write_csv(sheet, rows)
    before = snapshot(build)
    real = review.atomic_write
    n = iter(range(10 ** 6))

    def full(path, data):
        if next(n) == 3:
            raise OSError(28, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(review, "atomic_write", full)
    with pytest.raises(OSError):
        apply_sheet(build, sheet, reviewer="alice", now=NOW)
    assert snapshot(build) == before and not (build / ".kdc" / "apply-journal").exists()
