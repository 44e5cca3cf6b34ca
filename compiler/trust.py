"""The trust rule for settings: what a taxonomy's own kdc.yaml may not decide.

The kdc.yaml found in the taxonomy root is part of the pull request, yet compile runs with the
maintainer's API keys in the environment and writes where it is told. So that file may not
choose where requests go or which key they carry (any `*api_base*`, `*api_key*`, `*_key_env`
key, at any depth: `api_base`, `gates.judge_api_base`, `gates.judge_api_key_env`, ...), where
files are written (`out`), which repositories outside the checkout may be read (`allow_repos`)
or whether to use the network (`fetch_documents`). Such a key is a located error naming the
flag to pass, unless the maintainer
- gives the same setting on the command line (`--api-base`, `--out`, `--fetch`, `--allow-repo`),
  which wins and makes the file's value moot,
- names the file explicitly with `--config FILE` (their own file), or
- passes `--trust-config` after reviewing it.
Models (`teacher`, `judge`) may come from the file: with the endpoints fixed by the maintainer,
a model name only picks the provider's own endpoint and key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from compiler.errors import ConfigError
from compiler.io.yamlload import mark_of, node_at

# top-level key -> the command-line flag that gives the same setting
TOP_LEVEL = {"out": "--out", "allow_repos": "--allow-repo", "fetch_documents": "--fetch", "api_base": "--api-base",
             "api_bases": "--api-base"}


def sensitive_key(key: str) -> bool:
    k = key.lower()
    return "api_base" in k or "api_key" in k or k.endswith("_key_env")


def _walk(data: Any, prefix: list) -> Iterator[list]:
    if isinstance(data, dict):
        for key, value in data.items():
            path = [*prefix, key]
            if isinstance(key, str) and (sensitive_key(key) or (not prefix and key in TOP_LEVEL)):
                yield path
            else:
                yield from _walk(value, path)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            yield from _walk(item, [*prefix, i])


def check_untrusted(data: Any, node: Any, path: Path, given: set[str]) -> None:
    """Raise a located ConfigError for the first setting the taxonomy's kdc.yaml may not make.
    `given`: the top-level settings the command line gives (those win; the file's are moot)."""
    for keys in _walk(data, []):
        flag = TOP_LEVEL.get(keys[0]) if len(keys) == 1 else None
        if flag and keys[0].replace("api_bases", "api_base") in given:
            continue
        line, col = mark_of(node_at(node, keys))
        dotted = ".".join(str(k) for k in keys)
        how = f"give it on the command line ({flag}), " if flag else ""
        raise ConfigError(f"`{dotted}` in the taxonomy's own {path.name} is not trusted: it chooses an endpoint, "
                          "a key, an output folder or a repository, and this file is part of the taxonomy "
                          "(a pull request can change it)", path=str(path), line=line, column=col,
                          hint=f"review the file, then {how}pass --trust-config, or name your own settings "
                               "file with --config FILE")
