"""Checks the reference lacks: documented size limits and duplicate seed examples.

Warnings by default, errors with `--strict`; the caller decides the severity. Seeds are
compared on word bigrams with datasketch MinHash signatures, so that sibling leaves can be
compared from cached signatures without re-reading every file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml

from compiler.yamlload import mark_of, node_at

NUM_PERM = 128
BANDS, ROWS = 32, 4  # LSH banding: pairs with Jaccard >= ~0.5 become candidates
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Limits:
    """InstructLab's documented limits, counted in words (they are stated in tokens, roughly words)."""

    context_words: int = 500  # each context
    qa_words: int = 250  # each question + answer
    skill_words: int = 2300  # all of a skill's seed examples together
    near_dup: float = 0.8  # estimated Jaccard similarity of word bigrams


@dataclass(frozen=True)
class Issue:
    line: int
    column: int
    rule: str
    message: str
    hint: str


@dataclass(frozen=True)
class SeedRef:
    """One seed example (knowledge: one Q&A) as compared for duplicates."""

    label: str  # "seed_examples[2]" or "seed_examples[1].questions_and_answers[0]"
    line: int
    column: int
    norm: str  # normalised text: exact duplicates
    signature: bytes  # MinHash hash values, uint32 little-endian


def words(text: Any) -> int:
    return len(str(text).split()) if isinstance(text, str) else 0


def _seed_items(content: Mapping) -> list[tuple[list, Mapping]]:
    """(path, item) of each question/answer mapping; knowledge Q&A carry their own path."""
    seeds = content.get("seed_examples")
    out: list[tuple[list, Mapping]] = []
    if not isinstance(seeds, list):
        return out
    for i, ex in enumerate(seeds):
        if not isinstance(ex, Mapping):
            continue
        qas = ex.get("questions_and_answers")
        if isinstance(qas, list):
            out.extend((["seed_examples", i, "questions_and_answers", j], qa)
                       for j, qa in enumerate(qas) if isinstance(qa, Mapping))
        else:
            out.append((["seed_examples", i], ex))
    return out


def check_sizes(content: Mapping, family: str, root: yaml.Node | None, limits: Limits) -> list[Issue]:
    issues: list[Issue] = []
    seeds = content.get("seed_examples")
    if not isinstance(seeds, list):
        return issues
    for i, ex in enumerate(seeds):
        if isinstance(ex, Mapping) and words(ex.get("context")) > limits.context_words:
            line, col = mark_of(node_at(root, ["seed_examples", i, "context"]))
            issues.append(Issue(line, col, "size/context-words",
                                f"seed_examples[{i}].context has {words(ex['context'])} words; "
                                f"the limit is {limits.context_words}",
                                "keep only the passage the questions need; the teacher model sees it whole"))
    total = 0
    for path, qa in _seed_items(content):
        n = words(qa.get("question")) + words(qa.get("answer"))
        total += n + (words(qa.get("context")) if len(path) == 2 else 0)
        if n > limits.qa_words:
            line, col = mark_of(node_at(root, path))
            issues.append(Issue(line, col, "size/qa-words",
                                f"{_label(path)} has {n} words of question and answer; the limit is {limits.qa_words}",
                                "shorten the answer; long answers are truncated in training"))
    if family == "skill" and total > limits.skill_words:
        line, col = mark_of(node_at(root, ["seed_examples"]))
        issues.append(Issue(line, col, "size/seed-words",
                            f"the seed examples have {total} words together; the limit for a skill is "
                            f"{limits.skill_words}", "shorten the contexts or answers, or drop an example"))
    issues.sort(key=lambda i: (i.line, i.column))
    return issues


def _label(path: list) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if k else p) for k, p in enumerate(path))


def _norm_words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


@lru_cache(maxsize=1)
def _template():
    from datasketch import MinHash

    return MinHash(num_perm=NUM_PERM, seed=1)


def seed_refs(content: Mapping, root: yaml.Node | None) -> list[SeedRef]:
    """Each seed's normalised text and MinHash signature (skills: context + question + answer;
    knowledge: question + answer, since Q&A of one context share it)."""
    refs: list[SeedRef] = []
    template = None
    for path, qa in _seed_items(content):
        parts = [qa.get("context") if len(path) == 2 else None, qa.get("question"), qa.get("answer")]
        toks = _norm_words(" ".join(p for p in parts if isinstance(p, str)))
        if not toks:
            continue
        shingles = {f"{a} {b}" for a, b in zip(toks, toks[1:])} or set(toks)
        if template is None:
            template = _template()
        m = template.copy()
        m.update_batch([s.encode("utf-8") for s in shingles])
        line, col = mark_of(node_at(root, path))
        refs.append(SeedRef(_label(path), line, col, " ".join(toks),
                            m.hashvalues.astype("<u4").tobytes()))
    return refs


def similarity(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity: the share of equal MinHash values."""
    if len(a) != len(b) or not a:
        return 0.0
    n = len(a) // 4
    same = sum(1 for i in range(0, len(a), 4) if a[i:i + 4] == b[i:i + 4])
    return same / n


def similar_pairs(left: list[SeedRef], right: list[SeedRef] | None, threshold: float
                  ) -> list[tuple[int, int, float]]:
    """(i, j, similarity) for pairs at or above threshold; right=None compares left with itself.

    LSH banding picks candidates, so large sibling groups stay near-linear."""
    same_list = right is None
    right = left if right is None else right
    buckets: dict[tuple[int, bytes], list[int]] = {}
    width = ROWS * 4
    for j, ref in enumerate(right):
        for band in range(BANDS):
            buckets.setdefault((band, ref.signature[band * width:(band + 1) * width]), []).append(j)
    out: list[tuple[int, int, float]] = []
    for i, ref in enumerate(left):
        candidates: set[int] = set()
        for band in range(BANDS):
            candidates.update(buckets.get((band, ref.signature[band * width:(band + 1) * width]), ()))
        for j in sorted(candidates):
            if same_list and j <= i:
                continue
            if ref.norm == right[j].norm:
                out.append((i, j, 1.0))
                continue
            s = similarity(ref.signature, right[j].signature)
            if s >= threshold:
                out.append((i, j, s))
    return out


def check_duplicates(refs: list[SeedRef], threshold: float) -> list[Issue]:
    """Exact and near-duplicate seeds within one leaf, reported on the later one."""
    issues: list[Issue] = []
    reported: set[int] = set()
    for i, j, s in similar_pairs(refs, None, threshold):
        if j in reported:
            continue
        reported.add(j)
        a, b = refs[i], refs[j]
        if a.norm == b.norm:
            issues.append(Issue(b.line, b.column, "dup/exact-seed",
                                f"{b.label} repeats {a.label} (line {a.line})",
                                "remove the copy or replace it with an example that shows something new"))
        else:
            issues.append(Issue(b.line, b.column, "dup/near-seed",
                                f"{b.label} is nearly the same as {a.label} (line {a.line}, similarity {s:.2f})",
                                "vary the examples: near-copies teach the model nothing new"))
    issues.sort(key=lambda i: (i.line, i.column))
    return issues
