"""RFC 9162 Merkle Tree Hashes and inclusion proofs, and the state digests of spec pow-v1 section 3.

- ``leaf_hash(x) = H(0x00 || x)``, ``node_hash(l, r) = H(0x01 || l || r)``; a tree of ``N`` leaves
  splits at the largest power of two below ``N``. Built level by level, that is the same as
  carrying an unpaired last node up unchanged, which is what :func:`build_levels` does.
- A state's tree has the ``n*n/cs`` chunks (``cs = min(n, 1024)`` bytes) as leaves. Row ``i`` is a
  complete subtree (its *row node*); the state digest ``d_s`` is the tree over the ``n`` row nodes.
- The trace root is the tree over the top leaves ``L_s = H(0x00 || u32le(s) || d_s)``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import numpy as np

__all__ = [
    "HASH_BYTES",
    "chunk_size",
    "leaf_hash",
    "node_hash",
    "mth",
    "build_levels",
    "inclusion_proof",
    "proof_length",
    "root_from_proof",
    "verify_inclusion",
    "row_node",
    "row_nodes",
    "pow2_levels",
    "pow2_root",
    "pow2_path",
    "state_digest",
    "top_leaf",
    "top_leaves",
    "trace_root",
    "top_proof",
]

HASH_BYTES = 32
_sha256 = hashlib.sha256


def chunk_size(n: int) -> int:
    """Leaf size of a state's tree: ``cs = min(n, 1024)`` bytes."""
    return min(n, 1024)


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _largest_pow2_below(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def build_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """All levels of the RFC 9162 tree over the given *leaf hashes*, bottom (leaves) first.

    An unpaired last node is carried up unchanged, which reproduces the RFC's split at the largest
    power of two. The last level holds the single root. Needs at least one leaf.
    """
    if not leaves:
        raise ValueError("a tree needs at least one leaf")
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        cur = levels[-1]
        nxt = [node_hash(cur[j], cur[j + 1]) for j in range(0, len(cur) - 1, 2)]
        if len(cur) % 2:
            nxt.append(cur[-1])
        levels.append(nxt)
    return levels


def mth(leaves: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash over leaf hashes (RFC 9162 MTH of the leaf inputs whose hashes these are).

    An empty tree hashes to ``H("")`` as in the RFC.
    """
    if not leaves:
        return _sha256(b"").digest()
    return build_levels(leaves)[-1][0]


def inclusion_proof(levels: list[list[bytes]], index: int) -> list[bytes]:
    """RFC 9162 inclusion proof (bottom-up) of leaf ``index``, from :func:`build_levels` output."""
    size = len(levels[0])
    if not 0 <= index < size:
        raise IndexError(f"leaf index {index} outside a tree of {size} leaves")
    proof: list[bytes] = []
    idx = index
    for level in levels[:-1]:
        sib = idx ^ 1
        if sib < len(level):
            proof.append(level[sib])
        idx >>= 1  # an unpaired node is carried up: no sibling at this level
    return proof


def proof_length(index: int, size: int) -> int:
    """How many hashes RFC 9162 requires in the inclusion proof of leaf ``index`` among ``size``."""
    if not 0 <= index < size:
        raise IndexError(f"leaf index {index} outside a tree of {size} leaves")
    length = 0
    while size > 1:
        k = _largest_pow2_below(size)
        if index < k:
            size = k
        else:
            index -= k
            size -= k
        length += 1
    return length


def root_from_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes | None:
    """RFC 9162 section 2.1.3.2: the root implied by ``leaf`` and ``proof``, or None if malformed."""
    if not 0 <= index < size:
        return None
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if len(p) != HASH_BYTES or sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True when ``proof`` proves leaf hash ``leaf`` at ``index`` in a tree of ``size`` with ``root``."""
    got = root_from_proof(leaf, index, size, proof)
    return got is not None and got == root


# --- power-of-two trees over numpy node arrays (row nodes, chunk subtrees) ---------------------


def _pair_up(level: np.ndarray) -> np.ndarray:
    """One level up of a power-of-two tree: (N, 32) uint8 -> (N/2, 32) uint8."""
    pairs = level.reshape(-1, 2 * HASH_BYTES)
    # Slicing one bytes object is faster than a tobytes() call per row.
    buf = pairs.tobytes()
    step = 2 * HASH_BYTES
    raw = b"".join(_sha256(b"\x01" + buf[o : o + step]).digest() for o in range(0, len(buf), step))
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, HASH_BYTES)


def pow2_levels(nodes: np.ndarray) -> list[np.ndarray]:
    """Levels of the tree over ``nodes`` ((N, 32) uint8, N a power of two), leaves first."""
    n = nodes.shape[0]
    if n < 1 or n & (n - 1):
        raise ValueError(f"node count {n} is not a power of two")
    levels = [np.ascontiguousarray(nodes, dtype=np.uint8)]
    while levels[-1].shape[0] > 1:
        levels.append(_pair_up(levels[-1]))
    return levels


def pow2_root(nodes: np.ndarray) -> bytes:
    return pow2_levels(nodes)[-1][0].tobytes()


def pow2_path(levels: list[np.ndarray], index: int) -> list[bytes]:
    """Bottom-up siblings of leaf ``index`` in a power-of-two tree (= its RFC 9162 proof)."""
    out = []
    idx = index
    for level in levels[:-1]:
        out.append(level[idx ^ 1].tobytes())
        idx >>= 1
    return out


def row_node(row: bytes) -> bytes:
    """Row node of one row of ``n`` bytes: the tree over its ``n/cs`` chunks (one leaf if n <= 1024)."""
    n = len(row)
    cs = chunk_size(n)
    if n == cs:
        return leaf_hash(row)
    leaves = [leaf_hash(row[o : o + cs]) for o in range(0, n, cs)]
    return build_levels(leaves)[-1][0]


def row_nodes(X: np.ndarray) -> np.ndarray:
    """Row nodes of every row of ``X`` ((rows, n) int8/uint8): shape (rows, 32), uint8."""
    rows, n = X.shape
    cs = chunk_size(n)
    buf = np.ascontiguousarray(X).tobytes()
    leaves = b"".join(_sha256(b"\x00" + buf[o : o + cs]).digest() for o in range(0, len(buf), cs))
    level = np.frombuffer(leaves, dtype=np.uint8).reshape(-1, HASH_BYTES)
    per_row = n // cs  # power of two: pairing whole levels never crosses a row boundary
    while per_row > 1:
        level = _pair_up(level)
        per_row //= 2
    return level.reshape(rows, HASH_BYTES)


def state_digest(X: np.ndarray) -> bytes:
    """``d_s`` of a full state ((n, n) int8)."""
    return pow2_root(row_nodes(X))


# --- the trace commitment -----------------------------------------------------------------------


def top_leaf(s: int, digest: bytes) -> bytes:
    """``L_s = H(0x00 || u32le(s) || d_s)``."""
    return _sha256(b"\x00" + struct.pack("<I", s) + digest).digest()


def top_leaves(digests: Sequence[bytes]) -> list[bytes]:
    return [top_leaf(s, d) for s, d in enumerate(digests)]


def trace_root(digests: Sequence[bytes]) -> bytes:
    """``R``: the tree over ``L_0 .. L_T``."""
    return mth(top_leaves(digests))


def top_proof(levels: list[list[bytes]], s: int) -> list[bytes]:
    """Inclusion proof of ``L_s`` against ``R`` from ``build_levels(top_leaves(digests))``."""
    return inclusion_proof(levels, s)
