"""Gate-side fingerprints (word shingles, MinHash from compiler/minhash.py), the dedup indexes
built on them, and per-node diversity figures.

The gates and the manifest's diversity figures must agree on what "near-duplicate" means, so
both use the fingerprints defined here; the hashing itself is compiler/minhash.py, which
validate's duplicate-seed checks share. Shingling is vectorised with numpy so gating 100k
records stays well under a minute on two cores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from compiler import minhash as mh
from compiler.gates.config import NEAR_DUP_THRESHOLD, NUM_PERM
from compiler.records import Sample


LeanMinHash, MinHashLSH = mh.import_datasketch("LeanMinHash", "MinHashLSH")

WORD = re.compile(r"\w+", re.UNICODE)
SHINGLE = mh.SHINGLE


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def token_ids(text: str) -> list[int]:
    """Deterministic 64-bit ids of the text's lower-cased words."""
    return mh.ids_of(words(text))


def shingles_of_ids(ids: list[int], k: int = SHINGLE) -> np.ndarray:
    """Sorted unique 32-bit hashes of the word k-grams (a text shorter than k words is one shingle)."""
    return mh.shingles_np(ids, k)


def shingles(text: str, k: int = SHINGLE) -> np.ndarray:
    return shingles_of_ids(token_ids(text), k)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two shingle sets (sorted unique arrays)."""
    if a.size == 0 or b.size == 0:
        return 1.0 if a.size == b.size else 0.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def minhash(sh: np.ndarray, num_perm: int = NUM_PERM) -> LeanMinHash:
    """datasketch's affine32 MinHash of a shingle set (compiler/minhash.py computes the values)."""
    return LeanMinHash(seed=mh.SEED, hashvalues=mh.signature(sh, num_perm), scheme="affine32")


@dataclass(frozen=True)
class Fingerprint:
    shingles: np.ndarray
    minhash: LeanMinHash

    @classmethod
    def of(cls, text: str, num_perm: int = NUM_PERM) -> "Fingerprint":
        return cls.of_shingles(shingles(text), num_perm)

    @classmethod
    def of_shingles(cls, sh: np.ndarray, num_perm: int = NUM_PERM) -> "Fingerprint":
        return cls(sh, minhash(sh, num_perm))


