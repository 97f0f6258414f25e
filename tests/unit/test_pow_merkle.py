"""RFC 9162 trees: the level-wise construction against the RFC's recursive definitions."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.pow import merkle


def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def rfc_mth(d: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1, literally (over leaf inputs)."""
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return _h(b"\x01" + rfc_mth(d[:k]) + rfc_mth(d[k:]))


def rfc_path(m: int, d: list[bytes]) -> list[bytes]:
    """RFC 9162 section 2.1.3.1 PATH(m, D[n]), literally."""
    n = len(d)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return rfc_path(m, d[:k]) + [rfc_mth(d[k:])]
    return rfc_path(m - k, d[k:]) + [rfc_mth(d[:k])]


@pytest.mark.parametrize("size", list(range(1, 34)) + [63, 64, 65, 100])
def test_levels_root_and_every_proof_match_rfc(size: int) -> None:
    data = [bytes([x % 251, x // 251]) * 3 for x in range(size)]
    leaves = [merkle.leaf_hash(x) for x in data]
    levels = merkle.build_levels(leaves)
    root = rfc_mth(data)
    assert levels[-1][0] == root == merkle.mth(leaves)
    for m in range(size):
        proof = merkle.inclusion_proof(levels, m)
        assert proof == rfc_path(m, data)
        assert len(proof) == merkle.proof_length(m, size)
        assert merkle.verify_inclusion(leaves[m], m, size, proof, root)
        if proof:
            # Wrong index, wrong size, a flipped bit, a dropped or an extra hash: all rejected.
            assert not merkle.verify_inclusion(leaves[m], (m + 1) % size, size, proof, root) or size == 1
            bad = bytearray(proof[0])
            bad[5] ^= 0x10
            assert not merkle.verify_inclusion(leaves[m], m, size, [bytes(bad)] + proof[1:], root)
            assert not merkle.verify_inclusion(leaves[m], m, size, proof[:-1], root)
        assert not merkle.verify_inclusion(leaves[m], m, size, proof + [root], root)
        assert not merkle.verify_inclusion(leaves[m], m + size, size, proof, root)


def test_empty_tree_and_bad_index() -> None:
    assert merkle.mth([]) == _h(b"")
    with pytest.raises(IndexError):
        merkle.proof_length(3, 3)
    with pytest.raises(ValueError):
        merkle.build_levels([])


@given(st.integers(min_value=6, max_value=11), st.data())
def test_pow2_tree_over_numpy_nodes(log_n: int, data: st.DataObject) -> None:
    n = 1 << log_n
    seed = data.draw(st.integers(0, 2**32 - 1))
    nodes = np.random.default_rng(seed).integers(0, 256, size=(n, 32), dtype=np.uint8)
    as_bytes = [r.tobytes() for r in nodes]
    levels = merkle.pow2_levels(nodes)
    assert merkle.pow2_root(nodes) == merkle.build_levels(as_bytes)[-1][0]
    i = data.draw(st.integers(0, n - 1))
    assert merkle.pow2_path(levels, i) == merkle.inclusion_proof(merkle.build_levels(as_bytes), i)


def test_row_nodes_match_row_node_for_large_rows() -> None:
    X = np.random.default_rng(3).integers(-128, 128, size=(4, 4096), dtype=np.int8)
    nodes = merkle.row_nodes(X)
    for i in range(4):
        row = X[i].tobytes()
        chunks = [row[o : o + 1024] for o in range(0, 4096, 1024)]
        assert nodes[i].tobytes() == merkle.row_node(row) == rfc_mth(chunks)
