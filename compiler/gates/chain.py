"""Quality gates between generation and mixing: every candidate is accepted or rejected with a
reason code (docs/build-layout.md), cheapest gate first.

Order: sanity -> confidence -> PII -> contamination -> seed copy -> exact dup -> near dup (node,
then siblings) -> grounding -> judge. An accepted sample joins the dedup indexes, so later
near-copies are rejected; the compile loop calls `check` one sample at a time in a fixed order,
which makes the decisions reproducible.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from compiler.llm.cache import Cache
from compiler.gates.diversity import (NEAR_DUP_THRESHOLD, NUM_PERM, Fingerprint, NearIndex, SmallIndex, shingles,
                                shingles_of_ids, token_ids, words)
from compiler.errors import ConfigError
from compiler.gates.pii import KINDS as PII_KINDS
from compiler.gates.piigate import redact_teacher_text, teacher_pii
from compiler.records import Record, Sample, Seed
from compiler.taxonomy.tree import Taxonomy

GROUNDED_KINDS = ("knowledge", "grounded_skill")
JUDGE_RUBRICS = ("faithfulness", "relevance", "format", "standalone")


@dataclass
class GateConfig:
    """Thresholds of every gate (kdc.yaml `gates:`); the defaults suit short chain-of-thought Q&A."""

    min_question_chars: int = 8
    max_question_chars: int = 2000
    max_answer_chars: int = 8000
    max_context_chars: int = 20000
    min_reasoning_steps: int = 1
    near_dup_threshold: float = NEAR_DUP_THRESHOLD  # Jaccard of word-bigram sets, same node / siblings
    seed_dup_threshold: float = NEAR_DUP_THRESHOLD  # against the node's own training seeds
    contamination_threshold: float = 0.5  # question+answer against any held-out eval seed
    contamination_question_threshold: float = 0.8  # question alone against eval questions
    num_perm: int = NUM_PERM
    grounding_threshold: float = 0.5  # share of the answer's content words found in the context
    pii: str = "redact"  # redact | drop | off
    pii_kinds: tuple[str, ...] = PII_KINDS
    min_mean_logprob: float | None = None  # e.g. -1.5; only applied when the teacher returns logprobs
    judge: str | None = None  # litellm model string; None = no judge
    judge_api_base: str | None = None
    judge_api_key_env: str | None = None  # name of the environment variable holding the judge's key
    judge_thresholds: dict[str, int] = field(default_factory=lambda: {r: 3 for r in JUDGE_RUBRICS})
    judge_timeout: float = 60.0
    judge_concurrency: int | None = None  # judge requests in flight; None: the teacher's --concurrency

    @classmethod
    def from_settings(cls, settings: dict | None, judge: str | None = None) -> "GateConfig":
        """From kdc.yaml's settings (its `gates:` section); `judge` (from `--judge`) wins over
        `gates.judge`. Unknown keys and bad values are ConfigErrors, not silent defaults."""
        settings = settings or {}
        section = settings.get("gates", {}) if isinstance(settings, dict) else None
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ConfigError("`gates:` must be a mapping", hint="e.g. gates: {near_dup_threshold: 0.6}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise ConfigError(f"unknown gates setting(s): {', '.join(unknown)}",
                              hint="known: " + ", ".join(sorted(known)))
        cfg = cls()
        for key, value in section.items():
            setattr(cfg, key, _coerce(key, value, getattr(cfg, key)))
        if judge is not None:
            cfg.judge = judge or None
        cfg.check()
        return cfg

    def check(self) -> None:
        for name in ("near_dup_threshold", "seed_dup_threshold", "contamination_threshold",
                     "contamination_question_threshold", "grounding_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"gates.{name} must be between 0 and 1, got {v}")
        if self.pii not in ("redact", "drop", "off"):
            raise ConfigError(f"gates.pii must be redact, drop or off, got {self.pii!r}")
        bad = sorted(set(self.pii_kinds) - set(PII_KINDS))
        if bad:
            raise ConfigError(f"gates.pii_kinds: unknown kind(s) {', '.join(bad)}",
                              hint="known: " + ", ".join(PII_KINDS))
        bad = sorted(set(self.judge_thresholds) - set(JUDGE_RUBRICS))
        if bad:
            raise ConfigError(f"gates.judge_thresholds: unknown rubric(s) {', '.join(bad)}",
                              hint="rubrics: " + ", ".join(JUDGE_RUBRICS))
        for rubric, v in self.judge_thresholds.items():
            if not isinstance(v, (int, float)) or not 1 <= v <= 5:
                raise ConfigError(f"gates.judge_thresholds.{rubric} must be a score from 1 to 5, got {v!r}")
        if self.judge_concurrency is not None and self.judge_concurrency < 1:
            raise ConfigError("gates.judge_concurrency must be at least 1")
        if self.num_perm < 16:
            raise ConfigError("gates.num_perm must be at least 16")
        if self.min_question_chars > self.max_question_chars:
            raise ConfigError("gates.min_question_chars is over gates.max_question_chars")

    def to_dict(self) -> dict[str, Any]:
        """The effective settings for the manifest (no secrets: only the key's variable name)."""
        from compiler.config import redact_url

        d = asdict(self)
        d["pii_kinds"] = list(self.pii_kinds)
        if self.judge_api_base:  # an endpoint may carry user:password@ (review §4.5)
            d["judge_api_base"] = redact_url(self.judge_api_base)
        return d


_OPTIONAL_STR = ("judge", "judge_api_base", "judge_api_key_env")


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Type-check one `gates:` value against its default's type."""
    if key == "judge_thresholds":
        if not isinstance(value, dict):
            raise ConfigError("gates.judge_thresholds must be a mapping", hint="e.g. {faithfulness: 4}")
        return {**default, **value}
    if key == "pii_kinds":
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("gates.pii_kinds must be a list of kinds", hint="known: " + ", ".join(PII_KINDS))
        return tuple(value)
    if value is None and (key in _OPTIONAL_STR or key in ("min_mean_logprob", "judge_concurrency")):
        return None
    if key in _OPTIONAL_STR or isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"gates.{key} must be a string, got {value!r}")
        return value
    if isinstance(default, int) or key == "judge_concurrency":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"gates.{key} must be an integer, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"gates.{key} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str | None  # rejection code, None when accepted
    detail: str
    scores: dict  # -> metadata.gates
    sample: Sample  # possibly PII-redacted
    evidence: dict = field(default_factory=dict)  # what the rejecting gate saw: span, score, threshold


