"""Checks the reference lacks: documented size limits and duplicate seed examples.

Warnings by default, errors with `--strict`; the caller decides the severity. Seeds are
compared on word bigrams with datasketch MinHash signatures, so that sibling leaves can be
compared from cached signatures without re-reading every file.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml

from compiler.yamlload import mark_of, node_at

NUM_PERM = 128
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
    norm: str  # digest of the normalised text: exact duplicates
    signature: bytes  # MinHash values (question+answer, then context), uint32 little-endian


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


def _identity(value: int) -> int:
    return value


@lru_cache(maxsize=1)
def _template():
    """One MinHash whose permutations every seed's MinHash copies (building them costs ~0.3 ms)."""
    from datasketch import MinHash

    # Shingles arrive already hashed to 32 bits (see _shingle_hashes); datasketch mixes them
    # (fmix) before permuting, as its docs advise for structured integer inputs.
    return MinHash(num_perm=NUM_PERM, seed=1, hashfunc=_identity)


def _shingle_hashes(words: list[str], word_hash: dict[str, int]) -> list[int]:
    """Distinct word bigrams as 32-bit integers: crc32 per distinct word, combined per pair.

    Hashing each bigram string with SHA-1 (datasketch's default) cost 1 s on the corpus."""
    import numpy as np

    for w in set(words).difference(word_hash):
        word_hash[w] = zlib.crc32(w.encode("utf-8"))
    hs = np.array(list(map(word_hash.__getitem__, words)), dtype=np.uint64)
    if len(hs) < 2:
        return hs.tolist()
    return np.unique(((hs[:-1] * np.uint64(0x9E3779B1)) ^ hs[1:]) & np.uint64(0xFFFFFFFF)).tolist()


def seed_refs(content: Mapping, root: yaml.Node | None) -> list[SeedRef]:
    """What duplicate checks compare, one ref per seed (knowledge: per Q&A, and per context).

    A signature is two MinHashes: question + answer, then the context (zeros when there is
    none), so that grounded seeds sharing one context but asking different things, or asking
    the same thing of different contexts, are not near-duplicates."""
    refs: list[SeedRef] = []
    word_hash: dict[str, int] = {}
    no_context = bytes(4 * NUM_PERM)

    def signature(toks: list[str]) -> bytes:
        m = _template()
        m.clear()  # reuse one MinHash: building one (permutations) costs more than hashing a seed
        m.update_batch(_shingle_hashes(toks, word_hash))
        return m.hashvalues.astype("<u4").tobytes()

    def add(path: list, qa_text: str, context: Any) -> None:
        qa_toks = _norm_words(qa_text)
        ctx_toks = _norm_words(context) if isinstance(context, str) else []
        if not qa_toks:
            return
        line, col = mark_of(node_at(root, path))
        norm = hashlib.blake2b(f"{' '.join(ctx_toks)}\0{' '.join(qa_toks)}".encode("utf-8"), digest_size=8)
        refs.append(SeedRef(_label(path), line, col, norm.hexdigest(),
                            signature(qa_toks) + (signature(ctx_toks) if ctx_toks else no_context)))

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
    return refs


def _qa_text(qa: Mapping) -> str:
    return " ".join(v for v in (qa.get("question"), qa.get("answer")) if isinstance(v, str))


def _matrix(refs: list[SeedRef]):
    import numpy as np

    return np.frombuffer(b"".join(r.signature for r in refs), dtype="<u4").reshape(len(refs), -1)


def similar_pairs(left: list[SeedRef], right: list[SeedRef] | None, threshold: float
                  ) -> list[tuple[int, int, float]]:
    """(i, j, similarity) for pairs at or above threshold; right=None compares left with itself.

    Similarity is the lower of the question+answer and the context estimates (share of equal
    MinHash values); identical normalised texts count as 1.0. Compared densely in blocks."""
    import numpy as np

    same_list = right is None
    right = left if right is None else right
    if not left or not right:
        return []
    a, b = _matrix(left), _matrix(right)
    half = NUM_PERM
    out: list[tuple[int, int, float]] = []
    block = max(1, 2_000_000 // (len(right) * a.shape[1]))
    for start in range(0, len(left), block):
        eq = a[start:start + block, None, :] == b[None, :, :]
        sims = np.minimum(eq[:, :, :half].mean(axis=2), eq[:, :, half:].mean(axis=2))
        for i, j in zip(*np.nonzero(sims >= threshold)):
            i, j = int(i) + start, int(j)
            if not (same_list and j <= i) and left[i].norm != right[j].norm:
                out.append((i, j, float(sims[i - start, j])))
    by_text: dict[str, list[int]] = {}
    for j, ref in enumerate(right):
        by_text.setdefault(ref.norm, []).append(j)
    for i, ref in enumerate(left):
        out.extend((i, j, 1.0) for j in by_text.get(ref.norm, ()) if not (same_list and j <= i))
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
