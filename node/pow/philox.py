"""Philox4x32-10 random streams (spec pow-v1 section 1), scalar and vectorised.

A *stream* ``(tag, id)`` is the sequence of 16-byte blocks ``Philox(key, ctr=(b mod 2^32, b >> 32,
id, tag))`` for ``b = 0, 1, ...``. Matrices, salts and single matrix rows are slices of streams.

The vectorised path keeps the four counter words in uint64 arrays (so the 32x32 -> 64-bit products
are plain numpy multiplies) and works in chunks of 2^15 blocks, which keeps every temporary in
the L2 cache: on one core this generates a 4096 x 4096 matrix (2^20 blocks) in about 30 ms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "M0",
    "M1",
    "W0",
    "W1",
    "TAG_STATE",
    "TAG_B",
    "TAG_SALT",
    "philox4x32_10",
    "philox4x32_10_arrays",
    "stream_blocks",
    "stream_bytes",
    "matrix",
    "matrix_rows",
    "matrix_row",
    "x0_matrix",
    "b_matrix",
    "salt",
    "salt_at",
]

M0 = 0xD2511F53
M1 = 0xCD9E8D57
W0 = 0x9E3779B9
W1 = 0xBB67AE85
MASK32 = 0xFFFFFFFF
ROUNDS = 10

TAG_STATE = 0x53544154  # "STAT": X_0
TAG_B = 0x424D4154  # "BMAT": B_r
TAG_SALT = 0x544C4153  # "SALT": sigma_t

_CHUNK = 1 << 15  # blocks per vectorised chunk (four uint64 arrays of 256 KiB: L2-resident)

_U64_M0 = np.uint64(M0)
_U64_M1 = np.uint64(M1)
_U64_MASK = np.uint64(MASK32)
_U64_32 = np.uint64(32)


def philox4x32_10(ctr: Sequence[int], key: Sequence[int]) -> tuple[int, int, int, int]:
    """One Philox4x32-10 block, scalar Python ints (the reference the vector paths are tested on)."""
    c0, c1, c2, c3 = (int(x) & MASK32 for x in ctr)
    k0, k1 = (int(x) & MASK32 for x in key)
    for _ in range(ROUNDS):
        p0 = M0 * c0
        p1 = M1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & MASK32, p1 & MASK32, ((p0 >> 32) ^ c3 ^ k1) & MASK32, p0 & MASK32
        k0 = (k0 + W0) & MASK32
        k1 = (k1 + W1) & MASK32
    return c0, c1, c2, c3


def philox4x32_10_arrays(
    c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, c3: np.ndarray, key: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Philox over arrays of counters (any integer dtype holding values < 2^32, broadcastable).

    Returns four uint64 arrays holding the 32-bit output words. Used for scattered blocks (salts
    of many samples); contiguous streams use the faster :func:`stream_blocks`.
    """
    shape = np.broadcast_shapes(np.shape(c0), np.shape(c1), np.shape(c2), np.shape(c3))
    a = [np.broadcast_to(np.asarray(c, dtype=np.uint64), shape).copy() for c in (c0, c1, c2, c3)]
    x0, x1, x2, x3 = a
    k0, k1 = (int(x) & MASK32 for x in key)
    for _ in range(ROUNDS):
        p0 = x0 * _U64_M0
        p1 = x2 * _U64_M1
        x0 = (p1 >> _U64_32) ^ x1 ^ np.uint64(k0)
        x1 = p1 & _U64_MASK
        x2 = (p0 >> _U64_32) ^ x3 ^ np.uint64(k1)
        x3 = p0 & _U64_MASK
        k0 = (k0 + W0) & MASK32
        k1 = (k1 + W1) & MASK32
    return x0, x1, x2, x3


