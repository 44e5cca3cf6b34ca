"""The per-user cache of per-file outcomes, keyed by the file's bytes, where it sits, the options,
and everything else an outcome depends on (kdc's validate code, the schemas, the libraries)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from functools import lru_cache
from pathlib import Path

from compiler import __version__
from compiler.taxonomy.tree import KIND_FOLDERS


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kdc" / "validate"


@lru_cache(maxsize=1)
def _salt() -> str:
    """What a cached outcome depends on besides the file: our code, schemas and the libraries."""
    h = hashlib.sha256(f"kdc {__version__}\0".encode())
    for dist, version in _versions(("pyyaml", "yamllint", "jsonschema", "datasketch")).items():
        h.update(f"{dist} {version}\0".encode())
    pkg = Path(__file__).resolve().parent.parent
    extra = [pkg / "io" / "yamlload.py", pkg / "taxonomy" / "tree.py", pkg / "minhash.py"]
    for module in sorted((pkg / "validate").glob("*.py")) + extra:
        h.update(module.read_bytes())
    from compiler.resources import data_dir

    for schema in sorted(data_dir("schemas").glob("qna_v*.json")):
        h.update(schema.read_bytes())
    return h.hexdigest()


def _versions(dists: tuple[str, ...]) -> dict[str, str]:
    """Installed versions, read from the dist-info folder names on sys.path (the first one wins,
    as for imports): importing importlib.metadata costs more than a cached validate takes.
    importlib.metadata only for a distribution installed some other way."""
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info"):
                dist, _, version = name[: -len(".dist-info")].partition("-")
                found.setdefault(dist.lower().replace("_", "-").replace(".", "-"), version)
    out = {}
    for dist in dists:
        if dist not in found:
            import importlib.metadata

            try:
                found[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                found[dist] = "?"
        out[dist] = found[dist]
    return out


def key(raw: bytes, name: str, abs_parts: tuple[str, ...], rel: str, token: str) -> str:
    from compiler.validate.schemacheck import FAMILY_FOLDERS

    ref_folder = next((p for p in reversed(abs_parts[:-1]) if p in FAMILY_FOLDERS), "")
    kind_folder = next((p for p in reversed(rel.split("/")[:-1]) if p in KIND_FOLDERS), "")
    h = hashlib.sha256(f"{_salt()}\0{token}\0{name}\0{ref_folder}\0{kind_folder}\0".encode())
    h.update(raw)
    return h.hexdigest()


def get(cache_dir: Path, key: str) -> dict | None:
    try:
        with open(cache_dir / key[:2] / f"{key}.json", encoding="utf-8") as fh:
            entry = json.load(fh)
        return entry if isinstance(entry, dict) and isinstance(entry.get("problems"), list) else None
    except (OSError, ValueError):
        return None


def put(cache_dir: Path, key: str, outcome: dict) -> None:
    try:
        folder = cache_dir / key[:2]
        folder.mkdir(parents=True, exist_ok=True)
        import tempfile  # here: a cache hit or --no-cache never needs it

        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(outcome, fh, separators=(",", ":"))
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        pass  # a read-only or full cache only costs speed
