"""The `kdc` click group. Thin: each command lives in its own module, loaded only when invoked,
so `kdc validate` never imports the model stack. Turns KdcError into an exit (as does the
validate fast path, compiler/cli/validate_fast.py, which runs without click)."""

from __future__ import annotations

import importlib
import os
import sys

import click

from compiler import __version__
from compiler.errors import KdcError

# command name -> "module:attribute"
COMMANDS = {
    "validate": "compiler.cli.validate_cmd:validate",
    "compile": "compiler.cli.compile_cmd:compile_",
    "train": "compiler.cli.train_cmd:train",
    "eval": "compiler.cli.train_cmd:eval_",
    "report": "compiler.cli.report_cmd:report",
    "review": "compiler.cli.report_cmd:review",
}

class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)
            if missing.startswith("compiler"):
                raise  # our own module is broken: a bug, not a missing extra
            return _needs_extra(name, missing)


def _needs_extra(name: str, missing: str) -> click.Command:
    """A stand-in command that explains which extra to install (keeps `kdc --help` working)."""
    extra = "train" if name in ("train", "eval") else "embedded" if name == "compile" else "compile"

    @click.command(name=name, context_settings={"ignore_unknown_options": True},
                   help=f"(needs: pip install 'kdc[{extra}]')", add_help_option=False)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def stand_in(args):
        raise click.ClickException(f"`kdc {name}` needs packages that are not installed ({missing}); "
                                   f"install them with: pip install 'kdc[{extra}]'")

    return stand_in


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kdc")
def cli() -> None:
    """kdc: compile an InstructLab-style taxonomy into training data and a trained model."""


def main() -> None:
    try:
        rv = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else 1)
    except KdcError as exc:
        click.secho(f"error: {exc.located()}", fg="red", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as exc:  # an OS, SQLite or library error: one located line, never a traceback
        if os.environ.get("KDC_DEBUG"):
            raise
        from compiler.io.oserrors import describe

        message, hint = describe(exc)
        click.secho(f"error: {message}", fg="red", err=True)
        click.echo(f"hint: {hint}", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
