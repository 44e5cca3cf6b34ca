"""compiler/minhash.py: one MinHash for validate and the gates; its pure-Python path (for a
one-file `kdc validate`, which must not import numpy) gives the numpy path's values."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

from compiler import minhash
from compiler.gates import diversity
from compiler.validate import checks

ROOT = Path(__file__).resolve().parent.parent
VOCAB = "the a sun moon star red blue one two three ünïcode 日本 straße".split()


def _id_lists(seed: int, n: int = 200) -> list[list[int]]:
    rng = random.Random(seed)
    return [minhash.ids_of([rng.choice(VOCAB) for _ in range(rng.choice((0, 1, 2, 3, rng.randint(4, 60))))])
            for _ in range(n)]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shingles_agree_across_the_python_numpy_and_batched_paths(k):
    id_lists = _id_lists(k)
    hv, sizes = minhash.shingle_runs(id_lists, k)
    assert sizes.tolist() == [max(1, len(ids) - k + 1) if ids else 0 for ids in id_lists]
    runs = np.split(hv, np.cumsum(sizes)[:-1])
    for ids, run in zip(id_lists, runs):
        py = minhash.shingles_py(ids, k)
        assert minhash.shingles_np(ids, k).tolist() == py == sorted(set(run.tolist()))
        assert minhash.shingle_runs([ids], k)[0].tolist() == run.tolist()  # the one-list fast path
    assert minhash.shingles_py([], k) == [] and minhash.shingles_np([], k).size == 0
    one = minhash.ids_of(["sun"])
    assert len(minhash.shingles_py(one, k)) == 1  # shorter than k words: one shingle, not none


@pytest.mark.parametrize("num_perm", [64, 128])
def test_signatures_are_datasketch_values_on_every_path(num_perm):
    id_lists = [ids for ids in _id_lists(num_perm) if ids]
    rows = [minhash.shingles_py(ids) for ids in id_lists]
    a, b = minhash.permutations(num_perm)
    py = minhash.signatures_py(rows, [int(x) for x in a], [int(x) for x in b])
    matrix = minhash.signature_matrix(*minhash.shingle_runs(id_lists), num_perm)
    for row, sig_py, sig_np in zip(rows, py, matrix):
        ref = MinHash(num_perm=num_perm, seed=1, hashfunc=lambda v: v)
        ref.update_batch(row)
        assert (ref.hashvalues == sig_np).all()
        assert sig_py == sig_np.astype("<u4").tobytes()
        assert (minhash.signature(np.array(row, dtype=np.uint32), num_perm) == sig_np).all()
    assert (minhash.signature(np.empty(0, dtype=np.uint32), num_perm) == 0xFFFFFFFF).all()


def test_signatures_take_the_pure_python_path_for_small_inputs_with_the_same_bytes(monkeypatch):
    lists = [["the", "sun", "is", "a", "star"], ["the", "moon", "is", "not", "a", "star"], ["sun"]]
    minhash.permutations(checks.NUM_PERM)  # the .npy cache file the pure path reads
    assert minhash.permutations_py(checks.NUM_PERM) is not None
    calls = []
    real = minhash.signature_matrix
    monkeypatch.setattr(minhash, "signature_matrix", lambda *a: calls.append(1) or real(*a))
    small = minhash.signatures(lists, checks.NUM_PERM)
    assert calls == []  # no numpy for three short seeds
    monkeypatch.setattr(minhash, "PY_MAX_WORK", 0)
    assert minhash.signatures(lists, checks.NUM_PERM) == small and calls == [1]


def test_validate_and_the_gates_compute_the_same_minhash():
    """One MinHash: validate's seed signature of a text is the gates' LeanMinHash of it."""
    text = "What is the largest planet of the Solar System, and how many moons does it have?"
    sig = minhash.signatures([checks._norm_words(text)], 128)[0]
    gate = diversity.minhash(diversity.shingles(text), 128)
    assert sig == gate.hashvalues.astype("<u4").tobytes()
    near = text.replace("largest", "biggest")
    est = minhash.estimate(sig, minhash.signatures([checks._norm_words(near)], 128)[0])
    exact = diversity.jaccard(diversity.shingles(text), diversity.shingles(near))
    assert exact == pytest.approx(13 / 17)  # 15 bigrams each, 2 changed and abs(est - exact) < 0.15


def test_permutations_py_refuses_a_foreign_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert minhash.permutations_py(16) is None  # no file yet
    path = Path(minhash.permutations_path(16))
    path.parent.mkdir(parents=True)
    np.save(path, np.zeros((2, 16), dtype=np.uint64), allow_pickle=False)  # wrong dtype
    assert minhash.permutations_py(16) is None
    np.save(path, np.arange(32, dtype=np.uint32).reshape(2, 16), allow_pickle=False)
    assert minhash.permutations_py(16) == (list(range(16)), list(range(16, 32)))


def test_one_file_validate_does_not_import_numpy(tmp_path):
    """`kdc validate` of one file stays on the pure-Python path (its start-up time is measured)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    qna = ROOT / "taxonomy/compositional_skills/writing/freeform/haiku/qna.yaml"
    probe = ("import sys, json\nsys.argv = ['kdc'] + sys.argv[1:]\nfrom compiler.cli import main\n"
             "try:\n    main()\n"
             "finally:\n    print(json.dumps(sorted(m for m in ('numpy', 'datasketch', 'scipy') if m in sys.modules)))\n")
    args = [sys.executable, "-c", probe, "validate", "--no-cache", str(qna)]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)  # writes the .npy cache
    assert first.returncode == 0, first.stderr
    assert list((tmp_path / "kdc").glob("minhash-datasketch-*-128.npy"))
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1]) == []


def test_the_gates_fingerprints_are_those_builds_were_made_with():
    """Values of the gates' fingerprints before the two MinHash copies were merged: a changed
    value would change dedup decisions and diversity figures for an unchanged taxonomy."""
    sh = diversity.shingles("The Sun is a star; the Moon is not.")
    assert sh.tolist() == [211747917, 386264505, 1620828178, 1855482227, 2165766631, 2285422508, 2433906747,
                           4118996957]
    assert diversity.minhash(sh, 64).hashvalues[:6].tolist() == [694142160, 326481727, 81413341, 286516933,
                                                                  63875591, 939083930]