def _blocks_chunk(key: tuple[int, int], tag: int, id_: int, start: int, count: int, out: np.ndarray) -> None:
    """Blocks ``start .. start+count-1`` of stream (tag, id) into ``out`` (shape (count, 4) uint32).

    Round one is specialised: c2 = id and c3 = tag are scalars, so its second product is a
    constant. The remaining rounds run in place on preallocated uint64 arrays.
    """
    k0, k1 = key
    b = np.arange(start, start + count, dtype=np.uint64)
    # Round 1 with c0 = b mod 2^32, c1 = b >> 32, c2 = id, c3 = tag.
    p1 = M1 * (id_ & MASK32)
    lo = b & _U64_MASK
    hi = b >> _U64_32
    t = lo * _U64_M0  # p0
    x0 = hi ^ np.uint64(((p1 >> 32) ^ k0) & MASK32)
    x1 = np.full(count, p1 & MASK32, dtype=np.uint64)
    x2 = t >> _U64_32
    x2 ^= np.uint64((tag ^ k1) & MASK32)
    x3 = t & _U64_MASK
    k0 = (k0 + W0) & MASK32
    k1 = (k1 + W1) & MASK32
    u = lo  # reuse as scratch
    for _ in range(ROUNDS - 1):
        np.multiply(x0, _U64_M0, out=t)  # p0 = M0 * c0
        np.multiply(x2, _U64_M1, out=u)  # p1 = M1 * c2
        # new c0 = hi(p1) ^ c1 ^ k0, written where the old c0 was (no longer needed)
        np.right_shift(u, _U64_32, out=x0)
        x0 ^= x1
        x0 ^= np.uint64(k0)
        np.bitwise_and(u, _U64_MASK, out=x1)  # new c1 = lo(p1)
        # new c2 = hi(p0) ^ c3 ^ k1
        np.right_shift(t, _U64_32, out=x2)
        x2 ^= x3
        x2 ^= np.uint64(k1)
        np.bitwise_and(t, _U64_MASK, out=x3)  # new c3 = lo(p0)
        k0 = (k0 + W0) & MASK32
        k1 = (k1 + W1) & MASK32
    out[:, 0] = x0
    out[:, 1] = x1
    out[:, 2] = x2
    out[:, 3] = x3


def stream_blocks(key: Sequence[int], tag: int, id_: int, start: int, count: int) -> np.ndarray:
    """Blocks ``start .. start+count-1`` of stream (tag, id): shape (count, 4), uint32 words."""
    if start < 0 or count < 0 or start + count > 2**64:
        raise ValueError(f"block range {start}+{count} out of the 64-bit counter space")
    k = (int(key[0]) & MASK32, int(key[1]) & MASK32)
    out = np.empty((count, 4), dtype=np.uint32)
    for s in range(0, count, _CHUNK):
        e = min(count, s + _CHUNK)
        _blocks_chunk(k, tag, id_, start + s, e - s, out[s:e])
    return out


def stream_bytes(key: Sequence[int], tag: int, id_: int, start_block: int, nblocks: int) -> np.ndarray:
    """The bytes of blocks ``start_block ..`` of stream (tag, id), each word u32le: uint8 array."""
    words = stream_blocks(key, tag, id_, start_block, nblocks)
    return words.astype("<u4", copy=False).reshape(-1).view(np.uint8)


def matrix_rows(key: Sequence[int], tag: int, id_: int, n: int, row0: int, nrows: int) -> np.ndarray:
    """Rows ``row0 .. row0+nrows-1`` of matrix (tag, id): shape (nrows, n), int8."""
    per_row = n // 16
    b = stream_bytes(key, tag, id_, row0 * per_row, nrows * per_row)
    return b.view(np.int8).reshape(nrows, n)


def matrix(key: Sequence[int], tag: int, id_: int, n: int) -> np.ndarray:
    """Matrix (tag, id): element ``i*n + c`` is byte ``i*n + c`` of the stream. Shape (n, n), int8."""
    return matrix_rows(key, tag, id_, n, 0, n)


def matrix_row(key: Sequence[int], tag: int, id_: int, n: int, i: int) -> np.ndarray:
    """Row ``i`` of matrix (tag, id) alone (blocks i*n/16 .. (i+1)*n/16 - 1): shape (n,), int8."""
    return matrix_rows(key, tag, id_, n, i, 1)[0]


def x0_matrix(key: Sequence[int], n: int) -> np.ndarray:
    """``X_0`` = matrix (STAT, 0)."""
    return matrix(key, TAG_STATE, 0, n)


def b_matrix(key: Sequence[int], r: int, n: int) -> np.ndarray:
    """``B_r`` = matrix (BMAT, r)."""
    return matrix(key, TAG_B, r, n)


def salt(key: Sequence[int], t: int, n: int) -> np.ndarray:
    """``sigma_t[0..n-1]``: word 0 of blocks 0..n-1 of stream (SALT, t). Shape (n,), uint32."""
    return stream_blocks(key, TAG_SALT, t, 0, n)[:, 0].copy()


def salt_at(key: Sequence[int], t: np.ndarray | Sequence[int], i: np.ndarray | Sequence[int]) -> np.ndarray:
    """``sigma_t[i]`` for arrays of (t, i) pairs at once (one Philox block each): uint32 array."""
    t_arr = np.asarray(t, dtype=np.uint64)
    i_arr = np.asarray(i, dtype=np.uint64)
    w0, _, _, _ = philox4x32_10_arrays(i_arr & _U64_MASK, i_arr >> _U64_32, t_arr, np.asarray(TAG_SALT, dtype=np.uint64), key)
    return w0.astype(np.uint32)
