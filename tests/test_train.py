"""`kdc train` on a tiny random-init Llama (fast): loss falls, loss only on assistant tokens, phase 2
starts from phase 1, resume, the saved artifact reloads, errors are located."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.errors import BuildError, TrainError
from compiler.train.student import DEFAULT_CHAT_TEMPLATE, ensure_chat_template, fingerprint, load_model
from compiler.train.trainer import MIXES, PhaseConfig, TrainConfig, make_trainer, train
from train_fixtures import assistant_text, one_thread, tiny_model, write_build  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent
FAST = {1: PhaseConfig(epochs=1, learning_rate=3e-3, batch_size=2, grad_accum=1),
        2: PhaseConfig(epochs=1, learning_rate=3e-3, batch_size=2, grad_accum=1)}


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    return write_build(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny"))


def config(tiny: Path, **kw) -> TrainConfig:
    base = dict(model=str(tiny), max_steps=10, max_length=256, phase_settings=FAST, save_steps=100)
    return TrainConfig(**{**base, **kw})


def falls(losses: list[tuple[int, float]]) -> bool:
    vals = [v for _s, v in losses]
    return len(vals) >= 6 and sum(vals[-3:]) / 3 < sum(vals[:3]) / 3 - 0.05


def test_lora_two_phases_merged(build, tiny, tmp_path):
    out = tmp_path / "run"
    result = train(build, out, config(tiny))
    p1, p2 = result.phases
    assert [p1.phase, p2.phase] == [1, 2] and [p1.mix, p2.mix] == [MIXES[1], MIXES[2]]
    assert p1.rows == 20 and p2.rows == 20
    assert falls(p1.losses) and falls(p2.losses), (p1.losses, p2.losses)
    assert p1.global_step == p2.global_step == 10 and p1.tokens > 0 and p1.tokens_per_second > 0

    # phase 2 starts from phase 1's merged result, not from the student
    assert p2.start_model == p1.model_dir == str(out / "phase1" / "model")
    assert p2.start_fingerprint == p1.end_fingerprint
    assert p1.start_fingerprint == fingerprint(load_model(tiny)) != p1.end_fingerprint
    adapter_cfg = json.loads((out / "phase2" / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str((out / "phase1" / "model").resolve())

    # the artifact is a standard folder: transformers reloads it to the exact trained weights, and it generates
    from transformers import AutoModelForCausalLM, AutoTokenizer
    assert result.model_dir == str(out / "phase2" / "model")
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert fingerprint(model) == p2.end_fingerprint
    tok = AutoTokenizer.from_pretrained(result.model_dir)
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE  # saved with the template it was trained with
    enc = tok.apply_chat_template([{"role": "user", "content": "What makes bread rise?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] > enc["input_ids"].shape[1]

    # the model card names the data it was trained on
    manifest = (build / "manifest.json").read_bytes()
    import hashlib
    card = (out / "phase2" / "model" / "README.md").read_text()
    assert hashlib.sha256(manifest).hexdigest() in card and "ab" * 32 in card
    assert card.startswith("---\nlibrary_name: transformers")
    saved = json.loads((out / "train_result.json").read_text())
    assert saved["final"] == "phase2/model" and saved["manifest"]["sha256"] == hashlib.sha256(manifest).hexdigest()
    meta = json.loads((out / "phase2" / "model" / "kdc_train.json").read_text())
    assert meta["student"] == str(tiny) and meta["chat_template"] == "kdc-default"


@pytest.mark.parametrize("packing", [False, True])
def test_only_assistant_tokens_carry_loss(build, tiny, tmp_path, packing):
    rows = [json.loads(line) for line in (build / "mixes" / "phase1_knowledge.jsonl").read_text().splitlines()]
    phase = make_trainer(1, rows[:4], tiny, tiny, tmp_path, config(tiny, packing=packing))
    tok = phase.tokenizer
    batch = next(iter(phase.trainer.get_train_dataloader()))
    expected = {assistant_text_of(r) + tok.eos_token for r in rows[:4]}
    labels, ids = batch["labels"], batch["input_ids"]
    spans = []
    for lab, inp in zip(labels.tolist(), ids.tolist()):
        run: list[int] = []
        for lab_id, tok_id in zip(lab, inp):
            if lab_id != -100:
                assert lab_id == tok_id
                run.append(tok_id)
            elif run:
                spans.append(run)
                run = []
        if run:
            spans.append(run)
    decoded = [tok.decode(s) for s in spans]
    assert decoded and all(d in expected for d in decoded), decoded
    # nothing of the system or user turns is trained
    all_labeled = "".join(decoded)
    assert "careful assistant" not in all_labeled and "<|im_start|>" not in all_labeled
    for r in rows[:4]:
        assert r["messages"][1]["content"] not in all_labeled


def test_template_without_generation_markers_trains_on_the_answer_only(build, tiny, tmp_path):
    import shutil
    model = tmp_path / "plain-template"
    shutil.copytree(tiny, model)
    plain = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% if m['role'] == 'assistant' %}"
             "{{ eos_token }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    (model / "chat_template.jinja").write_text(plain)
    rows = [json.loads(line) for line in (build / "mixes" / "phase1_knowledge.jsonl").read_text().splitlines()]
    phase = make_trainer(1, rows[:4], model, model, tmp_path / "o", config(model, packing=False))
    assert phase.template == "model/completion-only"
    batch = next(iter(phase.trainer.get_train_dataloader()))
    expected = {assistant_text_of(r) + phase.tokenizer.eos_token for r in rows[:4]}
    for lab, inp in zip(batch["labels"].tolist(), batch["input_ids"].tolist()):
        labeled = [t for t, l in zip(inp, lab) if l != -100]
        assert phase.tokenizer.decode(labeled).strip() in {e.strip() for e in expected}
    result = train(build, tmp_path / "run", config(model, phases=(1,), max_steps=8, method="full"))
    assert falls(result.phases[0].losses)


def assistant_text_of(row: dict) -> str:
    return row["messages"][-1]["content"].strip()


def test_full_finetune_phase_by_phase(build, tiny, tmp_path):
    out = tmp_path / "run"
    first = train(build, out, config(tiny, method="full", phases=(1,)))
    (p1,) = first.phases
    assert falls(p1.losses) and p1.adapter_dir is None
    assert first.model_dir == str(out / "phase1" / "model")
    # a later `--phases 2` into the same folder starts from phase 1's result
    second = train(build, out, config(tiny, method="full", phases=(2,)))
    (p2,) = second.phases
    assert p2.start_model == p1.model_dir and p2.start_fingerprint == p1.end_fingerprint
    assert fingerprint(load_model(Path(second.model_dir))) == p2.end_fingerprint != p1.end_fingerprint


def test_lora_without_merge_continues_one_adapter(build, tiny, tmp_path):
    out = tmp_path / "run"
    result = train(build, out, config(tiny, merge=False, max_steps=6))
    p1, p2 = result.phases
    assert p1.model_dir is None and p2.model_dir is None
    assert p2.start_model == p1.adapter_dir and p2.start_fingerprint == p1.end_fingerprint
    assert result.model_dir == str(out / "phase2" / "adapter")
    cfg = json.loads((out / "phase2" / "adapter" / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]) == tiny  # one adapter on the original student
    from peft import PeftModel
    reloaded = PeftModel.from_pretrained(load_model(tiny), result.model_dir)
    assert fingerprint(reloaded) == p2.end_fingerprint
    assert not (out / "phase1" / "model").exists()


def test_resume_continues_from_last_checkpoint(build, tiny, tmp_path):
    out = tmp_path / "run"
    whole = train(build, out, config(tiny, phases=(1,), max_steps=6, save_steps=3))
    assert sorted(p.name for p in (out / "phase1" / "checkpoints").iterdir() if p.is_dir()) == \
        ["checkpoint-3", "checkpoint-6"]
    # a finished phase is not trained again
    again = train(build, out, config(tiny, phases=(1,), max_steps=6, save_steps=3, resume=True))
    assert again.phases[0].end_fingerprint == whole.phases[0].end_fingerprint

    # simulate a crash after step 3: the last checkpoint and the phase's outputs never got written
    import shutil
    shutil.rmtree(out / "phase1" / "checkpoints" / "checkpoint-6")
    for name in ("model", "adapter"):
        shutil.rmtree(out / "phase1" / name)
    (out / "phase1" / "phase.json").unlink()
    resumed = train(build, out, config(tiny, phases=(1,), max_steps=6, save_steps=3, resume=True))
    (p,) = resumed.phases
    assert p.resumed_from and p.resumed_from.endswith("checkpoint-3")
    assert p.steps_run == 3 and p.global_step == 6
    # the resumed steps retrace the uninterrupted run
    before = dict(whole.phases[0].losses)
    for step, loss in p.losses:
        assert loss == pytest.approx(before[step], abs=1e-4)
    assert (out / "phase1" / "model" / "config.json").is_file()


def test_rows_longer_than_max_length_are_reported(build, tiny, tmp_path):
    said: list[str] = []
    result = train(build, tmp_path / "run", config(tiny, phases=(1,), max_steps=1, max_length=24), log=said.append)
    assert result.phases[0].truncated_rows == 20
    assert any("20 of 20 rows have answers longer than max length 24" in m for m in said)
    ok = train(build, tmp_path / "run2", config(tiny, phases=(1,), max_steps=1))
    assert ok.phases[0].truncated_rows == 0


def test_existing_run_needs_resume_or_overwrite(build, tiny, tmp_path):
    out = tmp_path / "run"
    train(build, out, config(tiny, phases=(1,), max_steps=2))
    with pytest.raises(TrainError) as err:
        train(build, out, config(tiny, phases=(1,), max_steps=2))
    assert "--resume" in err.value.hint and (out / "phase1" / "model").is_dir()  # nothing lost
    fresh = train(build, out, config(tiny, phases=(1,), max_steps=2, overwrite=True))
    assert fresh.phases[0].resumed_from is None and fresh.phases[0].steps_run == 2


def test_bad_inputs_are_located(build, tiny, tmp_path):
    with pytest.raises(BuildError) as err:
        train(tmp_path / "nowhere", tmp_path / "out", config(tiny))
    assert "manifest.json" in err.value.message and "kdc compile" in err.value.hint

    broken = tmp_path / "broken"
    write_build(broken, repeat=1)
    mix = broken / "mixes" / "phase1_knowledge.jsonl"
    lines = mix.read_text().splitlines()
    lines[2] = json.dumps({"messages": [{"role": "user", "content": "no answer"}]})
    mix.write_text("\n".join(lines) + "\n")
    with pytest.raises(BuildError) as err:
        train(broken, tmp_path / "out", config(tiny))
    assert err.value.path == str(mix) and err.value.line == 3

    with pytest.raises(TrainError) as err:
        train(build, tmp_path / "out2", config(tmp_path / "no-model"))
    assert "not a local Hugging Face model folder" in err.value.message


def test_chat_template_choice(tiny):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny)
    assert tok.chat_template is None
    assert ensure_chat_template(tok) == "kdc-default"
    assert "{% generation %}" in tok.chat_template or "{%- generation -%}" in tok.chat_template
    tok.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    tok.chat_template = None
    assert ensure_chat_template(tok) == "gemma3"
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                                   tokenize=False)
    assert text.endswith("<start_of_turn>model\nyo<end_of_turn>\n")
    assert ensure_chat_template(tok) == "gemma3"  # recognised when saved and reloaded
    tok.chat_template = "{{ messages }}"
    assert ensure_chat_template(tok) == "model" and tok.chat_template == "{{ messages }}"  # kept


def test_cli_train_and_errors(build, tiny, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "compiler", "train", str(build), "--out", str(tmp_path / "o"),
                          "--model", str(tiny), "--max-steps", "3", "--max-length", "256", "--lr", "3e-3",
                          "--grad-accum", "1", "--phases", "1"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "phase 1: 20 rows, 3 steps" in run.stdout and "model: " in run.stdout
    assert (tmp_path / "o" / "phase1" / "model" / "model.safetensors").is_file()

    bad = subprocess.run([sys.executable, "-m", "compiler", "train", str(tmp_path / "missing"), "--out",
                          str(tmp_path / "o2"), "--model", str(tiny)], capture_output=True, text=True, env=env,
                         cwd=ROOT)
    assert bad.returncode == 1 and "error:" in bad.stderr and "hint:" in bad.stderr
    assert "Traceback" not in bad.stderr
    usage = subprocess.run([sys.executable, "-m", "compiler", "train", str(build), "--out", str(tmp_path / "o3"),
                            "--phases", "3"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert usage.returncode == 2 and "--phases" in usage.stderr and "Traceback" not in usage.stderr


def test_runs_unchanged_on_two_processes(build, tiny, tmp_path):
    """The launcher accelerate uses for multi-GPU runs (torch.distributed.run), here with 2 CPU processes
    (gloo): both processes train, only the main one writes, phase 2 starts from phase 1 on both."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), "-m", "compiler", "train", str(build), "--out", str(out),
                           "--model", str(tiny), "--max-steps", "4", "--max-length", "256", "--lr", "3e-3",
                           "--grad-accum", "1"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("model: ") == 1  # one summary, from the main process
    assert proc.stderr.count("phase 2: 20 rows of phase2_skills, lora from " + str(out / "phase1" / "model")) == 2
    p1 = json.loads((out / "phase1" / "phase.json").read_text())
    p2 = json.loads((out / "phase2" / "phase.json").read_text())
    assert p1["global_step"] == p2["global_step"] == 4 and p2["start_fingerprint"] == p1["end_fingerprint"]
    assert fingerprint(load_model(out / "phase2" / "model")) == p2["end_fingerprint"]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ label masks per row kind, the LM head

