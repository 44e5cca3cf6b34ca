"""Checks the reference lacks: documented size limits and duplicate seed examples.

Warnings by default, errors with `--strict`; the caller decides the severity. Seeds are
compared on word bigrams with MinHash signatures (compiler/minhash.py, the gates' own), so that
sibling leaves can be compared from cached signatures without re-reading files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from compiler import minhash
from compiler.io.yamlload import mark_of, node_at

NUM_PERM = 128
SMALL_PAIRS = 12_000  # up to this many pairs, similar_pairs compares by hand (no numpy import)
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

    label: str  # "seed_examples[2]", "seed_examples[1].questions_and_answers[0]", "seed_examples[1].context"
    line: int
    column: int
    norm: str  # digest of the normalised context and text: exact duplicates
    context: str  # digest of the normalised context ("" when none): near-duplicates share it
    signature: bytes  # MinHash values of the text's word bigrams, uint32 little-endian


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


def _permutations():
    """The permutations the signatures use (validate loads them once before forking its workers)."""
    return minhash.permutations(NUM_PERM)


def seed_refs(content: Mapping, root: yaml.Node | None) -> list[SeedRef]:
    """What duplicate checks compare, one ref per seed (knowledge: per Q&A, and per context).

    Grounded seeds are near-duplicates only when their contexts are the same: a shared context
    with different questions is how grounded skills are written, not a copy."""
    items: list[tuple[list, list[str], str]] = []

    def add(path: list, text: str, context: Any) -> None:
        toks = _norm_words(text)
        if toks:
            items.append((path, toks, " ".join(context.casefold().split()) if isinstance(context, str) else ""))

    seeds = content.get("seed_examples")
    for i, ex in enumerate(seeds if isinstance(seeds, list) else []):
        if not isinstance(ex, Mapping):
            continue
        qas = ex.get("questions_and_answers")
        if isinstance(qas, list):  # knowledge: each context, then each Q&A on its own
            if isinstance(ex.get("context"), str):
                add(["seed_examples", i, "context"], ex["context"], None)
            for j, qa in enumerate(qas):
                if isinstance(qa, Mapping):
                    add(["seed_examples", i, "questions_and_answers", j], _qa_text(qa), None)
        else:
            add(["seed_examples", i], _qa_text(ex), ex.get("context"))
    if not items:
        return []
    sigs = minhash.signatures([toks for _, toks, _ in items], NUM_PERM)
    refs = []
    for (path, toks, ctx), sig in zip(items, sigs):
        line, col = mark_of(node_at(root, path))
        refs.append(SeedRef(_label(path), line, col, _digest(f"{ctx}\0{' '.join(toks)}"),
                            _digest(ctx) if ctx else "", sig))
    return refs


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def _qa_text(qa: Mapping) -> str:
    return " ".join(v for v in (qa.get("question"), qa.get("answer")) if isinstance(v, str))


def _matrix(refs: list[SeedRef]):
    import numpy as np

    return np.frombuffer(b"".join(r.signature for r in refs), dtype="<u4").reshape(len(refs), -1)


def similar_pairs(left: list[SeedRef], right: list[SeedRef] | None, threshold: float
                  ) -> list[tuple[int, int, float]]:
    """(i, j, similarity) for pairs at or above threshold; right=None compares left with itself.

    Similarity is the share of equal MinHash values (estimated Jaccard) of refs with the same
    context; identical normalised texts count as 1.0. Compared densely, in blocks."""
    same_list = right is None
    right = left if right is None else right
    if not left or not right:
        return []
    if len(left) * len(right) <= SMALL_PAIRS:  # a leaf or a small family: no numpy import
        return _similar_small(left, right, same_list, threshold)
    import numpy as np

    a, b = _matrix(left), _matrix(right)
    ctx_b = np.array([r.context for r in right])
    out: list[tuple[int, int, float]] = []
    block = max(1, 2_000_000 // (len(right) * a.shape[1]))
    for start in range(0, len(left), block):
        sims = (a[start:start + block, None, :] == b[None, :, :]).mean(axis=2)
        for i, j in zip(*np.nonzero(sims >= threshold)):
            i, j = int(i) + start, int(j)
            if (not (same_list and j <= i) and left[i].norm != right[j].norm
                    and left[i].context == ctx_b[j]):
                out.append((i, j, float(sims[i - start, j])))
    by_text: dict[str, list[int]] = {}
    for j, ref in enumerate(right):
        by_text.setdefault(ref.norm, []).append(j)
    for i, ref in enumerate(left):
        out.extend((i, j, 1.0) for j in by_text.get(ref.norm, ()) if not (same_list and j <= i))
    out.sort()
    return out


def _similar_small(left: list[SeedRef], right: list[SeedRef], same_list: bool, threshold: float
                   ) -> list[tuple[int, int, float]]:
    """similar_pairs by hand for a few refs (the same pairs, similarities and order): each
    signature unpacked once, ~3 us a pair, so up to SMALL_PAIRS this beats importing numpy (~50 ms)."""
    lv = [minhash.signature_values(r.signature) for r in left]
    rv = lv if same_list else [minhash.signature_values(r.signature) for r in right]
    out: list[tuple[int, int, float]] = []
    for i, x in enumerate(left):
        xv = lv[i]
        for j in range(i + 1 if same_list else 0, len(right)):
            y = right[j]
            if x.norm == y.norm:
                out.append((i, j, 1.0))
            elif x.context == y.context:
                sim = minhash.share_equal(xv, rv[j])
                if sim >= threshold:
                    out.append((i, j, sim))
    out.sort()
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
