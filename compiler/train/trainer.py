"""`kdc train`: multiphase supervised fine-tuning of a student on a build's SFT mixes, with TRL.

Phase 1 trains on the knowledge mix, phase 2 starts from phase 1's result and trains on the skills mix
(skills + knowledge replay + seeds): InstructLab's order, so that skills are learnt last without
erasing knowledge (the replay guards against forgetting). Loss is on assistant tokens only, samples are
packed, checkpoints allow `resume`, and every phase's result is a standard Hugging Face folder with a
model card naming the data manifest it was trained on.

Output layout (DIR = the `out_dir`):
    DIR/phase<N>/checkpoints/checkpoint-<step>/   Trainer checkpoints (resume)
    DIR/phase<N>/adapter/                         LoRA adapter (LoRA only)
    DIR/phase<N>/model/                           merged (LoRA + merge) or fully fine-tuned model
    DIR/phase<N>/phase.json                       the phase's result; its presence = phase done
    DIR/train_result.json, DIR/README.md          the run's result and model card

TRL, transformers, peft and torch are imported inside functions. The same code runs unchanged under
`accelerate launch` (DDP, FSDP or DeepSpeed from an accelerate config): the Trainer reads the launch
environment, and only the main process writes files other than the Trainer's own.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from compiler.io import builddir
from compiler.io.builddir import Manifest
from compiler.io.fsutil import jsonl_rows, write_json
from compiler import __version__
from compiler.errors import BuildError, ConfigError, TrainError
from compiler.train.lmhead import compact_lm_head
from compiler.train.student import (EMBEDDED_NAME, EMBEDDED_ORIGIN, ensure_chat_template, fingerprint,
                              load_model, load_tokenizer, resolve_student, set_stop_tokens)

Method = Literal["lora", "full"]
MIXES = {1: "phase1_knowledge", 2: "phase2_skills"}
Log = Callable[[str], None]


@dataclass(frozen=True)
class PhaseConfig:
    """Optimiser settings of one phase. Effective batch = batch_size x grad_accum x processes."""

    epochs: float
    learning_rate: float
    batch_size: int | None = None  # None: device_defaults()
    grad_accum: int | None = None
    warmup: float = 0.1  # fraction of the phase's steps (or a step count when >= 1)
    scheduler: str = "cosine"
    weight_decay: float = 0.0


@dataclass(frozen=True)
class DeviceDefaults:
    """Batch shape and precision a run gets when it does not choose them, by device."""

    batch_size: int
    grad_accum: int
    max_length: int
    bf16: bool


def device_defaults(cuda: bool | None = None) -> DeviceDefaults:
    """GPU: 2 x 4 sequences of 1,024 tokens (8k tokens a step), bf16 where supported. CPU: 2 x 1 of 512
    (at most 1k tokens a step), fp32: a CPU step at the GPU shape took 225 s. bf16 autocast on a CPU with
    AMX was not faster in a loaded measurement (benchmarks/bench_train.py --bf16 on), so it stays opt-in."""
    import torch
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        return DeviceDefaults(2, 4, 1024, torch.cuda.is_bf16_supported())
    return DeviceDefaults(2, 1, 512, False)


def resolve_settings(config: "TrainConfig", n: int) -> tuple[PhaseConfig, int, bool]:
    """(phase settings, max length, bf16) with the device's defaults filled in."""
    from dataclasses import replace
    dev = device_defaults()
    pc = config.phase(n)
    pc = replace(pc, batch_size=pc.batch_size or dev.batch_size, grad_accum=pc.grad_accum or dev.grad_accum)
    return pc, config.max_length or dev.max_length, dev.bf16 if config.bf16 is None else config.bf16


