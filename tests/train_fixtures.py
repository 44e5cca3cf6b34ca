"""Fixtures for the train/eval tests: a tiny random-init Llama with a BPE tokenizer trained here (no
download, ~15 ms a training step), and a build directory to docs/build-layout.md (its manifest by the real writer)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from build_fixtures import node_entry, write_manifest

SYSTEM = "You are a careful assistant. Think step by step, then answer."

# node id -> (kind, [(question, answer)] for training, [(question, answer)] held out)
NODES = {
    "knowledge/astronomy/moons": ("knowledge", [
        ("How many moons does Mars have?", "Mars has two moons, Phobos and Deimos."),
        ("What is the largest moon of Saturn?", "Titan is the largest moon of Saturn."),
        ("Which planet has the moon Io?", "Io is a moon of Jupiter."),
    ], [("What are the moons of Mars called?", "Phobos and Deimos.")]),
    "knowledge/cooking/bread": ("knowledge", [
        ("What makes bread rise?", "Yeast makes bread rise by producing gas."),
        ("Why knead dough?", "Kneading builds gluten so the dough holds gas."),
    ], [("What does yeast produce in dough?", "Yeast produces gas that makes bread rise.")]),
    "compositional_skills/writing/haiku": ("freeform_skill", [
        ("Write a haiku about rain.", "Soft rain on the roof\nwhispers to the sleeping town\nmorning smells of earth"),
        ("Write a haiku about snow.", "White snow on the field\nsilent footsteps of a fox\nthe moon holds its breath"),
    ], [("Write a haiku about wind.",
         "Wind runs through the grass\nbending every green blade low\nthen the field is still")]),
    "compositional_skills/math/sums": ("freeform_skill", [
        ("What is two plus three?", "Two plus three is five."),
        ("What is four plus four?", "Four plus four is eight."),
    ], [("What is one plus one?", "One plus one is two."), ("What is two plus two?", "Two plus two is four.")]),
}

# the seed context of each knowledge leaf's held-out items (what open-book and RAFT eval show)
CONTEXTS = {"knowledge/astronomy/moons": "Mars has two small moons, Phobos and Deimos.",
            "knowledge/cooking/bread": "Yeast eats sugar in the dough and gives off gas, so the bread rises."}


def assistant_text(answer: str) -> str:
    return f"Reasoning:\n1. Read the question.\n2. Recall the facts.\n\nAnswer: {answer}"


def messages(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
            {"role": "assistant", "content": assistant_text(answer)}]


def write_build(out: Path, repeat: int = 4) -> Path:
    """A build directory following docs/build-layout.md (the parts train and eval read)."""
    out.mkdir(parents=True, exist_ok=True)
    mixes = {"phase1_knowledge": [], "phase2_skills": []}
    nodes = {}
    for node_id, (kind, train, held_out) in NODES.items():
        nd = out / "nodes" / node_id
        nd.mkdir(parents=True, exist_ok=True)
        samples = []
        for i, (q, a) in enumerate(train):
            sid = hashlib.sha256(f"{node_id}|{i}".encode()).hexdigest()[:32]
            samples.append({"id": sid, "node_id": node_id, "messages": messages(q, a),
                            "record": {"question": q, "reasoning": ["Read the question.", "Recall the facts."],
                                       "answer": a, "context": None},
                            "metadata": {"node_id": node_id, "kind": kind, "leaf_path": node_id.split("/")}})
        _jsonl(nd / "train.jsonl", samples)
        _jsonl(nd / "rejected.jsonl", [])
        _jsonl(nd / "eval.jsonl", [{"node_id": node_id, "question": q, "answer": a,
                                    "context": CONTEXTS.get(node_id), "seed_index": 5 + i}
                                   for i, (q, a) in enumerate(held_out)])
        mix = "phase1_knowledge" if kind == "knowledge" else "phase2_skills"
        for _ in range(repeat):
            for s in samples:
                mixes[mix].append({"messages": s["messages"],
                                   "metadata": {"node_id": node_id, "source": "synthetic", "id": s["id"]}})
        nodes[node_id] = node_entry(node_id, kind, len(train), len(train), eval_seeds=len(held_out))
    # phase 2 replays some knowledge, as the mixer does
    mixes["phase2_skills"] += [dict(r, metadata=dict(r["metadata"], source="replay"))
                               for r in mixes["phase1_knowledge"][:4]]
    manifest_mixes = {}
    for name, rows in mixes.items():
        _jsonl(out / "mixes" / f"{name}.jsonl", rows)
        manifest_mixes[name] = {"path": f"mixes/{name}.jsonl", "recipe": f"mixes/{name}.recipe.yaml",
                                "rows": len(rows)}
    write_manifest(out, nodes, manifest_mixes)
    return out


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def tiny_model(out: Path, build: Path | None = None) -> Path:
    """A 2-layer random-init LlamaForCausalLM with a byte-level BPE tokenizer (no chat template: kdc's
    default template applies), saved as a Hugging Face folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [SYSTEM, "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>"]
    for _node, (_k, train, held) in NODES.items():
        for q, a in train + held:
            corpus += [q, assistant_text(a)]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus * 4, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model is too small to gain from threads; on a shared 2-core machine a second thread
    spinning against other work makes each step ~8x slower."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
