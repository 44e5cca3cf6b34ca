"""Safe, bounded YAML loading that keeps node marks (line/column) for located errors.

Taxonomy files come from pull requests, so: safe loader only, a size cap, strict UTF-8,
no NUL bytes, duplicate keys reported (PyYAML silently keeps the last), alias expansion
bounded (billion-laughs), nesting depth bounded before libyaml's recursive composer can
overflow the C stack.

Verdicts must match InstructLab's reference, which reads with `Path.read_text` (universal
newlines) and parses with PyYAML's pure-Python SafeLoader. We parse with libyaml (10x faster)
and, when it refuses a document, ask the pure-Python loader: libyaml is stricter on a few
inputs (tabs inside block scalars), and the reference accepts those.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

try:  # libyaml is ~10x faster; the pure-Python loader gives the same nodes and marks.
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader
_PureLoader = yaml.SafeLoader

MAX_BYTES = 1_000_000  # a qna.yaml is a few KB; the biggest real one is ~60 KB
MAX_NODES = 200_000  # expanded node count (aliases counted at every use)
MAX_DEPTH = 64
SAFE_COMPOSE_DEPTH = 2_000  # libyaml's composer recurses in C: never let it go deeper than this
PURE_FALLBACK_MAX = 300_000  # the pure-Python re-check costs ~1 s per 300 KB: skip it beyond
_NESTING_CHARS = "[{-:?"  # every nesting level needs one of these: a cheap bound on depth
# Inputs libyaml accepts and PyYAML refuses (found by differential fuzzing): tabs as separators
# or after a scalar, and a comment right after a block scalar indicator.
_LIBYAML_LAXER = re.compile(r"\t|[|>][-+0-9]*#")


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


def read_bytes(path: Path, max_bytes: int = MAX_BYTES) -> bytes:
    """A file's bytes, refusing huge files before reading them."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        raise YamlLoadError(YamlIssue(1, 1, "not-a-file", "not a regular file",
                                      "replace it with a plain text file"))
    size = st.st_size
    if size > max_bytes:
        raise YamlLoadError(YamlIssue(1, 1, "file-too-large",
                                      f"file is {size:,} bytes, over the {max_bytes:,}-byte limit",
                                      "split the file or trim it; a qna.yaml is normally a few KB"))
    with path.open("rb") as fh:
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:  # grew while we read it
        raise YamlLoadError(YamlIssue(1, 1, "file-too-large", f"file is over the {max_bytes:,}-byte limit",
                                      "split the file or trim it; a qna.yaml is normally a few KB"))
    return raw


def decode(raw: bytes) -> str:
    """Strict UTF-8 text with universal newlines (as `Path.read_text`, which the reference uses)."""
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise YamlLoadError(YamlIssue(line, 1, "binary-file", "file contains NUL bytes: not a text file",
                                      "qna.yaml must be UTF-8 text"))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = len(before) - (before.rfind(b"\n") + 1) + 1
        raise YamlLoadError(YamlIssue(line, col, "invalid-utf8",
                                      f"invalid UTF-8 byte 0x{raw[exc.start]:02x}",
                                      "save the file as UTF-8")) from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def read_text(path: Path, max_bytes: int = MAX_BYTES) -> str:
    """Read a file as strict UTF-8 text, refusing huge and binary files."""
    return decode(read_bytes(path, max_bytes))


def _mark(node_or_mark) -> tuple[int, int]:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    if mark is None:
        return 1, 1
    return mark.line + 1, mark.column + 1


def _too_deep(line: int, col: int) -> YamlLoadError:
    return YamlLoadError(YamlIssue(line, col, "nesting-too-deep", f"nesting deeper than {MAX_DEPTH} levels",
                                   "a qna.yaml needs only a few levels of nesting"))


def _check_event_depth(text: str, loader=_Loader) -> None:
    """Exact nesting depth from an (iterative) event stream, stopping at MAX_DEPTH.

    Only run when the cheap character bound says the document *could* be deep."""
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep(*_mark(event.start_mark))
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _libyaml_depth_limit(exc: yaml.YAMLError) -> bool:
    """libyaml >= 0.2.6 (bundled since PyYAML 6.0.4) stops at 1,000 levels with a ScannerError,
    often before the first event of a deep flow collection, so our own depth bound never sees it."""
    return isinstance(exc, yaml.MarkedYAMLError) and "maximum nesting depth" in (exc.problem or "")


def _raise_too_deep(text: str, exc: yaml.MarkedYAMLError) -> None:
    """Locate the first level past MAX_DEPTH with the pure-Python parser (it streams, and its
    look-ahead is bounded), so the verdict and location do not depend on the libyaml version."""
    try:
        _check_event_depth(text, _PureLoader)
    except YamlLoadError:
        raise
    except (yaml.YAMLError, RecursionError):
        pass
    raise _too_deep(*_mark(exc.problem_mark))


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
            raise _too_deep(*_mark(node))
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
                duplicates.extend(_duplicate_keys(node))
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
    duplicates.sort(key=lambda d: (d.line, d.column))
    return duplicates


