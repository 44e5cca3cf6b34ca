"""`kdc train`'s settings and results: per-phase optimiser settings with device defaults, the run's
TrainConfig, and the PhaseResult / TrainResult records written to phase.json / train_result.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal

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
    """GPU: 2 x 4 sequences of 1,024 tokens (8k tokens a step), bf16 where supported. CPU: 1 x 2 of 512
    (at most 1k tokens a step), fp32: a CPU step at the GPU shape took 225 s; 2 x 1 of 512 took the same
    ~10 s a step as 1 x 2 but peaked at 4.7 GiB instead of 3.2 (benchmarks/bench_train.py). bf16 autocast
    on a CPU with AMX was not faster in a loaded measurement (--bf16 on), so it stays opt-in."""
    import torch
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        return DeviceDefaults(2, 4, 1024, torch.cuda.is_bf16_supported())
    return DeviceDefaults(1, 2, 512, False)


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
    truncated_rows: int  # rows whose answer alone is over max_length (its end untrained)
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
    shortened_rows: int = 0  # rows over max_length whose prompt lost its middle (train/fitrows.py)


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