@dataclass(frozen=True)
class Screened:
    """A candidate after the order-independent gates (Gatekeeper.screen), awaiting `decide`."""

    sample: Sample
    scores: dict  # the scores known before the dedup gates
    early: tuple[str, str, dict] | None  # first failure before the dedup against accepted samples
    key: bytes = b""
    sh: Any = None
    late: tuple[str, str, dict] | None = None  # first failure after it (grounding, judge)
    late_scores: dict | None = None
    redacted: bool = False


# ---------------------------------------------------------------- sanity --------------------
_ASKS = frozenset("""what which who whom whose when where why how is are was were do does did can could
should would will shall may might has have had list name give write compose create draft describe
explain summarize summarise extract identify find calculate compute solve determine compare classify
rewrite translate convert generate provide outline tell suggest state define show turn make produce
rate evaluate choose pick select sort rank count estimate predict analyze analyse answer complete
fill please use using based given according read review format prepare plan design help imagine act
pretend respond reply assume suppose consider let check edit correct fix improve paraphrase shorten
expand continue recommend brainstorm propose critique assess discuss argue prove verify match label
tag split simplify proofread grade score transform parse return output print implement code debug
refactor optimize optimise advise teach walk break add remove replace insert delete apply build
construct derive draw sketch express reformat organize organise group categorize categorise get update
combine take first""".split())
_CLAUSE = re.compile(r"[.!:;,\n]")  # an instruction starts a sentence or a clause ("Given X, list Y")
_MARKUP = re.compile(
    r"\{\{|\}\}|\{%|%\}|\{#|#\}"  # leftover Jinja
    r"|<\|[^|>\s]{1,40}\|>"  # <|im_start|>, <|assistant|>, <|eot_id|>
    r"|</?(?:s|bos|eos|pad|unk)>|<(?:start|end)_of_turn>|\[/?INST\]|<</?SYS>>"
    r"|^\s*#{2,}\s*(?:instruction|response|input|output|system|user|assistant)\b"
    r"|^\s*(?:system|user|assistant|human|ai|model)\s*:",
    re.IGNORECASE | re.MULTILINE)


