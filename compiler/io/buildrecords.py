"""The build directory's typed records: `Manifest`, `NodeStats` (a manifest node entry) and
`Provenance` (a sample's metadata), each with `from_json` / `to_json`.

Why typed: compile writes these, and review, report, card, train and eval read them. As dict
literals every reader re-parsed them defensively; as records the shape is stated once, checked
once when read (compiler/io/builddir.py), and `to_json` reproduces compile's key order so a
re-written manifest is byte-identical. docs/build-layout.md is the contract these follow.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from compiler.errors import BuildError

FORMAT = 1  # the one build-directory format; the reader refuses any other
MANIFEST = "manifest.json"  # its commit point (compiler/io/builddir.py); here, where the CLI reads it cheaply


def _pick(cls, data: Any, where: str, path: str) -> dict[str, Any]:
    """The record's fields out of a JSON object: a missing required key is a located error,
    an unknown key too (a build written by another kdc format)."""
    if not isinstance(data, dict):
        raise BuildError(f"{where} must be a JSON object", path=path, hint="re-run kdc compile")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise BuildError(f"{where} has unknown key(s) {', '.join(unknown)}", path=path,
                         hint="written by another kdc version? re-run kdc compile")
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - set(data))
    if missing:
        raise BuildError(f"{where} lacks key(s) {', '.join(missing)}", path=path, hint="re-run kdc compile")
    for f in fields(cls):
        if f.name in data and not _is(data[f.name], str(f.type)):
            raise BuildError(f"{where}: `{f.name}` must be {f.type}, not {type(data[f.name]).__name__}",
                             path=path, hint="re-run kdc compile")
    return data


_TYPES = {"int": int, "float": (int, float), "str": str, "dict": dict, "list": list}


def _is(value: Any, annotation: str) -> bool:
    """value fits the field's annotation, at its outer level ('int', 'dict[str, int]', 'float | None')."""
    for alt in annotation.split(" | "):
        name = alt.split("[", 1)[0].strip()
        if name == "None" and value is None:
            return True
        if name in _TYPES and isinstance(value, _TYPES[name]) and not isinstance(value, bool):
            return True
        if name == "Any":
            return True
    return False


@dataclass
class NodeStats:
    """One leaf's summary in the manifest (`nodes[<node_id>]`)."""

    kind: str
    target: int
    accepted: int
    shortfall: int
    attempts: int
    rejected: dict[str, int]  # reason code -> count
    stopped: str | None
    pii_redacted: int
    eval_seeds: int
    train_seeds: int
    chunks: int
    tokens: dict[str, int]  # prompt, completion
    cost_usd: float | None  # None: the teacher's price is unknown
    diversity: dict[str, float]
    scores: dict[str, list[float]]  # grounding, judge
    lengths: dict[str, list[int]]  # question_words, answer_words
    review: dict[str, Any]  # reviewed, rejected, flagged
    run: dict[str, Any]  # teacher_calls, cache_hits, teacher_tokens of the run that wrote it
    files: dict[str, str]  # train, rejected, eval: paths relative to the build
    coverage: dict[str, Any] | None = None  # knowledge only: chunks, covered, share
    views: dict[str, Any] | None = None  # knowledge with augmentation: accepted/rejected views, units

    ORDER = ("kind", "target", "accepted", "shortfall", "attempts", "rejected", "stopped", "pii_redacted",
             "eval_seeds", "train_seeds", "chunks", "views", "coverage", "tokens", "cost_usd", "diversity", "scores",
             "lengths", "review", "run", "files")

    @property
    def flagged(self) -> bool:
        return self.review.get("flagged") is True

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.ORDER if k not in ("coverage", "views") or getattr(self, k) is not None}

    @classmethod
    def from_json(cls, data: Any, where: str = "node", path: str = "") -> NodeStats:
        return cls(**_pick(cls, data, where, path))