SECTION = "## Phobos\n\nPhobos orbits Mars three times a day.\n\n| moon | period |\n|---|---|\n| Phobos | 7.6 h |"
ROW_KINDS = {  # the knowledge mix's row contract: messages + metadata.row_kind; loss on the assistant only
    "content": ("What does Moons of Mars say about Phobos?", SECTION),
    "closed_book": ("How many moons does Mars have?", assistant_text("Mars has two moons.")),
    "raft": ("<excerpt 1>\nTitan is large.\n</excerpt 1>\n\n<excerpt 2>\nMars has two moons.\n</excerpt 2>\n\n"
             "Some of the excerpts above may be irrelevant. How many moons does Mars have?",
             assistant_text("Two.")),
    "open_book": ("Mars has two moons.\n\nHow many moons does Mars have?", assistant_text("Two.")),
    "skill": ("Write a haiku about rain.", "Soft rain on the roof\nwhispers to the sleeping town\nmorning earth"),
    "seed": ("What is two plus three?", "Two plus three is five."),
}


def kind_row(kind: str) -> dict:
    user, answer = ROW_KINDS[kind]
    return {"messages": [{"role": "system", "content": "You are a careful assistant."},
                         {"role": "user", "content": user}, {"role": "assistant", "content": answer}],
            "metadata": {"node_id": "knowledge/astronomy/moons", "source": "synthetic", "id": kind,
                         "row_kind": kind}}


