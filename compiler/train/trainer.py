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
from pathlib import Path

from compiler.io import builddir
from compiler.io.builddir import Manifest
from compiler.errors import BuildError, ConfigError, TrainError
from compiler.io.fsutil import jsonl_rows, write_json
from compiler.train.modelcard import model_card
from compiler.train.phase import barrier, is_main, make_trainer, run_phase
from compiler.train.settings import (MIXES, DeviceDefaults, Log, Method, PhaseConfig, PhaseResult,
                                     TrainConfig, TrainResult, default_phases, device_defaults, resolve_settings)
from compiler.train.student import resolve_student


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
            result = run_phase(n, rows, start, student, out, config, provenance, say)
        results.append(result)
        start = Path(result.model_dir or result.adapter_dir or start)
    if not results:
        raise TrainError("nothing to train: the selected mixes are empty",
                         hint=f"check the build's {builddir.MANIFEST} `mixes` (did compile accept any samples?)")

    last = results[-1]
    final = last.model_dir or last.adapter_dir
    outcome = TrainResult(out_dir=str(out), model_dir=str(final), student=str(student), method=config.method,
                          chat_template=last.chat_template, manifest=provenance, phases=results)
    if is_main():
        write_json(out / "train_result.json", {**outcome.to_json(), "final": os.path.relpath(final, out)})
        card = model_card(outcome, config)
        _write_text(out / "README.md", card)
        _write_text(Path(final) / "README.md", card)
    return outcome


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
        if is_main():
            for p in ours:
                shutil.rmtree(p, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    barrier()


def _previous_result(out: Path, n: int, config: TrainConfig) -> Path | None:
    done = out / f"phase{n}" / "phase.json"
    if not done.is_file():
        return None
    prev = json.loads(done.read_text(encoding="utf-8"))
    found = prev.get("model_dir") or prev.get("adapter_dir")
    return Path(found) if found else None


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


__all__ = ["PhaseConfig", "TrainConfig", "PhaseResult", "TrainResult", "DeviceDefaults", "Method", "train",
           "make_trainer", "default_phases", "device_defaults", "resolve_settings", "model_card", "MIXES"]
