"""The package's shape (docs/architecture.md): stage subpackages, short modules, no import cycles,
imports pointing down the pipeline, one module talking to litellm, one knowing manifest.json.

Imports are read with `ast`, not by importing, so the check costs nothing and sees every module."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "compiler"
MAX_LINES = 400

# The layers, lowest first (docs/architecture.md). A module may import its own layer and the ones below.
LAYERS = [
    ("core", ["compiler", "compiler.errors", "compiler.records", "compiler.chat", "compiler.resources",
              "compiler.minhash"]),
    ("io", ["compiler.io"]),
    ("settings", ["compiler.config", "compiler.trust", "compiler.augconfig"]),
    ("taxonomy", ["compiler.taxonomy"]),
    ("validate", ["compiler.validate"]),
    ("llm", ["compiler.llm"]),
    ("compile/gates", ["compiler.compile", "compiler.gates"]),
    ("mix", ["compiler.mix"]),
    ("train/report/review", ["compiler.train", "compiler.report", "compiler.review"]),
    ("cli/api", ["compiler.cli", "compiler.__main__", "compiler.api"]),
]
# Imports inside functions that may point up, with why: compile's build driver finishes a build
# by writing its mixes, card and report (kdc compile does all of it); the package root's lazy
# library API (PEP 562 __getattr__) reaches every stage.
CALL_UPS = {("compiler.compile", "compiler.mix"), ("compiler.compile", "compiler.report")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_pkg: bool) -> list[str]:
    """The compiler modules an import statement loads (a `from pkg import mod` loads pkg.mod)."""
    if isinstance(node, ast.Import):
        found = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            here = name.split(".") if is_pkg else name.split(".")[:-1]
            base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
        found = [base] + [f"{base}.{a.name}" for a in node.names]
    return [t for t in found if t in MODULES and t != name]


def _imports(name: str, path: Path) -> tuple[set[str], set[str]]:
    """(module-level, inside-function) compiler imports; `if TYPE_CHECKING:` blocks are skipped."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    top: set[str] = set()

    def visit(stmts: list[ast.stmt]) -> None:
        for n in stmts:
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                top.update(_targets(n, name, is_pkg))
            elif isinstance(n, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(n.test):
                    visit(n.body)
                    visit(n.orelse)
            elif isinstance(n, ast.Try):
                visit(n.body)
                visit(n.orelse)
                visit(n.finalbody)
                for h in n.handlers:
                    visit(h.body)

    visit(tree.body)
    every = {t for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for t in _targets(n, name, is_pkg)}
    return top, every - top


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> tuple[int, str]:
    """(layer index, the layer's matching prefix) by the longest prefix."""
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (i, p)
    assert best is not None, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return best


def test_the_stages_are_subpackages():
    subpackages = sorted(p.parent.name for p in PKG.glob("*/__init__.py"))
    assert len(subpackages) >= 5, subpackages
    for stage in ("io", "taxonomy", "validate", "compile", "llm", "gates", "mix", "train", "report", "review", "cli"):
        assert stage in subpackages


def test_no_module_is_over_400_lines():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles found by a depth-first walk (each as the path that closes it)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                walk(dep, path + [dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    return cycles


def test_no_import_cycles_among_module_level_imports():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]  # the walk sees one
    cycles = _cycles({name: top for name, (top, _) in IMPORTS.items()})
    assert not cycles, cycles


def test_imports_point_down_the_layers():
    wrong = []
    for name, (top, inner) in IMPORTS.items():
        mine, my_prefix = _layer(name)
        for dep in sorted(top | inner):
            theirs, their_prefix = _layer(dep)
            if theirs <= mine:
                continue
            if dep in inner and (name == "compiler" or (my_prefix, their_prefix) in CALL_UPS):
                continue
            wrong.append(f"{name} ({LAYERS[mine][0]}) imports {dep} ({LAYERS[theirs][0]})")
    assert not wrong, wrong


def test_the_layer_check_sees_a_wrong_import():
    """The checks above read real imports: a made-up upward import is caught, relative ones resolve."""
    bad = ast.parse("from compiler.cli import main\nfrom ..records import Sample\n").body
    assert _targets(bad[0], "compiler.io.fsutil", False) == ["compiler.cli"]
    assert _targets(bad[1], "compiler.io.fsutil", False) == ["compiler.records"]
    assert _layer("compiler.cli")[0] > _layer("compiler.io.fsutil")[0]
    assert "compiler.validate.checks" in IMPORTS["compiler.cli.validate_cmd"][0]
    assert "compiler.minhash" in IMPORTS["compiler.gates.diversity"][0]


def test_one_module_talks_to_litellm():
    users = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for n in ast.walk(tree):
            mods = ([a.name for a in n.names] if isinstance(n, ast.Import)
                    else [n.module or ""] if isinstance(n, ast.ImportFrom) and not n.level else [])
            if any(m == "litellm" or m.startswith("litellm.") for m in mods):
                users.append(name)
                break
    assert len(users) == 1, f"modules importing litellm: {sorted(users)}"


def test_one_module_names_manifest_json():
    naming = sorted(name for name, path in MODULES.items() if "manifest.json" in path.read_text(encoding="utf-8"))
    assert len(naming) == 1, f"modules naming manifest.json: {naming}"
