"""The build directory (docs/build-layout.md): the one module that knows its file names, reads it
and writes it. Compile, review, report, card, train and eval all go through here.

Why one module: the layout is the contract between the stages. When five modules each knew it,
review re-wrote compile's files with its own manifest and dataset writers, and every reader
re-parsed the manifest defensively. Here the manifest is read once into a typed `Manifest`
(compiler/io/buildrecords.py) whose format is checked at that point, with a located error for
anything else; every write is atomic (compiler/io/fsutil.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from compiler.errors import BuildError
from compiler.io.buildrecords import FORMAT, MANIFEST, Manifest, NodeStats, Provenance, reason_counts
from compiler.io.fsutil import atomic_write, jsonl_text, read_jsonl, settle_writes

CARD = "README.md"
REPORT = "report.html"
MIXES = "mixes"
VERDICTS = "reviews/verdicts.jsonl"
NODE_FILES = ("train", "rejected", "eval")
NOT_A_BUILD_HINT = "pass the folder given to `kdc compile --out`"

__all__ = ["FORMAT", "MANIFEST", "BuildDir", "Manifest", "NodeStats", "Provenance", "load_build",
           "read_manifest", "node_path", "node_files", "write_node", "write_manifest"]


# ------------------------------------------------------------------------------------------- paths
def node_path(root: Path, node_id: str, name: str) -> Path:
    """nodes/<node_id>/<name>, refusing ids that would leave the build directory."""
    parts = PurePosixPath(node_id).parts
    if (not node_id or node_id.startswith("/") or "\\" in node_id
            or any(p in ("", ".", "..") for p in parts) or "\x00" in node_id):
        raise BuildError(f"bad node id {node_id!r} in {MANIFEST}", path=str(root / MANIFEST),
                         hint="node ids are '/'-separated folder paths relative to the taxonomy root")
    return root / "nodes" / Path(*parts) / name


def node_files(node_id: str) -> dict[str, str]:
    """The manifest's `files` of a node: paths relative to the build."""
    return {k: f"nodes/{node_id}/{k}.jsonl" for k in NODE_FILES}


def verdicts_path(root: str | Path) -> Path:
    return Path(root) / VERDICTS


def sheet_path(root: Path, seed: int, fmt: str) -> Path:
    """Where `kdc review` draws a sheet by default."""
    return root / "reviews" / f"sheet-seed{seed}.{fmt}"


def manifest_path(root: str | Path) -> Path:
    return Path(root) / MANIFEST


# ------------------------------------------------------------------------------------------ reader
def read_manifest(root: Path) -> Manifest:
    """The typed manifest; a missing, broken or other-format one is a located BuildError."""
    path = root / MANIFEST
    if not path.is_file():
        raise BuildError(f"{root} is not a kdc build directory (no {MANIFEST})", hint=NOT_A_BUILD_HINT)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BuildError(f"{MANIFEST} is not valid JSON: {exc.msg}", path=str(path), line=exc.lineno,
                         column=exc.colno, hint="re-run kdc compile") from None
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt != FORMAT:
        line = next((n for n, ln in enumerate(text.splitlines(), 1) if '"format"' in ln), 1)
        raise BuildError(f"unknown build format {fmt!r} (this kdc reads format {FORMAT})", path=str(path),
                         line=line, hint="compile the build again with this kdc, or use the kdc that wrote it")
    return Manifest.from_json(data, str(path))