class SmallIndex:
    """Exact near-duplicate search over a small set (seeds, held-out eval seeds): an inverted index
    from shingle to item; shared-shingle counts give the exact Jaccard without a sketch."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self._postings: dict[int, list[int]] = {}
        self._items: list[tuple[object, int]] = []  # (payload, number of shingles)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, payload: object, sh: np.ndarray) -> None:
        if sh.size == 0:
            return
        for h in sh.tolist():
            self._postings.setdefault(h, []).append(len(self._items))
        self._items.append((payload, int(sh.size)))

    def best(self, sh: np.ndarray) -> tuple[object, float] | None:
        """The most similar item at or over the threshold (ties: the first added), or None."""
        if sh.size == 0 or not self._items:
            return None
        shared: dict[int, int] = {}
        postings = self._postings
        for h in postings.keys() & sh.tolist():  # C-level intersection: most shingles match nothing
            for key in postings[h]:
                shared[key] = shared.get(key, 0) + 1
        found, size = None, int(sh.size)
        for key in sorted(shared):
            payload, other = self._items[key]
            sim = shared[key] / (size + other - shared[key])
            if sim >= self.threshold and (found is None or sim > found[1]):
                found = (payload, sim)
        return found


# datasketch's optimal (bands, rows) for the default gates (LSH threshold 0.6 - 0.2 = 0.4, 64
# permutations); tests/test_gates.py checks it against datasketch's own optimisation.
KNOWN_LSH_PARAMS: dict[tuple[float, int], tuple[int, int]] = {(0.4, 64): (16, 4)}
_lsh_params: dict[tuple[float, int], tuple[int, int]] = dict(KNOWN_LSH_PARAMS)


def _lsh(threshold: float, num_perm: int) -> MinHashLSH:
    """A MinHashLSH; datasketch's band/row optimisation (numeric integration with scipy, ~30 ms
    and its import) runs once per (threshold, num_perm), and never for the default gates."""
    params = _lsh_params.get((threshold, num_perm))
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=params)
    _lsh_params[(threshold, num_perm)] = (lsh.b, lsh.r)
    return lsh


class NearIndex:
    """A MinHash LSH index whose candidates are confirmed by exact Jaccard (LSH alone has false
    positives, and the gates' thresholds must mean what they say). Items carry a payload."""

    def __init__(self, threshold: float = NEAR_DUP_THRESHOLD, num_perm: int = NUM_PERM):
        self.threshold = threshold
        self.num_perm = num_perm
        # The LSH threshold sits below ours because LSH misses pairs near its own threshold. At
        # 0.6 with 64 permutations (16 bands of 4) it finds 89% of pairs at Jaccard 0.6, 98.8% at
        # 0.7 and all but 0.03% at 0.8; 128 permutations (32 bands) find 98.8% at 0.6, for ~1.7x
        # the indexing time. Few unrelated pairs become candidates (0.2% at Jaccard 0.1).
        self._lsh = _lsh(round(max(0.05, threshold - 0.2), 4), num_perm)
        self._items: list[tuple[object, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self._items)

    def add(self, payload: object, fp: Fingerprint) -> None:
        if fp.shingles.size == 0:
            return
        self._lsh.insert(len(self._items), fp.minhash, check_duplication=False)
        self._items.append((payload, fp.shingles))

    def matches(self, fp: Fingerprint, threshold: float | None = None) -> list[tuple[object, float]]:
        """Indexed items at or over the threshold, most similar first (ties: oldest first)."""
        if fp.shingles.size == 0 or not self._items:
            return []
        limit = self.threshold if threshold is None else threshold
        found = []
        for key in self._lsh.query(fp.minhash):
            payload, sh = self._items[key]
            sim = jaccard(fp.shingles, sh)
            if sim >= limit:
                found.append((key, payload, sim))
        found.sort(key=lambda t: (-t[2], t[0]))
        return [(payload, sim) for _, payload, sim in found]

    def best(self, fp: Fingerprint) -> tuple[object, float] | None:
        """The most similar indexed item at or over the threshold, or None."""
        found = self.matches(fp)
        return found[0] if found else None


def sample_text(sample: Sample, kind: str | None = None) -> str:
    """What two samples must share to be duplicates: question and answer, plus the context a
    grounded skill's teacher wrote (the same generic question over new notes is new data)."""
    rec = sample.record
    kind = kind or sample.metadata.get("kind")
    ctx = rec.context if (kind == "grounded_skill" and rec.context) else ""
    return "\n".join(p for p in (rec.question, ctx, rec.answer) if p)


def node_diversity(samples: list[Sample], threshold: float = NEAR_DUP_THRESHOLD, *,
                   dedup_gated: bool = False) -> dict:
    """Distinct-n (unique n-grams / all n-grams over questions and answers, Li et al. 2016) and
    the share of samples with a near-duplicate among the others.

    dedup_gated: the caller vouches (see `gate_vouches`) that each sample passed the dedup gate,
    in this order, against every earlier one with this index's own fingerprints, LSH and
    threshold. No sample then has an earlier near-duplicate, so the rate is 0 and the index,
    most of this function's time at 100k samples, is not built again."""
    uni: set[str] = set()
    bi: set[tuple[str, str]] = set()
    n_uni = n_bi = 0
    for s in samples:
        for part in (s.record.question, s.record.answer):
            toks = words(part)
            uni.update(toks)
            n_uni += len(toks)
            if len(toks) > 1:
                bi.update(zip(toks, toks[1:]))
                n_bi += len(toks) - 1
    dup: set[int] = set()
    if not dedup_gated:
        index = NearIndex(threshold)
        for i, s in enumerate(samples):
            fp = Fingerprint.of(sample_text(s))
            hit = index.best(fp)
            if hit is not None:
                dup.update((i, int(hit[0])))
            index.add(str(i), fp)
    return {"distinct_1": round(len(uni) / n_uni, 4) if n_uni else 0.0,
            "distinct_2": round(len(bi) / n_bi, 4) if n_bi else 0.0,
            "near_dup_rate": round(len(dup) / len(samples), 4) if samples else 0.0}


def gate_vouches(samples: list[Sample], kind: str, gate_threshold: float, gate_num_perm: int) -> bool:
    """Whether the dedup gate (gates/chain.py `decide`, dedup.py `_near_duplicate`) already ran
    `node_diversity`'s near-duplicate search on these accepted samples: the same threshold and
    permutations (hence the same LSH bands), the same text (question, a grounded skill's context,
    answer: the kind the gate used is the leaf's), and no sample accepted past the gate (an edit
    made in review is taken as written)."""
    return (gate_threshold == NEAR_DUP_THRESHOLD and gate_num_perm == NUM_PERM
            and all(s.metadata.get("kind") == kind and (s.metadata.get("review") or {}).get("verdict") != "edit"
                    for s in samples))
