"""Content rows of the knowledge mix train on the document itself: with `kdc train`'s masking the
whole section text (the assistant turn) carries the loss, and the question naming it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.mix.knowledge import closed_book_rows, content_rows
from compiler.records import Chunk, Record, Sample
from compiler.train.trainer import PhaseConfig, TrainConfig, make_trainer
from train_fixtures import one_thread, tiny_model  # noqa: F401 (fixtures)

SECTION = ("Packfiles\n\nGit gathers loose objects into packfiles, where similar objects are stored as deltas. "
           "The setting pack.depth limits a delta chain to 50 objects by default.")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny"))


def test_content_rows_put_the_loss_on_the_section_text(tiny, tmp_path):
    node = "knowledge/tech/git"
    chunk = Chunk("r", "c", "storage.md", 0, len(SECTION), SECTION, "h", "Git Storage", "Packfiles")
    rec = Record("How long may a Git delta chain be by default?", ("pack.depth limits chains to 50.",),
                 "50 objects.", SECTION)
    sample = Sample("s1", node, rec, [{"role": "system", "content": "You know git."},
                                      {"role": "user", "content": f"{SECTION}\n\n{rec.question}"},
                                      {"role": "assistant", "content": "1. pack.depth limits chains to 50.\n\nAnswer: 50 objects."}])
    facts = ["Git stores similar objects as deltas in packfiles.", "pack.depth limits a delta chain to 50 objects."]
    src = {"repo": "r", "commit": "c", "file": "storage.md", "start": 0, "end": len(SECTION), "sha256": "h",
           "heading": "Packfiles"}
    views = [{"kind": "atomic_facts", "status": "accepted", "sha256": "v1", "source": src, "items": facts,
              "request_key": "k1"},
             {"kind": "detailed_summary", "status": "rejected", "reason": "unsupported", "source": src,
              "raw": "Git never packs anything.", "request_key": "k2"}]
    rows = content_rows(node, [chunk], [sample], views) + closed_book_rows(node, [sample])
    assert [r["metadata"]["row_kind"] for r in rows] == ["content", "content", "closed_book"]  # the rejected view: none
    assert rows[1]["metadata"]["view"]["kind"] == "atomic_facts" and "Git Storage" in rows[1]["messages"][1]["content"]
    assert rows[0]["messages"][1]["content"] == "What does Git Storage say about Packfiles?"
    assert SECTION not in rows[1]["messages"][1]["content"]  # closed book: the question alone
    cfg = TrainConfig(model=str(tiny), max_steps=1, max_length=256, save_steps=100,
                      phase_settings={1: PhaseConfig(epochs=1, learning_rate=1e-3, batch_size=4, grad_accum=1),
                                      2: PhaseConfig(epochs=1, learning_rate=1e-3, batch_size=2, grad_accum=1)})
    phase = make_trainer(1, rows, tiny, tiny, tmp_path, cfg)
    tok = phase.tokenizer
    batch = next(iter(phase.trainer.get_train_dataloader()))
    labeled = {tok.decode([t for t, lab in zip(ids, labs) if lab != -100]).strip()
               for ids, labs in zip(batch["input_ids"].tolist(), batch["labels"].tolist())}
    eos = tok.eos_token
    pieces = {p.strip() for t in labeled for p in t.split(eos) if p.strip()}  # packed or not
    assert pieces == {SECTION, "\n".join(facts), "1. pack.depth limits chains to 50.\n\nAnswer: 50 objects."}
    assert not any("Git Storage" in t or "How long may" in t for t in labeled)