@dataclass
class BuildDir:
    """A build directory read into memory: the manifest and each node's JSONL lines."""

    root: Path
    manifest: Manifest
    train: dict[str, list[dict[str, Any]]]
    rejected: dict[str, list[dict[str, Any]]]
    evals: dict[str, list[dict[str, Any]]]

    @property
    def nodes(self) -> dict[str, NodeStats]:
        return self.manifest.nodes

    def provenance(self, sample: dict[str, Any]) -> Provenance:
        return Provenance.from_json(sample.get("metadata"))

    def file(self, node_id: str, kind: str) -> Path:
        """A node's train / rejected / eval file."""
        return self.root / self.nodes[node_id].files[kind]

    def mix_files(self) -> list[str]:
        """Every SFT mix file (the manifest's and mixes/**/*.jsonl with their sources), refusing a
        manifest that names one outside the build."""
        paths = {str(m["path"]) for m in self.manifest.mixes.values() if isinstance(m, dict) and m.get("path")}
        paths |= {p.relative_to(self.root).as_posix() for p in (self.root / "mixes").rglob("*.jsonl")}
        root = self.root.resolve()
        for p in paths:
            if not (root / p).resolve().is_relative_to(root):
                raise BuildError(f"{MANIFEST} names a mix outside the build directory: {p!r}",
                                 path=str(self.root / MANIFEST))
        return sorted(paths)


def load_build(build_dir: str | Path, head: int | None = None) -> BuildDir:
    """The build read back. head: only the first `head` lines of each node file (the report's
    examples after a compile: the card and the figures come from the manifest; reading back
    every row was most of their time at 100k samples)."""
    root = Path(build_dir)
    manifest = read_manifest(root)
    train, rejected, evals = {}, {}, {}
    for node_id in sorted(manifest.nodes):
        train[node_id] = read_jsonl(node_path(root, node_id, "train.jsonl"), head=head)
        rejected[node_id] = read_jsonl(node_path(root, node_id, "rejected.jsonl"), head=head)
        evals[node_id] = read_jsonl(node_path(root, node_id, "eval.jsonl"), head=head)
    return BuildDir(root, manifest, train, rejected, evals)


def load_verdicts(root: str | Path) -> dict[str, dict[str, Any]]:
    """reviews/verdicts.jsonl: id -> the last verdict line for that id (the contract compile relies on)."""
    return {str(v["id"]): v for v in read_jsonl(verdicts_path(root),
                                                hint="fix or remove the line; `kdc review --apply` writes this file")
            if v.get("id")}


def mix_path(root: Path, entry: dict[str, Any], name: str) -> Path:
    """A mix's file, by the manifest's `mixes` entry (train reads it)."""
    return root / (entry.get("path") or mix_files(name)["path"])


def mix_files(phase: str) -> dict[str, str]:
    """A mix's file and its recipe, relative to the build (the manifest's `mixes` entry)."""
    return {"path": f"{MIXES}/{phase}.jsonl", "recipe": f"{MIXES}/{phase}.recipe.yaml"}


def mixes_dir(root: Path) -> Path:
    """mixes/: the SFT mixes, their recipes and (under sources/) what the recipes draw from."""
    return Path(root) / MIXES


def write_mix_file(mixes: Path, rel: str, text: str) -> None:
    """A mix, recipe or mix source, atomically (`rel` relative to mixes/, as recipes name them)."""
    atomic_write(mixes / rel, text)


def manifest_digest(root: Path) -> tuple[Path, str]:
    """The manifest's path and sha256 (a trained model records which build it came from)."""
    path = root / MANIFEST
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ writer
def write_node(root: Path, node_id: str, train: Iterable[dict[str, Any]], rejected: Iterable[dict[str, Any]],
               evals: Iterable[dict[str, Any]] | None = None, views: Iterable[dict[str, Any]] | None = None) -> None:
    """A node's train.jsonl and rejected.jsonl (and eval.jsonl, views.jsonl when given), each atomically."""
    atomic_write(node_path(root, node_id, "train.jsonl"), jsonl_text(train))
    atomic_write(node_path(root, node_id, "rejected.jsonl"), jsonl_text(rejected))
    if evals is not None:
        atomic_write(node_path(root, node_id, "eval.jsonl"), jsonl_text(evals))
    if views is not None:  # knowledge leaves with augmentation: every view, accepted or not
        atomic_write(node_path(root, node_id, "views.jsonl"), jsonl_text(views))


