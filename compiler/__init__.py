"""kdc: a taxonomy-driven knowledge-to-data compiler.

Stages, a subpackage each, records flowing one way (docs/architecture.md):
taxonomy -> validate -> plan -> generate -> gate -> mix -> train (-> eval, report, review).

The library API, for scripts (each is the CLI command's own code path, compiler/api.py)::

    import compiler as kdc

    problems = [r for r in kdc.validate_taxonomy("taxonomy") if not r.valid]
    settings = kdc.load_settings("taxonomy", out="build/x", samples_per_node=3)
    plans = kdc.plan_taxonomy(settings)           # per leaf: target, eval seeds, chunks
    build = kdc.compile_taxonomy(settings)        # the build folder, build.manifest
    run = kdc.train_student("build/x", "runs/x", kdc.train_settings(max_steps=10))
    report = kdc.evaluate_model("build/x", run.model_dir)

Names load on first use (PEP 562): `import compiler` happens on every `kdc validate`, whose
start-up time is measured, so nothing here imports a stage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module defining it
_API = {
    "load_taxonomy": "compiler.api",
    "validate_taxonomy": "compiler.api",
    "load_settings": "compiler.api",
    "plan_taxonomy": "compiler.api",
    "compile_taxonomy": "compiler.api",
    "train_settings": "compiler.api",
    "train_student": "compiler.api",
    "evaluate_model": "compiler.api",
    # the records a script handles
    "KdcError": "compiler.errors",
    "Sample": "compiler.records",
    "Record": "compiler.records",
    "Seed": "compiler.records",
    "CompileConfig": "compiler.config",
    "TrainConfig": "compiler.train.settings",
}
__all__ = ["__version__", "load_taxonomy", "validate_taxonomy", "load_settings", "plan_taxonomy", "compile_taxonomy",
           "train_settings", "train_student", "evaluate_model", "KdcError", "Sample", "Record", "Seed",
           "CompileConfig", "TrainConfig"]

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ loads them
    from compiler.api import (compile_taxonomy, evaluate_model, load_settings, load_taxonomy, plan_taxonomy,
                              train_settings, train_student, validate_taxonomy)
    from compiler.config import CompileConfig
    from compiler.errors import KdcError
    from compiler.records import Record, Sample, Seed
    from compiler.train.settings import TrainConfig


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'compiler' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