def _duplicate_keys(node: yaml.MappingNode) -> list[YamlIssue]:
    """Scalar keys defined twice in one mapping. Merge keys (`<<`) may repeat, as yamllint allows."""
    out: list[YamlIssue] = []
    keys: dict[Any, yaml.Node] = {}
    for k, _ in node.value:
        if not isinstance(k, yaml.ScalarNode) or k.tag == "tag:yaml.org,2002:merge":
            continue
        if k.value in keys:
            line, col = _mark(k)
            first = keys[k.value].start_mark.line + 1
            out.append(YamlIssue(line, col, "duplicate-key",
                                 f"duplicate key {k.value!r} (first defined on line {first}); "
                                 "YAML keeps only the last one",
                                 "remove or rename one of the two"))
        else:
            keys[k.value] = k
    return out


def _syntax_issue(exc: yaml.YAMLError, text: str) -> YamlIssue:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, col = _mark(mark)
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML forbids: no mark, a position
        before = text[: exc.position]
        line, col = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        return YamlIssue(line, col, "yaml-syntax",
                         f"character U+{ord(exc.character) if isinstance(exc.character, str) else exc.character:04X} "
                         "is not allowed in YAML", "delete the control character (often pasted from a PDF)")
    if isinstance(exc, yaml.MarkedYAMLError):
        msg = (exc.problem or "invalid YAML") + (f" ({exc.context})" if exc.context else "")
    else:
        msg = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
    hint = "fix the YAML syntax at this point (quote text that contains ': ' or starts with a special character)"
    low = msg.lower()
    if "\\t" in msg or "tab" in low:
        hint = "YAML does not allow tabs for indentation; use spaces"
    elif "block scalar" in low:
        hint = "after `|` or `>` start the text on the next line, indented"
    elif "could not find expected ':'" in low or "mapping values are not allowed" in low:
        hint = "quote the value (\"...\") if it contains ': ', or check the indentation of the lines above"
    elif "expected <block end>" in low:
        hint = "check the indentation: items of one list or mapping must start in the same column"
    return YamlIssue(line, col, "yaml-syntax", msg, hint)


def _compose(text: str, loader_cls) -> tuple[yaml.Node | None, Any]:
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        duplicates = _check_graph(node)
        return node, (loader.construct_document(node), duplicates)
    finally:
        loader.dispose()


def loads(text: str) -> LoadedYaml:
    """Parse text to (data, root node); raise YamlLoadError with a located issue if it can't be."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if sum(text.count(c) for c in _NESTING_CHARS) + 1 > SAFE_COMPOSE_DEPTH:
        try:
            _check_event_depth(text)
        except yaml.YAMLError as exc:
            if _libyaml_depth_limit(exc):
                _raise_too_deep(text, exc)
            # any other syntax error is reported below with the reference's own message
    try:
        try:
            node, rest = _compose(text, _Loader)
        except yaml.YAMLError as exc:
            if _libyaml_depth_limit(exc):
                _raise_too_deep(text, exc)
            if _Loader is _PureLoader or len(text) > PURE_FALLBACK_MAX:
                raise
            try:  # libyaml refuses a few documents that PyYAML (the reference) accepts
                node, rest = _compose(text, _PureLoader)
            except yaml.YAMLError as pure_exc:
                raise YamlLoadError(_syntax_issue(pure_exc, text)) from None
    except yaml.YAMLError as exc:
        raise YamlLoadError(_syntax_issue(exc, text)) from None
    except RecursionError:
        try:  # locate the first level past the bound when the stream can tell
            _check_event_depth(text, _PureLoader)
        except (yaml.YAMLError, RecursionError):
            pass
        raise YamlLoadError(YamlIssue(1, 1, "nesting-too-deep", "nesting too deep to parse",
                                      "a qna.yaml needs only a few levels of nesting")) from None
    except (ValueError, OverflowError, TypeError) as exc:  # e.g. a timestamp out of range
        raise YamlLoadError(YamlIssue(1, 1, "yaml-syntax", f"cannot load a value: {exc}",
                                      "fix the value (quote it to keep it as text)")) from None
    if (_Loader is not _PureLoader and ("\t" in text or ("#" in text and _LIBYAML_LAXER.search(text)))
            and len(text) <= PURE_FALLBACK_MAX):
        try:  # libyaml accepts tabs (and `|#`) where PyYAML, the reference's parser, refuses them
            for _ in yaml.parse(text, Loader=_PureLoader):
                pass
        except yaml.YAMLError as exc:
            raise YamlLoadError(_syntax_issue(exc, text)) from None
        except RecursionError:
            pass  # depth is bounded above; the pure parser itself does not recurse
    if node is None:
        return LoadedYaml(text, None, None, [])
    data, duplicates = rest
    return LoadedYaml(text, data, node, duplicates)


def load_bytes(raw: bytes) -> LoadedYaml:
    return loads(decode(raw))


def load_file(path: Path, max_bytes: int = MAX_BYTES) -> LoadedYaml:
    return loads(read_text(path, max_bytes))


def node_at(root: yaml.Node | None, path: list[Any] | tuple[Any, ...]) -> yaml.Node | None:
    """The YAML node at a JSON path (keys and indexes), or the deepest ancestor found."""
    node = root
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for k, v in reversed(node.value):  # the last duplicate wins, as in the loaded data
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


def key_node_at(root: yaml.Node | None, path: list[Any] | tuple[Any, ...], key: str) -> yaml.Node | None:
    """The key node `key` inside the mapping at `path` (for 'unknown key' errors)."""
    mapping = node_at(root, path)
    if isinstance(mapping, yaml.MappingNode):
        for k, _ in reversed(mapping.value):
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return k
    return mapping


def mark_of(node: yaml.Node | None) -> tuple[int, int]:
    return _mark(node) if node is not None else (1, 1)