def write_manifest(root: Path, manifest: Manifest) -> None:
    """The manifest, last: it is the build's commit point."""
    atomic_write(root / MANIFEST, json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n")


def rewrite_node(view: BuildDir, node_id: str, train: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> None:
    """A reviewed node: its two files rewritten, and its manifest entry (counts, reasons, lengths)
    made to match them. The caller writes the manifest when every change is in."""
    write_node(view.root, node_id, train, rejected)
    view.train[node_id], view.rejected[node_id] = train, rejected
    entry = view.nodes[node_id]
    entry.accepted = len(train)
    entry.shortfall = max(0, entry.target - entry.accepted)
    entry.rejected = reason_counts(str(r.get("reason")) for r in rejected)
    records = [s.get("record") or {} for s in train]
    entry.lengths = {"question_words": [len(str(r.get("question") or "").split()) for r in records],
                     "answer_words": [len(str(r.get("answer") or "").split()) for r in records]}
    view.manifest.recount()


def rewrite_mix(view: BuildDir, rel: str, rows: list[dict[str, Any]]) -> None:
    """A mix (or mix source) file rewritten after a review; the manifest's row counts follow."""
    atomic_write(view.root / rel, jsonl_text(rows))
    for mix in view.manifest.mixes.values():
        if isinstance(mix, dict) and mix.get("path") == rel:
            by = Counter(str((r.get("metadata") or {}).get("source")) for r in rows)
            mix["rows"] = len(rows)
            mix["by_source"] = dict(sorted(by.items()))
            if "shares" in mix:
                mix["shares"] = {k: round(v / len(rows), 4) for k, v in sorted(by.items())} if rows else {}


def append_verdicts(root: Path, lines: list[dict[str, Any]]) -> None:
    """Add verdict lines to reviews/verdicts.jsonl (the whole file rewritten atomically)."""
    path = verdicts_path(root)
    prior = path.read_text(encoding="utf-8") if path.is_file() else ""
    atomic_write(path, prior + ("\n" if prior and not prior.endswith("\n") else "") + jsonl_text(lines))


def write_applied_sheet(root: Path, name: str, data: bytes) -> None:
    atomic_write(root / "reviews" / "applied" / name, data)


def write_card_file(root: Path, text: str) -> Path:
    """README.md, the dataset card (derived from the files above)."""
    atomic_write(root / CARD, text)
    return root / CARD


def write_report_file(root: Path, text: str) -> Path:
    """report.html (derived from the files above)."""
    atomic_write(root / REPORT, text)
    return root / REPORT


def apply_paths(root: Path, node_ids: Iterable[str], mixes: Iterable[str], applied: str) -> list[str]:
    """Every file `kdc review --apply` may change, relative to the build (what its journal saves)."""
    rels = [VERDICTS, f"reviews/applied/{applied}", MANIFEST, CARD, REPORT, *mixes]
    for n in node_ids:
        rels += [node_path(root, n, f).relative_to(root).as_posix() for f in ("train.jsonl", "rejected.jsonl")]
    return rels


def remove_stale(root: Path, current: set[str]) -> None:
    """Drop nodes/<id> files left by leaves that no longer exist (only the files directly in the
    stale folder: a live child leaf's folder, nodes/<id>/<child>, lies inside it), and hf/, the
    Hugging Face copies earlier kdc versions wrote (they would go stale next to the JSONL)."""
    settle_writes()
    shutil.rmtree(root / "hf", ignore_errors=True)
    base = root / "nodes"
    if not base.is_dir():
        return
    for found in sorted(base.rglob("train.jsonl")):
        folder = found.parent
        if folder.relative_to(base).as_posix() in current:
            continue
        for entry in folder.iterdir():
            if entry.is_file() or entry.is_symlink():
                entry.unlink()
        while folder != base and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
