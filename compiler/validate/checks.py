"""Checks the reference lacks: documented size limits and duplicate seed examples.

Warnings by default, errors with `--strict`; the caller decides the severity. Seeds are
compared on word bigrams with MinHash signatures (datasketch's, computed per file in one numpy
pass), so that sibling leaves can be compared from cached signatures without re-reading files.
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

from compiler.io.yamlload import mark_of, node_at

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


def _identity(value: int) -> int:
    return value


@lru_cache(maxsize=1)
def _template():
    """The MinHash every signature is made with: datasketch's default (affine32) scheme, seed 1,
    fed 32-bit shingle hashes (datasketch pre-mixes them with fmix, as its docs advise)."""
    from datasketch import MinHash

    return MinHash(num_perm=NUM_PERM, seed=1, hashfunc=_identity)


@lru_cache(maxsize=1)
def _permutations():
    """datasketch's permutations for _template(), as uint32 arrays (a, b).

    They are constants of datasketch's version, kept in the user cache: importing datasketch
    pulls in scipy (~0.6 s of CPU, a fifth of a cold `kdc validate` of a thousand files)."""
    import os
    import tempfile

    import numpy as np

    path = _permutations_path()
    try:
        ab = np.load(path, allow_pickle=False)
        if ab.shape == (2, NUM_PERM) and ab.dtype == np.uint32:
            return ab[0], ab[1]
    except (OSError, ValueError):
        pass
    ab = np.asarray(_template().permutations, dtype=np.uint32)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npy")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, ab, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        pass  # read-only home: datasketch is imported each time, that is all
    return ab[0], ab[1]


def _permutations_path() -> str:
    """The cache file of _permutations(), named by datasketch's version."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kdc", f"minhash-datasketch-{_datasketch_version()}-affine32-seed1-{NUM_PERM}.npy")


@lru_cache(maxsize=1)
def _datasketch_version() -> str:
    """From its dist-info folder name: importlib.metadata costs more to import than a one-file
    validate spends checking."""
    import os
    import sys

    version = None
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        found = [n for n in names if n.startswith("datasketch-") and n.endswith(".dist-info")]
        if found:
            version = found[0][len("datasketch-"):-len(".dist-info")]
            break
    if version is None:
        import importlib.metadata

        try:
            version = importlib.metadata.version("datasketch")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a broken install
            version = "unknown"
    return version


def _signatures(token_lists: list[list[str]]) -> list[bytes]:
    """One MinHash signature per token list (little-endian uint32 bytes): by hand for a few
    seeds (no numpy import, compiler/validate/smallhash.py), else in one numpy pass."""
    from compiler.validate import smallhash

    rows = smallhash.bigram_rows(token_lists)
    if sum(map(len, rows)) * NUM_PERM <= smallhash.PY_MAX_WORK:
        ab = smallhash.permutations_from_npy(_permutations_path(), NUM_PERM)
        if ab is not None:
            return smallhash.signatures(rows, ab[0], ab[1], _FMIX32)
    return [sig.astype("<u4").tobytes() for sig in _minhash_rows(*_bigram_rows(token_lists))]


_FMIX32 = (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16)  # MurmurHash3's 32-bit finalizer


def minhash_batch(shingle_sets: list[list[int]]):
    """MinHash signatures of many sets of 32-bit shingle hashes at once: (n, NUM_PERM) uint32.

    Bit for bit what `_template().copy().update_batch(shingles).hashvalues` gives for each set
    (tests/test_validate.py checks it), with datasketch's permutations, but in one numpy pass per
    file instead of one datasketch call per seed: the per-call overhead dominated validate."""
    import numpy as np

    sizes = np.array([len(s) for s in shingle_sets], dtype=np.int64)
    hv = np.fromiter((h for s in shingle_sets for h in s), dtype=np.uint32, count=int(sizes.sum()))
    return _minhash_rows(hv, sizes)


def _minhash_rows(hv, sizes):
    """Signatures of consecutive runs of `hv` (run k has sizes[k] values, each at least 1)."""
    import numpy as np

    if not len(sizes) or (sizes <= 0).any():
        raise ValueError("every set needs at least one shingle")
    a, b = _permutations()
    s1, m1, s2, m2, s3 = (np.uint32(c) for c in _FMIX32)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    out = np.empty((len(sizes), NUM_PERM), dtype=np.uint32)
    with np.errstate(over="ignore"):
        hv = hv.astype(np.uint32)
        hv = hv ^ (hv >> s1)
        hv = hv * m1
        hv = hv ^ (hv >> s2)
        hv = hv * m2
        hv = hv ^ (hv >> s3)
        step = max(1, 4_000_000 // NUM_PERM)  # bound memory on huge files: rows of the (n, perm) product
        for lo in range(0, len(hv), step):
            phv = hv[lo:lo + step, None] * a[None, :] + b[None, :]
            first = np.searchsorted(starts, lo, side="right") - 1
            last = np.searchsorted(starts, min(lo + step, len(hv)) - 1, side="right") - 1
            mins = np.minimum.reduceat(phv, np.clip(starts[first:last + 1] - lo, 0, None), axis=0)
            if starts[first] >= lo:
                out[first:last + 1] = mins
            else:  # the first run began in an earlier block
                out[first] = np.minimum(out[first], mins[0])
                out[first + 1:last + 1] = mins[1:]
    return out


def _bigram_rows(token_lists: list[list[str]]):
    """Per token list, its word bigrams as 32-bit hashes (crc32 per distinct word, combined per
    pair; a one-word list gives its word), concatenated, with each list's count."""
    import numpy as np

    words = [w for toks in token_lists for w in toks]
    word_hash = {w: zlib.crc32(w.encode("utf-8")) for w in set(words)}
    ids = np.fromiter(map(word_hash.__getitem__, words), dtype=np.uint64, count=len(words))
    lens = np.array([len(t) for t in token_lists], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
    sizes = np.maximum(lens - 1, 1)
    out_starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    src = np.arange(int(sizes.sum())) - np.repeat(out_starts - starts, sizes)
    pairs = np.append(((ids[:-1] * np.uint64(0x9E3779B1)) ^ ids[1:]) & np.uint64(0xFFFFFFFF), np.uint64(0))
    return np.where(np.repeat(lens >= 2, sizes), pairs[src], ids[src]), sizes


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
    sigs = _signatures([toks for _, toks, _ in items])
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
    if len(left) * len(right) <= 2500:  # a leaf or a small family: no numpy import
        from compiler.validate.smallhash import similar

        return similar(left, None if same_list else right, threshold)
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
