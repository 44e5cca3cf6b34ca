"""The library API: the stages as functions a script calls instead of the CLI.

Each function is the CLI command's own code path, so a script and `kdc` cannot disagree. The
names avoid the subpackages' (`compiler.validate`, `compiler.compile`, `compiler.train` are
folders), and the heavy libraries load only when a function runs. Errors are KdcError
subclasses carrying file:line:col and a hint, as on the command line.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from compiler.errors import ConfigError

if TYPE_CHECKING:
    from compiler.compile.build import BuildResult
    from compiler.compile.plan import LeafPlan
    from compiler.config import CompileConfig
    from compiler.taxonomy.tree import Taxonomy
    from compiler.train.evaluate import EvalReport
    from compiler.train.settings import TrainConfig, TrainResult
    from compiler.validate.api import FileResult


def load_taxonomy(root: str | Path) -> "Taxonomy":
    """The taxonomy under `root` as a tree of leaves (`.leaves()`, `.leaf(node_id)`); unreadable
    files raise TaxonomyError. Schema validity is validate_taxonomy's job."""
    from compiler.taxonomy.tree import load_taxonomy as load

    return load(root)


def validate_taxonomy(root: str | Path, paths: list[str | Path] | None = None, *, strict: bool = False,
                      fetch: bool = False, jobs: int = 1) -> list["FileResult"]:
    """`kdc validate`: one FileResult per qna file under `root` (or only `paths`, files or
    folders inside it), each with `.valid` and its located `.problems`. No network unless
    `fetch` (remote knowledge documents); `strict` turns warnings into errors."""
    from compiler.validate.api import validate_paths

    root = Path(root)
    return validate_paths([Path(p) for p in paths] if paths else [root], root=root, strict=strict,
                          fetch=fetch, jobs=jobs)


def load_settings(taxonomy: str | Path, *, config_file: str | Path | None = None, trust: bool = False,
                  **options: Any) -> "CompileConfig":
    """The settings of a compile: defaults < the taxonomy's kdc.yaml (held to the trust rule
    unless `trust`) or `config_file` < `options` (CompileConfig fields, e.g. out="build",
    teacher="openai/gpt-4o-mini", samples_per_node=10)."""
    from compiler.config import CompileConfig, load_config

    known = {f.name for f in fields(CompileConfig)} - {"taxonomy", "settings", "config_file", "marks"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}", hint="known: " + ", ".join(sorted(known)))
    return load_config(Path(taxonomy), Path(config_file) if config_file is not None else None, options,
                       trust=trust)


def plan_taxonomy(settings: "CompileConfig", *, keep_going: bool = False) -> list["LeafPlan"]:
    """What a compile would ask for: per leaf its target, held-out eval seeds, training seeds and
    (knowledge) document chunks. Reads the documents; calls no teacher."""
    from compiler.compile.plan import make_plan
    from compiler.taxonomy.tree import load_taxonomy as load

    return make_plan(load(settings.taxonomy), settings, keep_going=keep_going)


def compile_taxonomy(settings: "CompileConfig", *, keep_going: bool = False) -> "BuildResult":
    """`kdc compile`: validate, plan, generate with the teacher, gate, mix and write the build
    folder `settings.out` (docs/build-layout.md). Returns the build's manifest and shortfall."""
    from compiler.compile.build import compile_taxonomy as run

    return run(settings, keep_going=keep_going)


def train_student(build_dir: str | Path, out_dir: str | Path, settings: "TrainConfig | None" = None,
                  log: Callable[[str], None] | None = None) -> "TrainResult":
    """`kdc train`: fine-tune the student on the build's mixes, phase by phase (TRL); the final
    model folder is `result.model_dir`. Needs the `train` extra."""
    from compiler.train.trainer import train

    return train(build_dir, out_dir, settings, log=log)


def evaluate_model(build_dir: str | Path, model: str | Path, **options: Any) -> "EvalReport":
    """`kdc eval`: answer every held-out seed with `model` and its base, score (ROUGE-L, F1,
    optionally a judge) and write BUILD/eval.json; options are evaluate()'s (base, judge, limit, ...)."""
    from compiler.train.evaluate import evaluate

    return evaluate(build_dir, str(model), **options)


def train_settings(**options: Any) -> "TrainConfig":
    """A TrainConfig (method="lora" | "full", max_steps, model, ...), unknown names refused."""
    from compiler.train.settings import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown train setting(s): {', '.join(unknown)}", hint="known: " + ", ".join(sorted(known)))
    return TrainConfig(**options)
