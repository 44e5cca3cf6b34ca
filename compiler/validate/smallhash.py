"""checks.py's MinHash signatures and similarity, in pure Python, for small inputs.

A one-file `kdc validate` has a few dozen seeds; importing numpy for them costs more (0.1 s on
an idle machine, several times that on a busy one) than computing the signatures by hand. The
results are bit for bit those of the numpy path (tests/test_fuzz.py compares them), so the
validate cache and the cross-file checks cannot tell which path made a signature."""

from __future__ import annotations

import operator
import struct
import zlib

M32 = 0xFFFFFFFF
PY_MAX_WORK = 120_000  # shingles x permutations up to which the pure-Python path is used


def permutations_from_npy(path: str, num_perm: int) -> tuple[list[int], list[int]] | None:
    """checks._permutations()'s (a, b) from its .npy cache file, without numpy; None if absent."""
    try:
        with open(path, "rb") as fh:
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
            or f"({2}, {num_perm})" not in header or len(data) != 8 * num_perm):
        return None
    values = struct.unpack(f"<{2 * num_perm}I", data)
    return list(values[:num_perm]), list(values[num_perm:])


def bigram_rows(token_lists: list[list[str]]) -> list[list[int]]:
    """checks._bigram_rows, one list of 32-bit shingle hashes per token list."""
    word_hash: dict[str, int] = {}
    rows = []
    for toks in token_lists:
        ids = []
        for w in toks:
            h = word_hash.get(w)
            if h is None:
                h = word_hash[w] = zlib.crc32(w.encode("utf-8"))
            ids.append(h)
        if len(ids) >= 2:
            rows.append([((x * 0x9E3779B1) ^ y) & M32 for x, y in zip(ids, ids[1:])])
        else:
            rows.append(ids[:1])
    return rows


def signatures(rows: list[list[int]], a: list[int], b: list[int], fmix: tuple[int, ...]) -> list[bytes]:
    """checks._minhash_rows for each row, as little-endian uint32 bytes.

    The permutations sit in 64-bit lanes of one Python int, so a shingle's value under all of
    them is one big-int multiply-add-mask (h * a + b < 2**64: no lane carries into the next),
    and the running minimum is kept lane by lane with borrow-free arithmetic: v + 2**32 - m has
    bit 32 set exactly where v >= m. A few big-int operations per shingle instead of a Python
    loop over the permutations."""
    s1, m1, s2, m2, s3 = fmix
    lanes = f"<{len(a)}Q"
    perm_a = int.from_bytes(struct.pack(lanes, *a), "little")
    perm_b = int.from_bytes(struct.pack(lanes, *b), "little")
    ones = int.from_bytes(struct.pack(lanes, *([1] * len(a))), "little")
    mask, bit32 = ones * M32, ones << 32
    out = []
    for row in rows:
        low = None
        for h in row:
            h ^= h >> s1
            h = (h * m1) & M32
            h ^= h >> s2
            h = (h * m2) & M32
            h ^= h >> s3
            v = (perm_a * h + perm_b) & mask
            if low is None:
                low = v
            else:
                keep = (((v + bit32 - low) >> 32) & ones) * M32  # lanes where v >= low
                low = (low & keep) | (v & (keep ^ mask))
        if low is None:
            raise ValueError("every set needs at least one shingle")
        out.append(struct.pack(f"<{len(a)}I", *struct.unpack(lanes, low.to_bytes(8 * len(a), "little"))))
    return out


def similar(left: list, right: list | None, threshold: float) -> list[tuple[int, int, float]]:
    """checks.similar_pairs for a few refs (same pairs, same similarities, same order)."""
    same_list = right is None
    right = left if right is None else right
    values = {id(r): struct.unpack(f"<{len(r.signature) // 4}I", r.signature) for r in (*left, *right)}
    out: list[tuple[int, int, float]] = []
    for i, x in enumerate(left):
        for j, y in enumerate(right):
            if same_list and j <= i:
                continue
            if x.norm == y.norm:
                out.append((i, j, 1.0))
                continue
            if x.context != y.context:
                continue
            xs, ys = values[id(x)], values[id(y)]
            sim = sum(map(operator.eq, xs, ys)) / len(xs)
            if sim >= threshold:
                out.append((i, j, sim))
    out.sort()
    return out
