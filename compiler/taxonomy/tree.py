"""The taxonomy tree: folders as a networkx DiGraph, leaves = folders holding qna.yaml.

Node ids are '/'-joined folder paths relative to the root ("" is the root). Each node has
attributes `kind` ("branch" for inner folders), `leaf`, `path`; leaves also `version`,
`content`, `content_hash`, `file` and a `record` (records.Leaf).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from compiler.errors import TaxonomyError
from compiler.records import Leaf, NodeKind
from compiler.io.yamlload import YamlLoadError, load_bytes, read_bytes

if TYPE_CHECKING:  # networkx costs ~0.1 s to import: built on first use (Taxonomy.graph)
    import networkx as nx

QNA = "qna.yaml"
KIND_FOLDERS = {"compositional_skills": "skill", "knowledge": "knowledge",
                "foundational_skills": "foundational_skill"}
SKIP_DIRS = {".git", ".github", "node_modules", "__pycache__", ".venv"}


def is_qna_like(name: str) -> bool:
    """Names contributors use for the qna file; only `qna.yaml` is valid, the rest must be reported."""
    low = name.lower()
    return low in ("qna.yaml", "qna.yml")


@dataclass(frozen=True)
class FoundFile:
    path: Path  # absolute, resolved
    rel: str  # relative to the root, '/'-separated, as found (not resolved)


@dataclass(frozen=True)
class WalkProblem:
    rel: str
    rule: str
    message: str
    hint: str


def walk(root: Path) -> tuple[list[FoundFile], list[WalkProblem]]:
    """Every qna-like file under root, sorted; symlink loops and escapes are problems, not crashes.

    A symlink is followed only if it stays inside the root; other names than qna-like files
    are never opened, so a broken link to, say, an image is not the taxonomy's problem."""
    root = root.resolve()
    found: list[FoundFile] = []
    problems: list[WalkProblem] = []
    visited: set[tuple[int, int]] = set()

    def visit(directory: Path, rel_parts: tuple[str, ...], ancestors: frozenset[tuple[int, int]],
              linked: bool) -> None:
        try:
            st = directory.stat()
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            problems.append(WalkProblem("/".join(rel_parts) or ".", "unreadable-path",
                                        f"cannot read folder: {exc.strerror or exc}", "check its permissions"))
            return
        ident = (st.st_dev, st.st_ino)
        if ident in visited:  # reached again through a symlink: its files are already listed
            return
        visited.add(ident)
        ancestors = ancestors | {ident}
        for entry in entries:
            rel = "/".join(rel_parts + (entry.name,))
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if entry.is_symlink():
                try:
                    target = Path(entry.path).resolve(strict=True)
                except (OSError, RuntimeError):
                    if _loops(entry.path):
                        problems.append(WalkProblem(rel, "symlink-loop", "symlink loop: the link points back to itself",
                                                    "remove the symlink"))
                    elif is_qna_like(entry.name):
                        problems.append(WalkProblem(rel, "broken-symlink", "symlink target does not exist",
                                                    "replace the symlink with the file itself"))
                    continue
                if not (is_dir or is_qna_like(entry.name)):
                    continue
                if not _inside(target, root):
                    problems.append(WalkProblem(rel, "path-escapes-root",
                                                "symlink points outside the taxonomy root",
                                                "taxonomy files must live inside the taxonomy; copy the file in"))
                    continue
                if is_dir:
                    try:
                        tst = target.stat()
                    except OSError:
                        continue
                    if (tst.st_dev, tst.st_ino) in ancestors:
                        problems.append(WalkProblem(rel, "symlink-loop",
                                                    "symlink loop: the link points to a folder that contains it",
                                                    "remove the symlink"))
                        continue
            via_link = linked or entry.is_symlink()
            if is_dir:
                if entry.name not in SKIP_DIRS:
                    visit(Path(entry.path), rel_parts + (entry.name,), ancestors, via_link)
            elif is_qna_like(entry.name):
                path = Path(entry.path)
                found.append(FoundFile(path.resolve() if via_link else path, rel))

    visit(root, (), frozenset(), False)
    return found, problems


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _loops(path: str) -> bool:
    try:
        Path(path).resolve(strict=True)
        return False
    except RuntimeError:  # "Symlink loop from ..."
        return True
    except OSError as exc:
        return exc.errno == errno.ELOOP


