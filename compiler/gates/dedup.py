"""Dedup gates: copies of held-out eval seeds (contamination), of the node's own training seeds,
and of samples accepted earlier in the build (exact, near, in a sibling leaf).

Accepted samples go into one MinHash LSH index per family (a leaf and its siblings), so a
candidate costs one query however big the tree; seeds and held-out eval seeds are few, so they
sit in exact inverted indexes. Every match is confirmed by exact Jaccard.
"""

from __future__ import annotations

import hashlib

import numpy as np

from compiler.gates.config import GateConfig
from compiler.gates.diversity import Fingerprint, NearIndex, SmallIndex, shingles, token_ids
from compiler.records import Seed
from compiler.taxonomy.tree import Taxonomy


def exact_key(text: str) -> bytes:
    return exact_key_ids(token_ids(text))


def exact_key_ids(ids: list[int]) -> bytes:
    """Texts equal up to case, spacing and punctuation share this key."""
    return hashlib.sha1(np.array(ids, dtype=np.uint64).tobytes()).digest()


def _seed_text(kind: str, seed: Seed) -> str:
    ctx = seed.context if (kind == "grounded_skill" and seed.context) else ""
    return "\n".join(p for p in (seed.question, ctx, seed.answer) if p)


def _probe(kind: str, question: str, context: str | None) -> str:
    """What a held-out question looks like to a student: the question, plus a grounded skill's context."""
    return question + ("\n" + context if kind == "grounded_skill" and context else "")


class Dedup:
    """The dedup indexes of one build: static ones (eval and training seeds, filled here) and the
    accepted samples (filled by `add`, in the build's fixed order)."""

    def __init__(self, config: GateConfig, taxonomy: Taxonomy, kinds: dict[str, str],
                 train_seeds: dict[str, list[Seed]], eval_seeds: dict[str, list[Seed]]):
        self.config = config
        self.taxonomy = taxonomy
        self._siblings: dict[str, frozenset[str]] = {}
        self._families: dict[str, NearIndex] = {}
        self._exact: dict[bytes, tuple[str, str]] = {}  # normalised sample text -> (node, sample id)
        self._eval_exact: dict[bytes, str] = {}
        self._eval_full = SmallIndex(config.contamination_threshold)
        self._eval_probe = SmallIndex(config.contamination_question_threshold)
        for node_id in sorted(eval_seeds):  # held-out seeds of every node: nothing may resemble them
            kind = kinds.get(node_id, "freeform_skill")
            for i, seed in enumerate(eval_seeds[node_id]):
                label = f"{node_id}#eval{i}"
                full = _seed_text(kind, seed)
                self._eval_exact.setdefault(exact_key(full), label)
                self._eval_full.add(label, shingles(full))
                self._eval_probe.add(label, shingles(_probe(kind, seed.question, seed.context)))
        self._seed_exact: dict[tuple[str, bytes], int] = {}  # (node, normalised seed text) -> index
        self._seeds: dict[str, SmallIndex] = {}
        for node_id in sorted(train_seeds):  # a copy of a node's own seed is not new data
            kind = kinds.get(node_id, "freeform_skill")
            index = self._seeds[node_id] = SmallIndex(config.seed_dup_threshold)
            for i, seed in enumerate(train_seeds[node_id]):
                text = _seed_text(kind, seed)
                self._seed_exact.setdefault((node_id, exact_key(text)), i)
                index.add(i, shingles(text))

    def _sibling_ids(self, node_id: str) -> frozenset[str]:
        if node_id not in self._siblings:  # (a node the taxonomy does not know has none)
            self._siblings[node_id] = frozenset(self.taxonomy.siblings(node_id))
        return self._siblings[node_id]

    def _family(self, node_id: str) -> NearIndex:
        parent = node_id.rsplit("/", 1)[0] if "/" in node_id else ""
        index = self._families.get(parent)
        if index is None:
            index = self._families[parent] = NearIndex(self.config.near_dup_threshold, self.config.num_perm)
        return index

    def static(self, node: str, key: bytes, sh: np.ndarray, probe: np.ndarray) -> tuple[str, str] | None:
        """(reason, detail) when the candidate copies an eval seed or a seed: independent of order."""
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

    def accepted(self, node: str, key: bytes, fp: Fingerprint) -> tuple[str, str] | None:
        """(reason, detail) when an accepted sample has the same normalised text, or nearly."""
        return self._exact_duplicate(node, key) or self._near_duplicate(node, fp)

    def add(self, node: str, sample_id: str, key: bytes, fp: Fingerprint) -> None:
        """An accepted sample joins the indexes, so later copies of it are rejected."""
        self._exact[key] = (node, sample_id)
        self._family(node).add((node, sample_id), fp)

    def _exact_duplicate(self, node: str, key: bytes) -> tuple[str, str] | None:
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