@pytest.mark.parametrize("kind", sorted(ROW_KINDS))
def test_labels_cover_exactly_the_assistant_content(tiny, tmp_path, kind):
    row = kind_row(kind)
    phase = make_trainer(1, [row], tiny, tiny, tmp_path, config(tiny, packing=False))
    tok = phase.tokenizer
    batch = next(iter(phase.trainer.get_train_dataloader()))
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    labelled = [i for i, lab in enumerate(labels) if lab != -100]
    assert labelled == list(range(labelled[0], labelled[-1] + 1))  # one contiguous span
    assert all(labels[i] == ids[i] for i in labelled)
    # the span is the assistant's content (and the EOS that teaches stopping), token for token
    expected = tok(row["messages"][-1]["content"].strip() + tok.eos_token, add_special_tokens=False)["input_ids"]
    assert [ids[i] for i in labelled] == expected
    # everything before it is the prompt, rendered exactly as generation would prompt the model
    prompt = tok.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=True,
                                     return_dict=True)["input_ids"]
    assert ids[:labelled[0]] == prompt


def test_compact_head_gives_the_models_own_loss_and_gradients(build, tiny, tmp_path):
    """The LM head scored only at labelled positions (compiler/train/lmhead.py) is the model's plain
    cross-entropy over the assistant tokens, loss and gradients, in full fine-tuning (head trained)."""
    import torch
    rows = [kind_row(k) for k in sorted(ROW_KINDS)]
    phase = make_trainer(1, rows, tiny, tiny, tmp_path, config(tiny, method="full", packing=True, bf16=False))
    trainer = phase.trainer
    assert getattr(trainer.model, "kdc_compact_head", False)
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    fused = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits[0, :-1]  # the original forward: full logits
    target = batch["labels"][0, 1:]
    plain = torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=-100)
    plain.backward()
    assert loss.item() == pytest.approx(plain.item(), rel=1e-5)
    for name, p in model.named_parameters():
        assert torch.allclose(fused[name], p.grad, atol=1e-5, rtol=1e-4), name
    assert (target != -100).sum() < target.numel() / 2  # the prompts were really left out