def default_phases(method: Method) -> dict[int, PhaseConfig]:
    """Defaults scaled for small students (~100M-1B parameters) and small compiled sets.

    InstructLab trains 7B models with full fine-tuning for 7 epochs at 2e-5 (knowledge), then 10 epochs at
    6e-6 (skills). Here the sets are a few dozen to a few thousand samples per leaf, so fewer epochs (a
    small model memorises a small set fast and then overfits), and the same shape: phase 2 at roughly a
    third of phase 1's rate so that new skills do not wash out knowledge. LoRA updates only low-rank
    deltas and needs a ~10x higher rate than full fine-tuning (2e-4 is the usual LoRA rate); full
    fine-tuning of a small model tolerates a somewhat higher rate than a 7B one (5e-5 vs 2e-5).
    """
    if method == "lora":
        return {1: PhaseConfig(epochs=3, learning_rate=2e-4), 2: PhaseConfig(epochs=3, learning_rate=7e-5)}
    return {1: PhaseConfig(epochs=3, learning_rate=5e-5), 2: PhaseConfig(epochs=3, learning_rate=1.5e-5)}


@dataclass(frozen=True)
class TrainConfig:
    """Everything `train()` needs besides the build and the output folder."""

    model: str | None = None  # None: the embedded Gemma 3 270M; else a local Hugging Face model folder
    method: Method = "lora"
    phases: tuple[int, ...] = (1, 2)
    phase_settings: dict[int, PhaseConfig] = field(default_factory=dict)  # missing: default_phases(method)
    max_steps: int | None = None  # per phase; overrides epochs (quick runs, tests)
    max_length: int | None = None  # tokens per (packed) sequence; None: device_defaults()
    packing: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str | tuple[str, ...] = "all-linear"
    merge: bool = True  # LoRA: also save the merged model; phase 2 then trains a new adapter on it
    save_steps: int = 50
    save_total_limit: int = 2
    resume: bool = False
    overwrite: bool = False
    seed: int = 42
    logging_steps: int = 1
    gradient_checkpointing: bool = False  # small students fit without it; it costs ~30% speed
    bf16: bool | None = None  # None: device_defaults() (GPU with bf16, CPU with native bf16)
    report_to: str = "none"  # or "tensorboard", "wandb", ... (Trainer integrations)
    compact_head: bool = True  # score the LM head only at labelled positions (compiler/train/lmhead.py)

    def phase(self, n: int) -> PhaseConfig:
        return self.phase_settings.get(n) or default_phases(self.method)[n]


@dataclass
class PhaseResult:
    phase: int
    mix: str
    rows: int
    truncated_rows: int  # rows longer than max_length (their answers partly or wholly untrained)
    start_model: str  # the folder the phase started from
    start_fingerprint: str  # sha256 of the weights the phase started from (adapter included, if continued)
    end_fingerprint: str  # sha256 of the weights the phase produced (merged, or base + adapter)
    model_dir: str | None  # merged / fully fine-tuned model (None: adapter only)
    adapter_dir: str | None
    settings: dict[str, Any]
    max_length: int
    chat_template: str  # which template shaped the data (student.ensure_chat_template)
    global_step: int
    steps_run: int  # steps of this invocation (fewer than global_step after a resume)
    resumed_from: str | None
    losses: list[tuple[int, float]]  # (step, training loss)
    tokens: int  # tokens processed by this invocation (all processes)
    runtime_s: float
    seconds_per_step: float
    tokens_per_second: float
    peak_memory_mb: float | None  # GPU peak (CUDA) else process peak RSS