def _asks(question: str) -> bool:
    """A question mark, or a clause that opens with a question word or an instruction verb."""
    return "?" in question or any(words(c)[:1] and words(c)[0] in _ASKS for c in _CLAUSE.split(question))


def _markup(text: str) -> set[str]:
    return {m.group(0).strip().lower() for m in _MARKUP.finditer(text)}


@dataclass(frozen=True)
class _NodeNorms:
    """What a node's own seed examples show is normal there: a skill whose prompts are statements
    (objection handling) or whose answers hold `{{ }}` (Helm, Jinja) is not junk for doing so."""

    asks: bool = True  # every seed question asks or instructs
    markup: frozenset[str] = frozenset()  # markup tokens the seeds themselves contain

    @classmethod
    def of(cls, seeds: list[Seed]) -> "_NodeNorms":
        if not seeds:
            return cls()
        marks: set[str] = set()
        for seed in seeds:
            for text in (seed.question, seed.answer, seed.context or ""):
                marks |= _markup(text)
        return cls(all(_asks(seed.question) for seed in seeds if seed.question), frozenset(marks))


def _sanity(rec: Record, cfg: GateConfig, norms: _NodeNorms = _NodeNorms(),
            reasoning: bool = True) -> tuple[str, str] | None:
    q, a = rec.question.strip(), rec.answer.strip()
    if not a:
        return "sanity-empty", "the answer is empty"
    if not q:
        return "sanity-question", "the question is empty"
    if len(q) < cfg.min_question_chars or len(q) > cfg.max_question_chars:
        return "sanity-length", (f"question is {len(q)} characters, outside "
                                 f"{cfg.min_question_chars}..{cfg.max_question_chars}")
    if len(a) > cfg.max_answer_chars:
        return "sanity-length", f"answer is {len(a)} characters, over {cfg.max_answer_chars}"
    if rec.context and len(rec.context) > cfg.max_context_chars:
        return "sanity-length", f"context is {len(rec.context)} characters, over {cfg.max_context_chars}"
    for name, text in (("question", q), ("answer", a), ("context", rec.context or ""),
                       *((f"reasoning step {i + 1}", s) for i, s in enumerate(rec.reasoning))):
        for m in _MARKUP.finditer(text):
            if m.group(0).strip().lower() not in norms.markup:
                return "sanity-markup", f"leftover template markup or role tag {m.group(0).strip()!r} in the {name}"
    if norms.asks and not _asks(q):
        return "sanity-question", "the question neither asks nor instructs anything"
    steps = [s for s in rec.reasoning if s and s.strip()]
    if reasoning and len(steps) < cfg.min_reasoning_steps:  # a leaf without reasoning asks for none
        return "sanity-reasoning", f"{len(steps)} reasoning step(s), want at least {cfg.min_reasoning_steps}"
    return None


# ---------------------------------------------------------------- grounding -----------------
_STOP = frozenset("""a an the and or but if then than so of to in on at by for from with without as into onto
about over under between through during before after above below up down out off is are was were be
been being am do does did done has have had having it its it's this that these those there here
their them they he she him her his hers we us our you your i me my mine not no yes can could should
would will shall may might must also just only very more most less least such what which who whom
whose when where why how all any both each few other some own same too s t don doesn didn isn aren
wasn weren one two because while which per via etc""".split())


def _stem(w: str) -> str:
    """A light suffix stripper (write/writes/writing -> writ): enough for lexical support."""
    if len(w) <= 3:
        return w
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("edly", ""), ("ed", ""), ("ly", ""),
                         ("es", ""), ("s", "")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: len(w) - len(suffix)] + repl
            break
    return w[:-1] if w.endswith("e") and len(w) > 3 else w


def support_score(answer: str, context: str, question: str = "") -> float:
    """Share of the answer's content words (stemmed; numbers count) found in the context or the
    question. Lexical, so it is fast and explainable; the judge covers paraphrase."""
    content = [_stem(w) for w in words(answer) if w not in _STOP]
    if not content:
        return 1.0
    source = {_stem(w) for w in words(context)} | {_stem(w) for w in words(question)}
    return sum(1 for w in content if w in source) / len(content)


# ---------------------------------------------------------------- gatekeeper ----------------
def _exact_key(text: str) -> str:
    return _exact_key_ids(token_ids(text))


