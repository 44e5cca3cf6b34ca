"""`kdc validate` without click: a one-file run in CI is mostly interpreter start-up, and click's
import is a tenth of it. The options are the click command's (compiler/cli/validate_cmd.py), with
the same defaults and bounds; any argument this parser is not sure of (`--help`, an unknown or
malformed option, a bad value, a path that does not exist) makes it step aside (None), and the
click command parses the same arguments and says what is wrong, so messages and help stay click's.
tests/test_validate_fast.py holds the two parsers to the same values."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from compiler.validate.checks import Limits

_FLAGS = {"--strict": "strict", "--fetch": "fetch", "--no-cache": "no_cache"}
_VALUED = {"--root": "root", "--format": "fmt", "--changed-since": "changed_since", "--allow-repo": "allow_repo",
           "--jobs": "jobs", "-j": "jobs", "--max-context-words": "max_context_words",
           "--max-qa-words": "max_qa_words", "--max-skill-words": "max_skill_words",
           "--near-dup-threshold": "near_dup_threshold"}
_FORMATS = ("human", "github", "json")
_ANSI = re.compile(r"\033\[[;?0-9]*[a-zA-Z]")  # what click.echo strips when the stream is no terminal


def parse(argv: list[str]) -> dict[str, Any] | None:
    """The click command's parameters for `argv`, or None: let click parse it."""
    values: dict[str, Any] = {"paths": [], "root": None, "strict": False, "fmt": "human", "changed_since": None,
                              "fetch": False, "allow_repo": [], "no_cache": False, "jobs": "0",
                              "max_context_words": str(Limits.context_words), "max_qa_words": str(Limits.qa_words),
                              "max_skill_words": str(Limits.skill_words), "near_dup_threshold": str(Limits.near_dup)}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            values["paths"] += args
            break
        if not arg.startswith("-") or arg == "-":
            if arg == "-":
                return None
            values["paths"].append(arg)
            continue
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg[:2], "", arg[2:])
        if name in _FLAGS and not eq and not inline:
            values[_FLAGS[name]] = True
            continue
        key = _VALUED.get(name)
        if key is None:
            return None  # --help, -h, unknown or misspelt: click's message
        if eq or inline:
            value = inline
        elif args and not args[0].startswith("-"):
            value = args.pop(0)
        else:
            return None
        if key == "allow_repo":
            values[key].append(value)
        else:
            values[key] = value
    return _checked(values)


def _checked(v: dict[str, Any]) -> dict[str, Any] | None:
    """Values converted and checked as the click types do; None where click would refuse."""
    try:
        ints = {k: int(v[k]) for k in ("jobs", "max_context_words", "max_qa_words", "max_skill_words")}
        near = float(v["near_dup_threshold"])
    except ValueError:
        return None
    if ints["jobs"] < 0 or min(ints[k] for k in ints if k != "jobs") < 1 or not 0.0 < near <= 1.0:
        return None
    if v["fmt"] not in _FORMATS:
        return None
    if not all(os.path.exists(p) and os.access(p, os.R_OK) for p in v["paths"]):
        return None
    if v["root"] is not None and not (os.path.isdir(v["root"]) and os.access(v["root"], os.R_OK)):
        return None
    return {**v, **ints, "near_dup_threshold": near, "paths": tuple(Path(p) for p in v["paths"]),
            "root": None if v["root"] is None else Path(v["root"]), "allow_repo": tuple(v["allow_repo"])}


def _echo(text: str, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    if not stream.isatty():
        text = _ANSI.sub("", text)
    stream.write(text + "\n")
    stream.flush()


def _style(text: str, severity: str) -> str:
    """click.style(text, fg=red/yellow, bold=error)'s escape codes."""
    return ("\033[31m\033[1m" if severity == "error" else "\033[33m\033[22m") + text + "\033[0m"


def _red(text: str) -> str:
    """click.secho(text, fg="red")'s escape codes (for the error line)."""
    return f"\033[31m{text}\033[0m"


def main(argv: list[str]) -> int | None:
    """Run `kdc validate argv`; the exit status, or None when click must parse the arguments."""
    v = parse(argv)
    if v is None:
        return None
    from compiler.cli.validate_run import run
    from compiler.errors import KdcError

    try:
        return run(v["paths"], v["root"], v["strict"], v["fmt"], v["changed_since"], v["fetch"], v["no_cache"],
                   v["jobs"], Limits(v["max_context_words"], v["max_qa_words"], v["max_skill_words"],
                                     v["near_dup_threshold"]), v["allow_repo"], echo=_echo, style=_style)
    except KdcError as exc:
        _echo(_red(f"error: {exc.located()}"), err=True)
        if exc.hint:
            _echo(f"hint: {exc.hint}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        _echo("interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # an OS, SQLite or library error: one located line, never a traceback
        if os.environ.get("KDC_DEBUG"):
            raise
        from compiler.io.oserrors import describe

        message, hint = describe(exc)
        _echo(_red(f"error: {message}"), err=True)
        _echo(f"hint: {hint}", err=True)
        return 1