@dataclass
class TrainResult:
    out_dir: str
    model_dir: str  # the final artifact: load it with from_pretrained (or PEFT, when an adapter)
    student: str
    method: str
    chat_template: str
    manifest: dict[str, Any]
    phases: list[PhaseResult]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def train(build_dir: str | Path, out_dir: str | Path, config: TrainConfig | None = None,
          log: Log | None = None) -> TrainResult:
    """Run the configured phases in order; each starts from the previous one's result."""
    config = config or TrainConfig()
    say = log or (lambda _m: None)
    build_dir, out = Path(build_dir), Path(out_dir)
    manifest, provenance = _read_manifest(build_dir)
    phases = sorted(set(config.phases))
    if not phases or any(p not in MIXES for p in phases):
        raise ConfigError(f"phases must be among {sorted(MIXES)}, got {list(config.phases)}")
    _prepare_out(out, config, phases)
    student = resolve_student(config.model, log=say)
    start = student
    if phases[0] > 1:  # e.g. `--phases 2` after an earlier `--phases 1` into the same DIR
        start = _previous_result(out, phases[0] - 1, config) or student

    results: list[PhaseResult] = []
    for n in phases:
        done = out / f"phase{n}" / "phase.json"
        if config.resume and done.is_file():
            result = PhaseResult(**json.loads(done.read_text(encoding="utf-8")))
            say(f"phase {n}: already done ({result.global_step} steps), skipped")
        else:
            rows = _load_mix(build_dir, manifest, MIXES[n])
            if not rows:
                say(f"phase {n}: mix {MIXES[n]} is empty, skipped")
                continue
            result = _run_phase(n, rows, start, student, out, config, provenance, say)
        results.append(result)
        start = Path(result.model_dir or result.adapter_dir or start)
    if not results:
        raise TrainError("nothing to train: the selected mixes are empty",
                         hint=f"check the build's {builddir.MANIFEST} `mixes` (did compile accept any samples?)")

    last = results[-1]
    final = last.model_dir or last.adapter_dir
    outcome = TrainResult(out_dir=str(out), model_dir=str(final), student=str(student), method=config.method,
                          chat_template=last.chat_template, manifest=provenance, phases=results)
    if _is_main():
        write_json(out / "train_result.json", {**outcome.to_json(), "final": os.path.relpath(final, out)})
        card = model_card(outcome, config)
        _write_text(out / "README.md", card)
        _write_text(Path(final) / "README.md", card)
    return outcome


@dataclass
class _Phase:
    """A phase ready to run: the trainer and what is needed to save and describe its result."""

    trainer: Any
    tokenizer: Any
    template: str
    start_fingerprint: str
    continue_adapter: bool
    truncated: int  # rows longer than max_length: their ends (the answers) are cut off


def make_trainer(n: int, rows: list[dict], start: Path, student: Path, out: Path,
                 config: TrainConfig) -> _Phase:
    """An SFTTrainer for phase `n` starting from the model folder `start` (exposed for tests)."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    pc, max_length, bf16 = resolve_settings(config, n)
    continue_adapter = (config.method == "lora" and not config.merge and n > 1
                        and (start / "adapter_config.json").is_file())
    tokenizer = load_tokenizer(start)
    if continue_adapter:  # no merge: keep training the previous phase's adapter on the original base
        from peft import PeftModel
        model = PeftModel.from_pretrained(load_model(student), start, is_trainable=True)
    else:
        model = load_model(start)
    template = ensure_chat_template(tokenizer)
    set_stop_tokens(model, tokenizer)
    start_fp = fingerprint(model)

    peft_config = None
    if config.method == "lora" and not continue_adapter:
        from peft import LoraConfig
        targets = config.lora_targets if isinstance(config.lora_targets, str) else list(config.lora_targets)
        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules=targets, task_type="CAUSAL_LM")

    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(out / f"phase{n}" / "checkpoints"),
        num_train_epochs=pc.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=pc.learning_rate,
        per_device_train_batch_size=pc.batch_size,
        gradient_accumulation_steps=pc.grad_accum,
        warmup_steps=pc.warmup,
        lr_scheduler_type=pc.scheduler,
        weight_decay=pc.weight_decay,
        max_length=max_length,
        packing=config.packing,
        assistant_only_loss=True,
        activation_checkpointing=config.gradient_checkpointing,
        bf16=bf16,
        fp16=False,
        use_cpu=not cuda,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=config.report_to,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=0,
    )
    truncated = sum(len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"])
                    > max_length for r in rows)
    if _can_mask_assistant(tokenizer):
        dataset = Dataset.from_list([{"messages": r["messages"]} for r in rows])
    else:
        # A template without {% generation %} markers that TRL has no training variant for: train on the
        # final assistant turn as a completion of the conversation before it (TRL masks the prompt).
        args.assistant_only_loss, args.completion_only_loss = False, True
        template += "/completion-only"
        dataset = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]}
                                     for r in rows])
    try:
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config)
    except (ValueError, RuntimeError) as exc:  # e.g. a chat template TRL cannot render or mask
        raise TrainError(f"phase {n}: cannot set up training: {exc}",
                         hint="check the model's chat template (tokenizer_config.json / chat_template.jinja)") from exc
    if config.compact_head:
        from peft import PeftModel
        inner = trainer.model
        compact_lm_head(inner.get_base_model() if isinstance(inner, PeftModel) else inner)
    return _Phase(trainer, tokenizer, template, start_fp, continue_adapter, truncated)


def _can_mask_assistant(tokenizer: Any) -> bool:
    """Whether TRL can build an assistant-token mask: generation markers, or a known training variant."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers
    if has_generation_markers(tokenizer.chat_template):
        return True
    try:
        return get_training_chat_template(tokenizer) is not None
    except ValueError:  # "patching is not supported for this template"
        return False