def test_warmup_is_a_share_of_the_phase(build, tiny, tmp_path):
    """PhaseConfig.warmup=0.1 means 10% of the phase's steps with the installed transformers (>= 5: a
    float below 1 is a ratio); before 5 it was silently zero warm-up."""
    rows = [json.loads(line) for line in (build / "mixes" / "phase1_knowledge.jsonl").read_text().splitlines()]
    phase = make_trainer(1, rows, tiny, tiny, tmp_path, config(tiny))
    trainer = phase.trainer
    trainer.create_optimizer_and_scheduler(num_training_steps=100)
    sched = trainer.lr_scheduler
    lrs = []
    for _ in range(12):
        lrs.append(sched.get_last_lr()[0])
        trainer.optimizer.step()
        sched.step()
    peak = FAST[1].learning_rate
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(peak / 2) and lrs[10] == pytest.approx(peak, rel=1e-3)


def test_device_defaults():
    from compiler.train.trainer import device_defaults
    gpu, cpu = device_defaults(cuda=True), device_defaults(cuda=False)
    assert (gpu.batch_size, gpu.grad_accum, gpu.max_length) == (2, 4, 1024)
    # a CPU step holds at most 1k tokens: the embedded student's step stays a few seconds, not minutes
    assert cpu.batch_size * cpu.grad_accum * cpu.max_length <= 1024
