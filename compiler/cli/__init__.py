"""The `kdc` command: `main` is the console script's entry point.

`kdc validate` is most often one file of a pull request in CI, where the interpreter's start-up is
most of the run; so it is parsed here without click (compiler/cli/validate_fast.py) whenever its
arguments are plain, and only `--help`, a usage error or any other command loads the click group
(compiler/cli/group.py), which parses and reports exactly as before."""

from __future__ import annotations

import os
import sys
from typing import Any

# Offline by default: no hub telemetry, no remote litellm cost map.
for _k, _v in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1"),
               ("LITELLM_LOCAL_MODEL_COST_MAP", "True"), ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_k, _v)


def main() -> None:
    if sys.argv[1:2] == ["validate"]:
        from compiler.cli.validate_fast import main as validate_main

        code = validate_main(sys.argv[2:])
        if code is not None:
            sys.exit(code)
    from compiler.cli.group import main as click_main

    click_main()


def __getattr__(name: str) -> Any:
    """The click group and its table (`from compiler.cli import cli`), loaded on first use."""
    if name in ("cli", "COMMANDS", "LazyGroup"):
        from compiler.cli import group

        return getattr(group, name)
    raise AttributeError(f"module 'compiler.cli' has no attribute {name!r}")