def _run_phase(n: int, rows: list[dict], start: Path, student: Path, out: Path, config: TrainConfig,
               provenance: dict, say: Log) -> PhaseResult:
    import torch
    from transformers.trainer_utils import get_last_checkpoint

    pc, max_length, _bf16 = resolve_settings(config, n)
    phase_dir = out / f"phase{n}"
    ckpt_dir = phase_dir / "checkpoints"
    say(f"phase {n}: {len(rows)} rows of {MIXES[n]}, {config.method} from {start}")
    prepared = make_trainer(n, rows, start, student, out, config)
    trainer, tokenizer, template = prepared.trainer, prepared.tokenizer, prepared.template
    continue_adapter, start_fp, truncated = prepared.continue_adapter, prepared.start_fingerprint, prepared.truncated
    if truncated:
        say(f"phase {n}: warning: {truncated} of {len(rows)} rows are longer than max length "
            f"{max_length} tokens; their ends (answers included) are cut off: raise --max-length")
    cuda = torch.cuda.is_available()

    resume_from = get_last_checkpoint(str(ckpt_dir)) if config.resume and ckpt_dir.is_dir() else None
    if resume_from:
        say(f"phase {n}: resuming from {resume_from}")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    first_step = _checkpoint_step(resume_from)
    t0 = time.perf_counter()
    try:
        output = trainer.train(resume_from_checkpoint=resume_from)
    except (ValueError, RuntimeError) as exc:  # bad template/data combinations surface here
        raise TrainError(f"phase {n} training failed: {exc}",
                         hint="see the message above; try --no-packing or a smaller --max-length") from exc
    runtime = time.perf_counter() - t0
    state = trainer.state
    steps_run = state.global_step - first_step
    tokens = int(getattr(trainer, "_total_train_tokens", 0))
    losses = [(int(h["step"]), float(h["loss"])) for h in state.log_history if "loss" in h]
    peak = (torch.cuda.max_memory_allocated() / 2**20) if cuda else _peak_rss_mb()

    # the same paths on every process; only the main one writes what the Trainer does not
    adapter_dir = phase_dir / "adapter" if config.method == "lora" else None
    model_dir = phase_dir / "model" if config.method == "full" or config.merge else None
    trainer.save_model(str(adapter_dir or model_dir))  # gathers sharded (FSDP/DeepSpeed) weights itself
    trainer.accelerator.wait_for_everyone()
    del trainer, prepared

    end_fp = ""
    if _is_main():
        if adapter_dir is not None:
            tokenizer.save_pretrained(adapter_dir)
            if not continue_adapter:  # a fresh adapter's base is where the phase started
                _point_adapter_at(adapter_dir, start)
        if config.method == "lora":
            from peft import PeftModel
            base = load_model(student if continue_adapter else start)
            tuned = PeftModel.from_pretrained(base, adapter_dir)
            if config.merge:
                tuned = tuned.merge_and_unload()
                set_stop_tokens(tuned, tokenizer)
                _save_atomic(tuned, tokenizer, model_dir)
            end_fp = fingerprint(tuned)
            del tuned, base
        else:
            tokenizer.save_pretrained(model_dir)
            end_fp = fingerprint(load_model(model_dir))
        for folder in (model_dir, adapter_dir):
            if folder is not None:
                write_json(folder / "kdc_train.json", {"student": str(student), "phase": n, "method": config.method,
                                                         "chat_template": template, "manifest": provenance})

    result = PhaseResult(
        phase=n, mix=MIXES[n], rows=len(rows), truncated_rows=truncated, start_model=str(start),
        start_fingerprint=start_fp,
        end_fingerprint=end_fp, model_dir=str(model_dir) if model_dir else None,
        adapter_dir=str(adapter_dir) if adapter_dir else None, settings=asdict(pc), max_length=max_length,
        chat_template=template,
        global_step=state.global_step,
        steps_run=steps_run, resumed_from=resume_from, losses=losses, tokens=tokens, runtime_s=round(runtime, 3),
        seconds_per_step=round(runtime / max(steps_run, 1), 4),
        tokens_per_second=round(tokens / runtime, 1) if runtime > 0 else 0.0,
        peak_memory_mb=round(peak, 1) if peak else None)
    del output
    if _is_main():
        write_json(phase_dir / "phase.json", asdict(result))
    _wait()
    return result


