"""Word shingles and MinHash signatures: the one implementation behind validate's duplicate-seed
checks, the gates' dedup and the manifest's diversity figures, so that all three mean the same
thing by "near-duplicate".

Shingles are word k-grams hashed to 32 bits from deterministic 64-bit word ids (blake2b, not
Python's salted `hash`), so a rerun takes the same decisions. Signatures are datasketch's
affine32 MinHash (seed 1) of those hashes, the values `MinHash.update_batch` gives, computed in
one numpy pass. A one-file `kdc validate` has a few dozen seeds, and importing numpy for them
costs more than hashing them by hand (0.1 s idle, several times that on a busy machine); so each
numpy function has a pure-Python twin giving the same values (tests/test_minhash.py), and this
module imports numpy and datasketch only inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import operator
import os
import struct
from functools import lru_cache
from typing import Any

SHINGLE = 2  # words per shingle: Q&A texts are short, one changed word must not hide a copy
SEED = 1
M32, M64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
P1, P2 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F  # mixing constants of the k-gram hash
FMIX32 = (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16)  # MurmurHash3's 32-bit finalizer (datasketch's premix)
PY_MAX_WORK = 120_000  # shingles x permutations up to which the pure-Python path is used
_token_ids: dict[str, int] = {}


def ids_of(tokens: list[str]) -> list[int]:
    """Deterministic 64-bit ids of the tokens (cached: a build sees the same words again and again)."""
    get = _token_ids.get
    ids = [get(t) for t in tokens]
    if None in ids:
        if len(_token_ids) > 2_000_000:  # bound the cache on endless streams
            _token_ids.clear()
        for k, (i, t) in enumerate(zip(ids, tokens)):
            if i is None:
                ids[k] = _token_ids[t] = int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(),
                                                        "little")
    return ids  # type: ignore[return-value]


# ------------------------------------------------------------------------------------- shingles
def shingles_py(ids: list[int], k: int = SHINGLE) -> list[int]:
    """Sorted unique 32-bit hashes of the id k-grams (fewer than k ids: one shingle of them all)."""
    n = max(1, len(ids) - k + 1) if ids else 0
    width = min(k, len(ids))
    out = set()
    for i in range(n):
        h = (ids[i] * P2) & M64
        for j in range(1, width):
            h = ((h * P1) & M64) ^ ids[i + j]
        out.add((h ^ (h >> 32)) & M32)
    return sorted(out)


def shingle_runs(id_lists: list[list[int]], k: int = SHINGLE) -> tuple[Any, Any]:
    """shingles_py of many id lists in one numpy pass, unsorted and with repeats (MinHash ignores
    both): (uint32 hashes, run sizes). An empty list gives an empty run."""
    import numpy as np

    if len(id_lists) == 1:  # the gates' case, once per candidate: skip the run bookkeeping
        arr = np.array(id_lists[0], dtype=np.uint64)
        if not arr.size:
            return np.empty(0, dtype=np.uint32), np.zeros(1, dtype=np.int64)
        n = max(1, arr.size - k + 1)
        with np.errstate(over="ignore"):
            h = arr[:n] * np.uint64(P2)
            for j in range(1, min(k, arr.size)):
                h = (h * np.uint64(P1)) ^ arr[j: j + n]
            return ((h ^ (h >> np.uint64(32))) & np.uint64(M32)).astype(np.uint32), np.array([n], dtype=np.int64)
    lens = np.array([len(x) for x in id_lists], dtype=np.int64)
    arr = np.fromiter((i for x in id_lists for i in x), dtype=np.uint64, count=int(lens.sum()))
    arr = np.append(arr, np.zeros(k, dtype=np.uint64))  # k-grams near a run's end read past it: masked
    sizes = np.where(lens > 0, np.maximum(lens - k + 1, 1), 0)
    starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
    out_starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    src = np.arange(int(sizes.sum())) + np.repeat(starts - out_starts, sizes)
    width = np.repeat(np.minimum(lens, k), sizes)
    with np.errstate(over="ignore"):
        h = arr[src] * np.uint64(P2)
        for j in range(1, k):
            h = np.where(width > j, (h * np.uint64(P1)) ^ arr[src + j], h)
        return ((h ^ (h >> np.uint64(32))) & np.uint64(M32)).astype(np.uint32), sizes


def shingles_np(ids: list[int], k: int = SHINGLE) -> Any:
    """shingles_py as a sorted unique uint32 array (the gates' exact Jaccard works on these)."""
    import numpy as np

    return np.unique(shingle_runs([ids], k)[0])


# ---------------------------------------------------------------------------------- permutations
def import_datasketch(*names: str) -> tuple[Any, ...]:
    """Names from datasketch, imported without scipy: datasketch.lsh imports scipy.integrate at
    its top (~0.6 s, a third of a compile's start-up) only to choose LSH bands when none are
    given, and kdc gives them (gates/diversity.py `_lsh`) for its default gates. While datasketch
    loads, a stand-in module holds a `quad` that imports the real one on its first call; the
    stand-in leaves sys.modules right after, so any later import of scipy.integrate is the real one."""
    import importlib
    import sys
    import types

    if "scipy.integrate" not in sys.modules and "datasketch.lsh" not in sys.modules:
        def quad(*args: Any, **kwargs: Any) -> Any:
            return importlib.import_module("scipy.integrate").quad(*args, **kwargs)

        stand_in = types.ModuleType("scipy.integrate")
        stand_in.quad = quad  # type: ignore[attr-defined]
        sys.modules["scipy.integrate"] = stand_in
        try:
            importlib.import_module("datasketch")
        finally:
            if sys.modules.get("scipy.integrate") is stand_in:
                del sys.modules["scipy.integrate"]
    module = importlib.import_module("datasketch")
    return tuple(getattr(module, n) for n in names)


@lru_cache(maxsize=None)
def permutations(num_perm: int) -> tuple[Any, Any]:
    """datasketch's (a, b) for MinHash(num_perm, seed=1, scheme="affine32"), as uint32 arrays.

    They are constants of datasketch's version, kept in the user cache: importing datasketch
    pulls in scipy (~0.6 s of CPU, a fifth of a cold `kdc validate` of a thousand files)."""
    import tempfile

    import numpy as np

    path = permutations_path(num_perm)
    try:
        ab = np.load(path, allow_pickle=False)
        if ab.shape == (2, num_perm) and ab.dtype == np.uint32:
            return ab[0], ab[1]
    except (OSError, ValueError):
        pass
    (MinHash,) = import_datasketch("MinHash")
    ab = np.asarray(MinHash(num_perm=num_perm, seed=SEED, scheme="affine32").permutations, dtype=np.uint32)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npy")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, ab, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        pass  # read-only home: datasketch is imported each time, that is all
    return ab[0], ab[1]


def permutations_path(num_perm: int) -> str:
    """The cache file of permutations(), named by datasketch's version."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kdc", f"minhash-datasketch-{_datasketch_version()}-affine32-seed{SEED}-{num_perm}.npy")


def permutations_py(num_perm: int) -> tuple[list[int], list[int]] | None:
    """permutations() as int lists, read from its .npy cache file without numpy; None if absent."""
    try:
        with open(permutations_path(num_perm), "rb") as fh:
            raw = fh.read(1 << 16)
    except OSError:
        return None
    if raw[:6] != b"\x93NUMPY":
        return None
    if raw[6] == 1:
        hlen, start = struct.unpack("<H", raw[8:10])[0], 10
    else:
        hlen, start = struct.unpack("<I", raw[8:12])[0], 12
    header = raw[start:start + hlen].decode("latin-1")
    data = raw[start + hlen:]
    if ("'<u4'" not in header or "'fortran_order': False" not in header
            or f"(2, {num_perm})" not in header or len(data) != 8 * num_perm):
        return None
    values = struct.unpack(f"<{2 * num_perm}I", data)
    return list(values[:num_perm]), list(values[num_perm:])


@lru_cache(maxsize=1)
def _datasketch_version() -> str:
    """From its dist-info folder name: importlib.metadata costs more to import than a one-file
    validate spends checking."""
    import sys

    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        found = [n for n in names if n.startswith("datasketch-") and n.endswith(".dist-info")]
        if found:
            return found[0][len("datasketch-"):-len(".dist-info")]
    import importlib.metadata

    try:
        return importlib.metadata.version("datasketch")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a broken install
        return "unknown"


# ------------------------------------------------------------------------------------ signatures
def _fmix(hv: Any) -> Any:
    import numpy as np

    s1, m1, s2, m2, s3 = (np.uint32(c) for c in FMIX32)
    with np.errstate(over="ignore"):
        hv = hv.astype(np.uint32)
        hv = (hv ^ (hv >> s1)) * m1
        hv = (hv ^ (hv >> s2)) * m2
        return hv ^ (hv >> s3)


def signature(sh: Any, num_perm: int) -> Any:
    """The MinHash values (uint32, num_perm) of one shingle array; an empty set is all 0xFFFFFFFF
    (datasketch's empty MinHash)."""
    import numpy as np

    if sh.size == 0:
        return np.full(num_perm, M32, dtype=np.uint32)
    a, b = permutations(num_perm)
    with np.errstate(over="ignore"):
        return (_fmix(sh).reshape(-1, 1) * a + b).min(axis=0)


def signature_matrix(hv: Any, sizes: Any, num_perm: int) -> Any:
    """Signatures of consecutive runs of `hv` (run k has sizes[k] values, each at least 1):
    (runs, num_perm) uint32, in blocks that bound the memory on huge files."""
    import numpy as np

    if not len(sizes) or (sizes <= 0).any():
        raise ValueError("every set needs at least one shingle")
    a, b = permutations(num_perm)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    out = np.empty((len(sizes), num_perm), dtype=np.uint32)
    hv = _fmix(hv)
    step = max(1, 4_000_000 // num_perm)  # rows of the (n, perm) product per block
    with np.errstate(over="ignore"):
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


def signatures_py(rows: list[list[int]], a: list[int], b: list[int]) -> list[bytes]:
    """signature_matrix's rows for non-empty shingle lists, by hand, as little-endian uint32 bytes.

    All permutations at once, as 64-bit lanes of one big int (SIMD within a register): lane k of
    h * A + B is h * a[k] + b[k] < 2**64 (h, a, b < 2**32), so no lane carries into the next;
    its low 32 bits are the affine32 value. The running minimum is kept lane-wise too: in
    2**32 + cur - v (no borrow, every lane positive) bit 32 says cur >= v."""
    s1, m1, s2, m2, s3 = FMIX32
    n = len(a)

    def lanes(values: list[int]) -> int:
        return int.from_bytes(struct.pack(f"<{n}Q", *values), "little")

    big_a, big_b = lanes(a), lanes(b)
    low, guard, ones = lanes([M32] * n), lanes([1 << 32] * n), lanes([1] * n)
    words = struct.Struct(f"<{2 * n}I")
    out = []
    for row in rows:
        cur = None
        for h in row:
            h ^= h >> s1
            h = (h * m1) & M32
            h ^= h >> s2
            h = (h * m2) & M32
            h ^= h >> s3
            v = (h * big_a + big_b) & low
            if cur is None:
                cur = v
                continue
            ge = (((cur + guard - v) >> 32) & ones) * M32  # all ones in the lanes where cur >= v
            cur ^= (cur ^ v) & ge
        out.append(struct.pack(f"<{n}I", *words.unpack(cur.to_bytes(8 * n, "little"))[::2]))
    return out


def signatures(token_lists: list[list[str]], num_perm: int) -> list[bytes]:
    """One signature per non-empty token list (little-endian uint32 bytes): by hand for a few
    lists when the permutations are cached (no numpy import), else in one numpy pass."""
    id_lists = [ids_of(toks) for toks in token_lists]
    rows = [shingles_py(ids) for ids in id_lists]
    if sum(map(len, rows)) * num_perm <= PY_MAX_WORK:
        ab = permutations_py(num_perm)
        if ab is not None:
            return signatures_py(rows, *ab)
    hv, sizes = shingle_runs(id_lists)
    return [sig.astype("<u4").tobytes() for sig in signature_matrix(hv, sizes, num_perm)]


def signature_values(signature: bytes) -> tuple[int, ...]:
    """A signature's MinHash values (unpack once when comparing it with many: `share_equal`)."""
    return struct.unpack(f"<{len(signature) // 4}I", signature)


def share_equal(x: tuple[int, ...], y: tuple[int, ...]) -> float:
    """The share of equal values of two unpacked signatures, counted in C (map, sum): ~3 us."""
    return sum(map(operator.eq, x, y)) / len(x)


def estimate(x: bytes, y: bytes) -> float:
    """Estimated Jaccard similarity of two signatures: the share of equal MinHash values."""
    return share_equal(signature_values(x), signature_values(y))