def review_entry(reviewed: int, rejected: int) -> dict[str, Any]:
    """`nodes[*].review`: flagged means most of the reviewed samples were rejected."""
    return {"reviewed": reviewed, "rejected": rejected, "flagged": rejected * 2 > reviewed > 0}


@dataclass
class Manifest:
    """The build's summary; written last by compile (its commit point), rewritten by review."""

    kdc_version: str
    taxonomy: dict[str, str]  # root, content_hash
    teacher: dict[str, Any]
    judge: dict[str, Any]
    templates: dict[str, str]
    config: dict[str, Any]
    versions: dict[str, str]
    nodes: dict[str, NodeStats]
    broken: dict[str, dict[str, str]]
    mixes: dict[str, dict[str, Any]]
    totals: dict[str, Any]
    format: int = FORMAT
    review_calibration: dict[str, Any] | None = None  # after `kdc review --apply` on a judged build

    ORDER = ("format", "kdc_version", "taxonomy", "teacher", "judge", "templates", "config", "versions",
             "nodes", "broken", "mixes", "totals", "review_calibration")

    @property
    def seed(self) -> int:
        seed = self.config.get("seed")
        return seed if isinstance(seed, int) else 0

    def recount(self) -> None:
        """totals' sample counts from the node entries (after compile or a review changed them)."""
        nodes = self.nodes.values()
        self.totals["target"] = sum(n.target for n in nodes)
        self.totals["accepted"] = sum(n.accepted for n in nodes)
        self.totals["shortfall"] = sum(n.shortfall for n in nodes)
        self.totals["rejected"] = sum(sum(n.rejected.values()) for n in nodes)

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.ORDER if k != "review_calibration" or self.review_calibration is not None}
        out["nodes"] = {n: s.to_json() for n, s in self.nodes.items()}
        return out

    @classmethod
    def from_json(cls, data: Any, path: str = "") -> Manifest:
        d = dict(_pick(cls, data, "the manifest", path))
        if not isinstance(d["nodes"], dict):
            raise BuildError("the manifest's `nodes` must be an object", path=path, hint="re-run kdc compile")
        d["nodes"] = {str(n): NodeStats.from_json(e, f"node {n!r}", path) for n, e in d["nodes"].items()}
        return cls(**d)


@dataclass
class Provenance:
    """A sample's `metadata` (docs/build-layout.md, a sample line): where it came from and what
    judged it. Readers use the typed fields; `to_json` gives back the line's dict unchanged."""

    node_id: str = ""
    kind: str = ""
    leaf_sha256: str | None = None
    seeds_shown: list[int] = field(default_factory=list)
    document: dict[str, Any] | None = None  # knowledge: repo, commit, file, start, end, sha256
    gates: dict[str, Any] = field(default_factory=dict)  # grounding, judge: {rubric: score}, ...
    review: dict[str, Any] | None = None  # verdict, by, at, why: after `kdc review --apply`
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the whole metadata object

    @property
    def judge_scores(self) -> dict[str, Any]:
        judge = self.gates.get("judge")
        return judge if isinstance(judge, dict) else {}

    @classmethod
    def from_json(cls, data: Any) -> Provenance:
        d = data if isinstance(data, dict) else {}
        shown = d.get("seeds_shown")
        return cls(node_id=str(d.get("node_id") or ""), kind=str(d.get("kind") or ""),
                   leaf_sha256=d.get("leaf_sha256"),
                   seeds_shown=[i for i in shown if isinstance(i, int)] if isinstance(shown, list) else [],
                   document=d.get("document") if isinstance(d.get("document"), dict) else None,
                   gates=d.get("gates") if isinstance(d.get("gates"), dict) else {},
                   review=d.get("review") if isinstance(d.get("review"), dict) else None, raw=d)

    def to_json(self) -> dict[str, Any]:
        out = dict(self.raw)
        if self.review is not None:
            out["review"] = self.review
        return out


def reason_counts(reasons) -> dict[str, int]:
    """`nodes[*].rejected`: reason code -> count, in code order."""
    return dict(sorted(Counter(reasons).items()))