# ---------------------------------------------------------------------------------------------- inputs

def _read_manifest(build_dir: Path) -> tuple[Manifest, dict]:
    manifest = builddir.read_manifest(build_dir)
    path, sha256 = builddir.manifest_digest(build_dir)
    provenance = {"path": str(path.resolve()), "sha256": sha256,
                  "taxonomy_hash": manifest.taxonomy.get("content_hash"),
                  "taxonomy_root": manifest.taxonomy.get("root"), "kdc_version": manifest.kdc_version}
    return manifest, provenance


def _load_mix(build_dir: Path, manifest: Manifest, name: str) -> list[dict]:
    """Rows of a mix: manifest `mixes[name].path`, else the layout's default path."""
    entry = manifest.mixes.get(name) or {}
    path = builddir.mix_path(build_dir, entry, name)
    if not path.is_file():
        if entry:
            raise BuildError(f"mix {name} is listed in the manifest but {path} is missing",
                             hint="re-run `kdc compile` into this build directory")
        return []
    rows = []
    for lineno, row in jsonl_rows(path):
        msgs = row.get("messages") if isinstance(row, dict) else None
        if (not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and isinstance(
                m.get("role"), str) and isinstance(m.get("content"), str) for m in msgs)
                or msgs[-1]["role"] != "assistant"):
            raise BuildError("a mix row needs `messages`: [{role, content}, ...] ending with the assistant",
                             path=str(path), line=lineno)
        rows.append({"messages": [{"role": m["role"], "content": m["content"]} for m in msgs]})
    return rows


