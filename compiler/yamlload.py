"""Safe, bounded YAML loading that keeps node marks (line/column) for located errors.

Taxonomy files come from pull requests, so: safe loader only, a size cap, strict UTF-8,
no NUL bytes, duplicate keys reported (PyYAML silently keeps the last), alias expansion
bounded (billion-laughs), nesting depth bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

try:  # libyaml is ~10x faster; the pure-Python loader gives the same nodes and marks.
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

MAX_BYTES = 1_000_000  # a qna.yaml is a few KB; the biggest real one is ~60 KB
MAX_NODES = 200_000  # expanded node count (aliases counted at every use)
MAX_DEPTH = 64


@dataclass(frozen=True)
class YamlIssue:
    """A located problem found while reading a YAML file (1-based line/column)."""

    line: int
    column: int
    rule: str
    message: str
    hint: str = ""


class YamlLoadError(Exception):
    def __init__(self, issue: YamlIssue):
        super().__init__(issue.message)
        self.issue = issue


@dataclass
class LoadedYaml:
    text: str
    data: Any
    node: yaml.Node | None
    duplicates: list[YamlIssue]


def read_text(path: Path, max_bytes: int = MAX_BYTES) -> str:
    """Read a file as strict UTF-8 text, refusing huge and binary files."""
    size = path.stat().st_size
    if size > max_bytes:
        raise YamlLoadError(YamlIssue(1, 1, "file-too-large",
                                      f"file is {size:,} bytes, over the {max_bytes:,}-byte limit",
                                      "split the file or trim it; a qna.yaml is normally a few KB"))
    with path.open("rb") as fh:
        raw = fh.read(max_bytes + 1)
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise YamlLoadError(YamlIssue(line, 1, "binary-file", "file contains NUL bytes: not a text file",
                                      "qna.yaml must be UTF-8 text"))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = len(before) - (before.rfind(b"\n") + 1) + 1
        raise YamlLoadError(YamlIssue(line, col, "invalid-utf8",
                                      f"invalid UTF-8 byte 0x{raw[exc.start]:02x}",
                                      "save the file as UTF-8")) from None


def _mark(node_or_mark) -> tuple[int, int]:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    if mark is None:
        return 1, 1
    return mark.line + 1, mark.column + 1


def _check_graph(root: yaml.Node) -> list[YamlIssue]:
    """Bound expanded size and depth (aliases re-use node objects); collect duplicate keys."""
    duplicates: list[YamlIssue] = []
    sizes: dict[int, int] = {}
    seen_dups: set[int] = set()
    # iterative post-order over the node DAG; aliases make it a DAG, never a cycle for SafeLoader
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if depth > MAX_DEPTH:
            line, col = _mark(node)
            raise YamlLoadError(YamlIssue(line, col, "nesting-too-deep",
                                          f"nesting deeper than {MAX_DEPTH} levels",
                                          "a qna.yaml needs only a few levels"))
        key = id(node)
        if key in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = 1
            continue
        children: list[yaml.Node]
        if isinstance(node, yaml.MappingNode):
            children = [c for pair in node.value for c in pair]
            if key not in seen_dups:
                seen_dups.add(key)
                keys: dict[Any, yaml.Node] = {}
                for k, _ in node.value:
                    if isinstance(k, yaml.ScalarNode):
                        if k.value in keys:
                            line, col = _mark(k)
                            first = keys[k.value].start_mark.line + 1
                            duplicates.append(YamlIssue(
                                line, col, "duplicate-key",
                                f"duplicate key {k.value!r} (first defined on line {first})",
                                "remove one of the two; YAML keeps only the last"))
                        else:
                            keys[k.value] = k
        else:
            children = list(node.value)
        if done:
            total = 1 + sum(sizes[id(c)] for c in children)
            if total > MAX_NODES:
                line, col = _mark(node)
                raise YamlLoadError(YamlIssue(line, col, "alias-bomb",
                                              f"document expands to more than {MAX_NODES:,} nodes (aliases)",
                                              "do not use YAML anchors/aliases to repeat content"))
            sizes[key] = total
        else:
            stack.append((node, depth, True))
            stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)
    return duplicates


def loads(text: str) -> LoadedYaml:
    """Parse text to (data, root node); raise YamlLoadError with a located issue if it can't be."""
    if text.startswith("\ufeff"):
        text = text[1:]
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            line, col = _mark(exc.problem_mark or exc.context_mark)
            msg = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
            hint = "fix the YAML syntax"
            if "\t" in text and ("found character '\\t'" in str(exc) or "tab" in msg):
                hint = "YAML does not allow tabs for indentation; use spaces"
            raise YamlLoadError(YamlIssue(line, col, "yaml-syntax", msg, hint)) from None
        except yaml.YAMLError as exc:
            raise YamlLoadError(YamlIssue(1, 1, "yaml-syntax", str(exc).splitlines()[0],
                                          "fix the YAML syntax")) from None
        except RecursionError:
            raise YamlLoadError(YamlIssue(1, 1, "nesting-too-deep", "nesting too deep to parse",
                                          "a qna.yaml needs only a few levels")) from None
        if node is None:
            return LoadedYaml(text, None, None, [])
        duplicates = _check_graph(node)
        try:
            data = loader.construct_document(node)
        except yaml.YAMLError as exc:
            line, col = _mark(getattr(exc, "problem_mark", None))
            raise YamlLoadError(YamlIssue(line, col, "yaml-syntax", str(exc).splitlines()[0],
                                          "fix the YAML value")) from None
        except (RecursionError, ValueError, OverflowError) as exc:
            raise YamlLoadError(YamlIssue(1, 1, "yaml-syntax", f"cannot load value: {exc}",
                                          "fix the YAML value")) from None
        return LoadedYaml(text, data, node, duplicates)
    finally:
        loader.dispose()


def load_file(path: Path, max_bytes: int = MAX_BYTES) -> LoadedYaml:
    return loads(read_text(path, max_bytes))


def node_at(root: yaml.Node | None, path: list[Any] | tuple[Any, ...]) -> yaml.Node | None:
    """The YAML node at a JSON path (keys and indexes), or the deepest ancestor found."""
    node = root
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    node = v
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def key_node_at(root: yaml.Node | None, path: list[Any], key: str) -> yaml.Node | None:
    """The key node `key` inside the mapping at `path` (for 'unknown key' errors)."""
    mapping = node_at(root, path)
    if isinstance(mapping, yaml.MappingNode):
        for k, _ in mapping.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return k
    return mapping


def mark_of(node: yaml.Node | None) -> tuple[int, int]:
    return _mark(node) if node is not None else (1, 1)
