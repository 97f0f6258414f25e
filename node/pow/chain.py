"""The chain of spec pow-v1 sections 2 and 4: references, the step, the sample commitment, samples.

A step ``t`` computes ``X_{t+1}[i] = mix(X_t[i] . B_{t mod m} + sum_r X_{j_{t,g,r}}[(i + o_{t,g,r})
mod n] + sigma_t[i])`` for row ``i`` in band ``g``, with the references ``(j, o)`` drawn from
``d_{t-1}`` (all ``(0, 0)`` at ``t = 0``).

The product is exact: int8 inputs are converted to float32 and multiplied in slices of at most
1024 along the inner dimension, so every partial sum (a subset sum of at most 1024 products of
magnitude <= 2^14) stays within 2^24, where float32 represents every integer exactly, whatever
the BLAS summation order; the slices are then added in int32. On this machine that is about twice
as fast as float64 BLAS and far faster than numpy's integer matmul (which uses no BLAS).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import numpy as np

from node.pow.mix import mix

__all__ = [
    "G",
    "RF",
    "K_SLICE",
    "band_of",
    "band_size",
    "band_refs",
    "step_refs",
    "sample_commit",
    "derive_samples",
    "exact_matmul",
    "gather_refs",
    "combine",
    "step",
]

G = 64  # row bands
RF = 4  # references per band
K_SLICE = 1024  # inner-dimension slice that keeps float32 partial sums exact

REF_DOMAIN = b"gpow.ref.v1"
SAMPLE_DOMAIN = b"gpow.sample.v1"
SAMPLE_COMMIT_DOMAIN = b"gpow.sample-commit.v1"


def band_size(n: int) -> int:
    return n // G


def band_of(i: int, n: int) -> int:
    """Band of row ``i``: ``i div (n/G)``."""
    return i // (n // G)


def band_refs(d_prev: bytes | None, t: int, n: int, g: int) -> list[tuple[int, int]]:
    """The four ``(j, o)`` of band ``g`` at step ``t`` (``d_prev`` = ``d_{t-1}``, unused at t=0)."""
    if t == 0:
        return [(0, 0)] * RF
    if d_prev is None or len(d_prev) != 32:
        raise ValueError("step t >= 1 needs the 32-byte digest d_{t-1}")
    out = []
    for r in range(RF):
        h = hashlib.sha256(REF_DOMAIN + d_prev + struct.pack("<II", g, r)).digest()
        j = int.from_bytes(h[0:8], "little") % t
        o = int.from_bytes(h[8:16], "little") % n
        out.append((j, o))
    return out


def step_refs(d_prev: bytes | None, t: int, n: int) -> np.ndarray:
    """All references of step ``t``: shape (G, RF, 2) int64, ``[g, r] = (j, o)``."""
    return np.array([band_refs(d_prev, t, n, g) for g in range(G)], dtype=np.int64).reshape(G, RF, 2)


def sample_commit(reveal: bytes) -> bytes:
    """``H("gpow.sample-commit.v1" || r)``: what the challenge commits to before the reveal."""
    return hashlib.sha256(SAMPLE_COMMIT_DOMAIN + bytes(reveal)).digest()


def derive_samples(root: bytes, reveal: bytes, k: int, T: int, n: int) -> list[tuple[int, int]]:
    """The ``k`` samples ``(t_s, i_s)`` from the trace root and the reveal (repeats kept)."""
    out = []
    base = hashlib.sha256(SAMPLE_DOMAIN + bytes(root) + bytes(reveal))
    for s in range(k):
        h = base.copy()
        h.update(struct.pack("<I", s))
        d = h.digest()
        out.append((int.from_bytes(d[0:8], "little") % T, int.from_bytes(d[8:16], "little") % n))
    return out


def exact_matmul(X: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Exact int8 product ``X . B`` as int32; ``X`` (rows, n) and ``B`` (n, n) int8 or float32.

    Float32 inputs are used as they are (pass them pre-converted to avoid repeated conversions).
    """
    Xf = X if X.dtype == np.float32 else X.astype(np.float32)
    Bf = B if B.dtype == np.float32 else B.astype(np.float32)
    n = Bf.shape[0]
    if n <= K_SLICE:
        return (Xf @ Bf).astype(np.int32)
    acc = np.zeros((Xf.shape[0], Bf.shape[1]), dtype=np.int32)
    for k0 in range(0, n, K_SLICE):
        part = Xf[:, k0 : k0 + K_SLICE] @ Bf[k0 : k0 + K_SLICE]
        acc += part.astype(np.int32)
    return acc


def gather_refs(states: np.ndarray | Sequence[np.ndarray], refs: np.ndarray, n: int) -> np.ndarray:
    """Sum over ``r`` of the reference rows of every row, as int32 (n, n).

    ``states`` is the pool: a (S, n, n) int8 array, or a sequence of (n, n) int8 states indexed by
    ``j``. ``refs`` is :func:`step_refs` output.
    """
    bs = band_size(n)
    rows = np.arange(n)
    acc = np.zeros((n, n), dtype=np.int32)
    if isinstance(states, np.ndarray) and states.ndim == 3:
        for r in range(RF):
            j_row = np.repeat(refs[:, r, 0], bs)
            o_row = np.repeat(refs[:, r, 1], bs)
            acc += states[j_row, (rows + o_row) % n]
        return acc
    for g in range(G):
        band = slice(g * bs, (g + 1) * bs)
        for r in range(RF):
            j, o = int(refs[g, r, 0]), int(refs[g, r, 1])
            acc[band] += np.asarray(states[j])[(rows[band] + o) % n]
    return acc


def combine(A: np.ndarray, ref_sum: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``mix(A + ref_sum + sigma)`` with the salt added mod 2^32; rows of A pair with ``sigma``.

    ``A`` and ``ref_sum`` are int32/int64 arrays (rows, n); ``sigma`` is (rows,) uint32. Returns int8.
    """
    v = (A.astype(np.int64) + ref_sum) if A.dtype != np.int32 else A + ref_sum.astype(np.int32, copy=False)
    if v.dtype == np.int32:
        u = v.view(np.uint32)
        u += sigma.astype(np.uint32)[:, None]
        return mix(u)
    return mix(v + sigma.astype(np.int64)[:, None])


def step(X_t: np.ndarray, B: np.ndarray, ref_sum: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """One full step: ``X_{t+1}`` (n, n) int8 from ``X_t``, ``B_{t mod m}`` (int8 or float32),
    the summed reference rows (:func:`gather_refs`) and ``sigma_t`` (n,) uint32."""
    return combine(exact_matmul(X_t, B), ref_sum, sigma)
