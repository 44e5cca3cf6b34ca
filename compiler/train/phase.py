"""One training phase: an SFTTrainer set up for it (make_trainer), run, saved and fingerprinted
(run_phase). TRL, transformers, peft and torch are imported inside functions, so that `kdc` starts
fast and `accelerate launch` sets up the processes before they load."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compiler.errors import TrainError
from compiler.io.fsutil import write_json
from compiler.train.fitrows import fit_rows
from compiler.train.lmhead import compact_lm_head
from compiler.train.settings import MIXES, Log, PhaseResult, TrainConfig, resolve_settings
from compiler.train.student import ensure_chat_template, fingerprint, load_model, load_tokenizer, set_stop_tokens


@dataclass
class _Phase:
    """A phase ready to run: the trainer and what is needed to save and describe its result."""

    trainer: Any
    tokenizer: Any
    template: str
    start_fingerprint: str
    continue_adapter: bool
    truncated: int  # rows whose answer alone is over max_length: their ends are cut off
    shortened: int = 0  # rows over max_length whose prompt lost its middle instead (train/fitrows.py)


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
    fitted = fit_rows(rows, lambda m: len(tokenizer.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"]),
                      max_length)
    rows, truncated, shortened = fitted.rows, fitted.truncated, fitted.shortened
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
    return _Phase(trainer, tokenizer, template, start_fp, continue_adapter, truncated, shortened)


def _can_mask_assistant(tokenizer: Any) -> bool:
    """Whether TRL can build an assistant-token mask: generation markers, or a known training variant."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers
    if has_generation_markers(tokenizer.chat_template):
        return True
    try:
        return get_training_chat_template(tokenizer) is not None
    except ValueError:  # "patching is not supported for this template"
        return False


def run_phase(n: int, rows: list[dict], start: Path, student: Path, out: Path, config: TrainConfig,
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
    prepared_shortened = prepared.shortened
    if prepared_shortened:
        say(f"phase {n}: {prepared_shortened} of {len(rows)} rows were over max length {max_length} tokens: "
            f"their prompts lost text from the middle so that the whole answer is trained")
    if truncated:
        say(f"phase {n}: warning: {truncated} of {len(rows)} rows have answers longer than max length "
            f"{max_length} tokens; their ends are cut off: raise --max-length")
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
    if is_main():
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
        phase=n, mix=MIXES[n], rows=len(rows), truncated_rows=truncated, shortened_rows=prepared_shortened, start_model=str(start),
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
    if is_main():
        write_json(phase_dir / "phase.json", asdict(result))
    barrier()
    return result


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


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """A barrier when launched with several processes (accelerate launch / torchrun)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