def _exact_key_ids(ids: list[int]) -> bytes:
    """Texts equal up to case, spacing and punctuation share this key."""
    return hashlib.sha1(np.array(ids, dtype=np.uint64).tobytes()).digest()


def _seed_text(kind: str, seed: Seed) -> str:
    ctx = seed.context if (kind == "grounded_skill" and seed.context) else ""
    return "\n".join(p for p in (seed.question, ctx, seed.answer) if p)


def _probe(kind: str, question: str, context: str | None) -> str:
    """What a held-out question looks like to a student: the question, plus a grounded skill's context."""
    return question + ("\n" + context if kind == "grounded_skill" and context else "")


class Gatekeeper:
    """Stateful gate chain for one build: holds the dedup indexes and the per-node counts.

    Accepted samples go into one MinHash LSH index per family (a leaf and its siblings), so a
    candidate costs one query however big the tree; seeds and held-out eval seeds are few, so
    they sit in exact inverted indexes. Every match is confirmed by exact Jaccard."""

    def __init__(self, config: GateConfig, taxonomy: Taxonomy, train_seeds: dict[str, list[Seed]],
                 eval_seeds: dict[str, list[Seed]], judge_cache: Cache | None = None):
        self.config = config
        self.taxonomy = taxonomy
        self._kinds = {leaf.node_id: leaf.kind for leaf in taxonomy.leaves()}
        self._siblings: dict[str, frozenset[str]] = {}
        self._stats: dict[str, Counter] = {}
        self._families: dict[str, NearIndex] = {}
        self._exact: dict[bytes, tuple[str, str]] = {}  # normalised sample text -> (node, sample id)
        self._eval_exact: dict[bytes, str] = {}
        self._eval_full = SmallIndex(config.contamination_threshold)
        self._eval_probe = SmallIndex(config.contamination_question_threshold)
        for node_id in sorted(eval_seeds):  # held-out seeds of every node: nothing may resemble them
            kind = self._kinds.get(node_id, "freeform_skill")
            for i, seed in enumerate(eval_seeds[node_id]):
                label = f"{node_id}#eval{i}"
                full = _seed_text(kind, seed)
                self._eval_exact.setdefault(_exact_key(full), label)
                self._eval_full.add(label, shingles(full))
                self._eval_probe.add(label, shingles(_probe(kind, seed.question, seed.context)))
        self._seed_exact: dict[tuple[str, bytes], int] = {}  # (node, normalised seed text) -> index
        self._seeds: dict[str, SmallIndex] = {}
        self._norms = {node_id: _NodeNorms.of(seeds) for node_id, seeds in train_seeds.items()}
        for node_id in sorted(train_seeds):  # a copy of a node's own seed is not new data
            kind = self._kinds.get(node_id, "freeform_skill")
            index = self._seeds[node_id] = SmallIndex(config.seed_dup_threshold)
            for i, seed in enumerate(train_seeds[node_id]):
                text = _seed_text(kind, seed)
                self._seed_exact.setdefault((node_id, _exact_key(text)), i)
                index.add(i, shingles(text))
        self._judge = None
        if config.judge:
            from compiler.gates.judge import Judge  # litellm is heavy: only with a judge
            self._judge = Judge(config.judge, api_base=config.judge_api_base,
                                api_key_env=config.judge_api_key_env, timeout=config.judge_timeout,
                                thresholds=config.judge_thresholds, cache=judge_cache,
                                concurrency=config.judge_concurrency or 8, workers=None)

    def judging(self):
        """Context for a build: starts and stops the judge's client (its worker processes)."""
        return self._judge if self._judge is not None else contextlib.nullcontext()

    @property
    def judge_calls(self) -> int:
        """Requests sent to the judge in this build (cached verdicts are not asked again)."""
        return self._judge.calls if self._judge is not None else 0

    # -- helpers -----------------------------------------------------------------------------
    def _kind(self, sample: Sample) -> str:
        return self._kinds.get(sample.node_id) or sample.metadata.get("kind") or "freeform_skill"

    def _sibling_ids(self, node_id: str) -> frozenset[str]:
        if node_id not in self._siblings:  # a node the taxonomy does not know has no siblings
            known = node_id in self.taxonomy.graph
            self._siblings[node_id] = frozenset(self.taxonomy.siblings(node_id) if known else ())
        return self._siblings[node_id]

    def _count(self, node_id: str, key: str, n: int = 1) -> None:
        self._stats.setdefault(node_id, Counter())[key] += n

    def _reject(self, sample: Sample, reason: str, detail: str, evidence: dict, scores: dict) -> Verdict:
        self._count(sample.node_id, "checked")
        self._count(sample.node_id, "rejected:" + reason)
        return Verdict(False, reason, detail, scores, sample, evidence)

    def _family(self, node_id: str) -> NearIndex:
        parent = node_id.rsplit("/", 1)[0] if "/" in node_id else ""
        index = self._families.get(parent)
        if index is None:
            index = self._families[parent] = NearIndex(self.config.near_dup_threshold, self.config.num_perm)
        return index

    def _duplicate(self, node: str, key: bytes, sh: np.ndarray, probe: np.ndarray) -> tuple[str, str] | None:
        """(reason, detail) when the candidate copies an eval seed, a seed or an earlier sample."""
        if key in self._eval_exact:
            return "contaminated", f"copy of held-out eval seed {self._eval_exact[key]}"
        hit = self._eval_full.best(sh)
        if hit:
            return "contaminated", f"near-duplicate of held-out eval seed {hit[0]} (Jaccard {hit[1]:.2f})"
        hit = self._eval_probe.best(probe)
        if hit:
            return "contaminated", f"question near-duplicates held-out eval seed {hit[0]} (Jaccard {hit[1]:.2f})"
        if (node, key) in self._seed_exact:
            return "dup-seed", f"copy of training seed {self._seed_exact[(node, key)]}"
        seeds = self._seeds.get(node)
        hit = seeds.best(sh) if seeds is not None else None
        if hit:
            return "dup-seed", f"near-duplicate of training seed {hit[0]} (Jaccard {hit[1]:.2f})"
        return None

    def _exact_duplicate(self, node: str, key: bytes) -> tuple[str, str] | None:
        """(reason, detail) when an accepted sample has the same normalised text."""
        prior = self._exact.get(key)
        if prior:
            other, other_id = prior
            if other in self._sibling_ids(node):
                return "dup-sibling", f"exact duplicate of {other_id} in {other}"
            return "dup-exact", f"exact duplicate of {other_id}" + ("" if other == node else f" in {other}")
        return None

    def _near_duplicate(self, node: str, fp: Fingerprint) -> tuple[str, str] | None:
        found = self._family(node).matches(fp)
        for (other, label), sim in found:
            if other == node:
                return "dup-near", f"near-duplicate of {label} (Jaccard {sim:.2f})"
        siblings = self._sibling_ids(node)
        for (other, label), sim in found:
            if other in siblings:
                return "dup-sibling", f"near-duplicate of {label} in {other} (Jaccard {sim:.2f})"
        return None

    # -- the chain ---------------------------------------------------------------------------
    async def check(self, sample: Sample, *, context: str | None = None,
                    logprobs: list[float] | None = None) -> Verdict:
        """Run every gate on one candidate. `context` is the text the answer must be grounded in
        (a knowledge chunk, or a grounded skill's context); `logprobs` the teacher's token logprobs."""
        return self.decide(await self.screen(sample, context=context, logprobs=logprobs))

    async def screen(self, sample: Sample, *, context: str | None = None,
                     logprobs: list[float] | None = None) -> Screened:
        """Every gate whose verdict does not depend on which samples were accepted before: safe to
        run for many candidates at once, in any order (the judge included). `decide` then applies
        the dedup against accepted samples in the build's fixed order and picks the first failure
        in gate order, so the reasons are those of a one-at-a-time chain."""
        cfg = self.config
        kind = self._kind(sample)
        node = sample.node_id
        scores: dict[str, Any] = {}

        def early(reason: str, detail: str, evidence: dict | None = None) -> Screened:
            return Screened(sample, dict(scores), (reason, detail, evidence or {}))

        bad = _sanity(sample.record, cfg, self._norms.get(node, _NodeNorms()),
                      reasoning=sample.metadata.get("reasoning") is not False)
        if bad:
            return early(bad[0], bad[1])

        if logprobs:
            mean = sum(logprobs) / len(logprobs)
            if math.isfinite(mean):
                scores["confidence"] = round(mean, 4)
                if cfg.min_mean_logprob is not None and mean < cfg.min_mean_logprob:
                    return early("low-confidence", f"mean token logprob {mean:.3f} < {cfg.min_mean_logprob}",
                                 {"score": round(mean, 4), "threshold": cfg.min_mean_logprob})

        redacted = False
        if cfg.pii != "off":
            found = teacher_pii(sample.record, kind, context, cfg.pii_kinds)
            if found:
                kinds = sorted({f.finding.kind for f in found})
                if cfg.pii == "drop":
                    return early("pii", "personal data: " + ", ".join(kinds),
                                 {"matches": [f.to_json() for f in found[:10]]})
                sample = redact_teacher_text(sample, kind, context, cfg.pii_kinds)
                scores["pii_redacted"] = kinds
                redacted = True

        # one tokenisation serves all: the probe (question [+ grounded context]) is a prefix of the text
        rec = sample.record
        ctx_ids = token_ids(rec.context) if kind == "grounded_skill" and rec.context else []
        probe_ids = token_ids(rec.question) + ctx_ids
        ids = probe_ids + token_ids(rec.answer)
        key, sh = _exact_key_ids(ids), shingles_of_ids(ids)
        dup = self._duplicate(node, key, sh, shingles_of_ids(probe_ids))  # eval and seed copies: static
        if dup:
            return early(dup[0], dup[1], {"match": dup[1]})
        out = Screened(sample, dict(scores), None, key, sh, redacted=redacted)

        late: tuple[str, str, dict] | None = None
        if kind in GROUNDED_KINDS:
            ctx = context if context is not None else sample.record.context
            if not ctx or not ctx.strip():
                late = ("ungrounded", "no context to ground the answer in", {})
            else:
                score = support_score(sample.record.answer, ctx, sample.record.question)
                scores["grounding"] = round(score, 4)
                if score < cfg.grounding_threshold:
                    late = ("ungrounded", f"{score:.0%} of the answer's content words are in the context "
                                          f"(threshold {cfg.grounding_threshold:.0%})",
                            {"score": round(score, 4), "threshold": cfg.grounding_threshold})

        if late is None and self._judge is not None:
            ctx = context if context is not None else sample.record.context
            result = await self._judge.score(sample.record, ctx, kind)
            scores["judge"] = result.scores
            if result.error:
                late = ("judge", result.error, {})
            else:
                low = {r: v for r, v in result.scores.items() if v < cfg.judge_thresholds.get(r, 1)}
                if low:
                    late = ("judge", "judge scores under threshold: " + ", ".join(
                        f"{r} {v} < {cfg.judge_thresholds[r]}" for r, v in sorted(low.items()))
                        + (f" ({result.rationale})" if result.rationale else ""),
                        {"scores": result.scores, "thresholds": dict(cfg.judge_thresholds),
                         "rationale": result.rationale})
        return replace(out, late_scores=scores, late=late)

    def decide(self, s: Screened) -> Verdict:
        """The ordered half of the chain: call in the build's fixed order. An accepted sample
        joins the dedup indexes, so later copies of it are rejected."""
        sample, node = s.sample, s.sample.node_id
        if s.early is not None:
            if s.early[0] == "pii":
                self._count(node, "pii_dropped")
            return self._reject(sample, *s.early, s.scores)
        fp = Fingerprint.of_shingles(s.sh, self.config.num_perm)
        dup = self._exact_duplicate(node, s.key) or self._near_duplicate(node, fp)
        if dup:
            return self._reject(sample, dup[0], dup[1], {"match": dup[1]}, s.scores)
        scores = s.late_scores if s.late_scores is not None else s.scores
        if s.late is not None:
            return self._reject(sample, *s.late, scores)
        self._exact[s.key] = (node, sample.id)
        self._family(node).add((node, sample.id), fp)
        self._count(node, "checked")
        self._count(node, "accepted")
        if s.redacted:
            self._count(node, "pii_redacted")
        return Verdict(True, None, "", scores, sample)

    def stats(self, node_id: str) -> dict:
        """Counts for the manifest: checked, accepted, pii_redacted, pii_dropped, rejected by reason."""
        c = self._stats.get(node_id, Counter())
        return {"checked": c["checked"], "accepted": c["accepted"],
                "pii_redacted": c["pii_redacted"], "pii_dropped": c["pii_dropped"],
                "rejected": {k.split(":", 1)[1]: v for k, v in sorted(c.items()) if k.startswith("rejected:")}}