def kind_of(rel: str, content: object) -> NodeKind:
    """Kind from the nearest enclosing kind folder, else from content (as InstructLab does)."""
    parts = rel.split("/")[:-1]
    base = None
    for part in reversed(parts):
        if part in KIND_FOLDERS:
            base = KIND_FOLDERS[part]
            break
    if base is None:
        base = "knowledge" if isinstance(content, dict) and "document" in content else "skill"
    if base == "skill":
        seeds = content.get("seed_examples") if isinstance(content, dict) else None
        grounded = isinstance(seeds, list) and any(isinstance(s, dict) and s.get("context") for s in seeds)
        return "grounded_skill" if grounded else "freeform_skill"
    return base  # type: ignore[return-value]


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Taxonomy:
    """A loaded taxonomy: its leaves, and the tree as a networkx DiGraph.

    The graph is built on first use from the leaves (networkx takes ~0.1 s to import): a compile
    plans and sends its first requests from the leaves alone, and builds the tree while they are
    in flight (compile/scheduler.py, `warm_up`)."""

    def __init__(self, root: Path, leaves: list[Leaf]):
        self.root = root
        self._leaves = sorted(leaves, key=lambda leaf: leaf.node_id)
        self._by_id = {leaf.node_id: leaf for leaf in self._leaves}

    @functools.cached_property
    def graph(self) -> nx.DiGraph:
        """A node per folder from the root ("") down, edges parent -> child; leaves carry their
        version, content, content_hash, file and record."""
        import networkx as nx

        graph = nx.DiGraph()
        graph.add_node("", kind="branch", leaf=False, path=str(self.root))
        for leaf in self._leaves:
            parts = leaf.node_id.split("/") if leaf.node_id else []
            parent = ""
            for i in range(1, len(parts) + 1):
                nid = "/".join(parts[:i])
                if nid not in graph:
                    graph.add_node(nid, kind="branch", leaf=False, path=str(self.root / nid))
                    graph.add_edge(parent, nid)
                parent = nid
            graph.nodes[leaf.node_id].update(kind=leaf.kind, leaf=True, version=leaf.version, content=leaf.content,
                                             content_hash=leaf.content_hash, file=leaf.file, record=leaf)
        return graph

    def leaves(self) -> list[Leaf]:
        return list(self._leaves)

    def leaf(self, node_id: str) -> Leaf:
        return self._by_id[node_id]

    def siblings(self, node_id: str) -> list[str]:
        """Other leaves under the same parent folder (for cross-leaf near-duplicate checks)."""
        graph = self.graph
        if node_id not in graph:
            return []
        parents = list(graph.predecessors(node_id))
        if not parents:
            return []
        return sorted(n for n in graph.successors(parents[0]) if n != node_id and graph.nodes[n].get("leaf"))

    def content_hash(self) -> str:
        """One hash for the whole taxonomy: every leaf's id and file hash."""
        h = hashlib.sha256()
        for leaf in self.leaves():
            h.update(f"{leaf.node_id}\0{leaf.content_hash}\n".encode())
        return h.hexdigest()


def load_taxonomy(root: str | Path) -> Taxonomy:
    """Load every qna.yaml under root. Raises TaxonomyError on unreadable files; schema validity
    is `validate`'s job (compile runs validate first)."""
    root = Path(root)
    if not root.is_dir():
        raise TaxonomyError(f"taxonomy root {root} is not a folder", hint="pass the folder holding the taxonomy")
    root = root.resolve()
    files, problems = walk(root)
    if problems:
        p = problems[0]
        raise TaxonomyError(p.message, path=p.rel, hint=p.hint)
    leaves: list[Leaf] = []
    for f in files:
        if f.rel.rsplit("/", 1)[-1] != QNA:
            raise TaxonomyError(f"file must be named {QNA}", path=f.rel, hint=f"rename it to {QNA}")
        try:
            raw = read_bytes(f.path)
            loaded = load_bytes(raw)
        except YamlLoadError as exc:
            raise TaxonomyError(exc.issue.message, path=f.rel, line=exc.issue.line,
                                column=exc.issue.column, hint=exc.issue.hint) from None
        if not isinstance(loaded.data, dict):
            raise TaxonomyError("top level must be a mapping", path=f.rel, line=1, column=1,
                                hint="start the file with `version:` and the other keys")
        node_id = f.rel.rsplit("/", 1)[0] if "/" in f.rel else ""
        version = loaded.data.get("version", 1)
        leaves.append(Leaf(node_id=node_id, file=f.rel, kind=kind_of(f.rel, loaded.data),
                           version=version if isinstance(version, int) else 1, content=loaded.data,
                           content_hash=hashlib.sha256(raw).hexdigest()))
    return Taxonomy(root, leaves)