def _prepare_out(out: Path, config: TrainConfig, phases: list[int]) -> None:
    """Refuse to mix runs silently: an existing run is resumed or explicitly overwritten."""
    ours = [out / f"phase{n}" for n in phases]
    if any(p.exists() for p in ours) and not config.resume:
        if not config.overwrite:
            raise TrainError(f"{out} already holds a training run",
                             hint="pass --resume to continue it, or --overwrite to start again")
        if _is_main():
            for p in ours:
                shutil.rmtree(p, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    _wait()


def _previous_result(out: Path, n: int, config: TrainConfig) -> Path | None:
    done = out / f"phase{n}" / "phase.json"
    if not done.is_file():
        return None
    prev = json.loads(done.read_text(encoding="utf-8"))
    found = prev.get("model_dir") or prev.get("adapter_dir")
    return Path(found) if found else None


# --------------------------------------------------------------------------------------------- outputs

def model_card(result: TrainResult, config: TrainConfig) -> str:
    """A Hugging Face model card (README.md with YAML front matter) naming the data it was trained on."""
    m = result.manifest
    embedded = Path(result.student).name == EMBEDDED_NAME
    adapter = not (Path(result.model_dir) / "config.json").is_file()
    front = ["---", f"library_name: {'peft' if adapter else 'transformers'}", "pipeline_tag: text-generation",
             "tags: [kdc, trl, sft" + (", lora" if config.method == "lora" else "") + "]"]
    if embedded:
        front += [f"base_model: {EMBEDDED_ORIGIN}", "license: gemma"]
    front.append("---")
    rows = ["| phase | mix | rows | start | epochs | learning rate | steps | first loss | last loss |",
            "|---|---|---|---|---|---|---|---|---|"]
    for p in result.phases:
        first = f"{p.losses[0][1]:.4f}" if p.losses else "-"
        last = f"{p.losses[-1][1]:.4f}" if p.losses else "-"
        rows.append(f"| {p.phase} | {p.mix} | {p.rows} | `{p.start_model}` | {p.settings['epochs']} | "
                    f"{p.settings['learning_rate']:g} | {p.global_step} | {first} | {last} |")
    return "\n".join(front + [
        "", f"# {Path(result.student).name} fine-tuned by kdc", "",
        f"Supervised fine-tuning with TRL's SFTTrainer ({config.method}"
        f"{', merged' if config.method == 'lora' and config.merge else ''}), run by `kdc train` {__version__}.",
        "", "## Training data", "",
        f"- build manifest: `{m.get('path')}`",
        f"- manifest sha256: `{m.get('sha256')}`",
        f"- taxonomy content hash: `{m.get('taxonomy_hash')}` (root `{m.get('taxonomy_root')}`)",
        "", "## Phases", "", *rows, "",
        "## Settings", "",
        f"- student: `{result.student}`" + (f" (from the packaged GGUF of `{EMBEDDED_ORIGIN}`)" if embedded else ""),
        f"- chat template: {result.chat_template}; loss on assistant tokens only; "
        f"packing {'on' if config.packing else 'off'}; max length {result.phases[-1].max_length}",
        (f"- LoRA r={config.lora_r}, alpha={config.lora_alpha}, dropout={config.lora_dropout}, "
         f"targets={config.lora_targets}" if config.method == "lora" else "- full fine-tuning"),
        f"- seed {config.seed}" + (f"; max steps per phase {config.max_steps}" if config.max_steps else ""),
        "", "## Limitations", "",
        "Trained on synthetic data generated by a teacher model from an expert taxonomy; evaluate it with "
        "`kdc eval` on the held-out seed examples before use.",
        *(["", "Gemma is provided under and subject to the Gemma Terms of Use."] if embedded else []), ""])


def _point_adapter_at(adapter_dir: Path, base: Path) -> None:
    """PEFT records the base as the model's name_or_path; make it the folder the phase started from."""
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = str(base.resolve())
    write_json(cfg_path, cfg)


def _save_atomic(model: Any, tokenizer: Any, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _checkpoint_step(checkpoint: str | None) -> int:
    if not checkpoint:
        return 0
    try:
        return int(Path(checkpoint).name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _peak_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _wait() -> None:
    """A barrier when launched with several processes (accelerate launch / torchrun)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.barrier()


__all__ = ["PhaseConfig", "TrainConfig", "PhaseResult", "TrainResult", "train", "make_trainer",
           "default_phases", "device_defaults", "model_card", "MIXES"]
