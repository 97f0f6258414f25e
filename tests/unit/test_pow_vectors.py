"""Every known-answer vector of spec pow-v1 (tests/data/pow-v1-vectors.json), reproduced exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.pow import merkle, philox
from node.pow.chain import band_of, band_refs, derive_samples, sample_commit
from node.pow.cpu_engine import CpuEngine, CpuTrace
from node.pow.engine import ChallengeParams
from node.pow.mix import mix, mix_scalar
from node.pow.openings import build_openings

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "data" / "pow-v1-vectors.json").read_text())
CHAINS = VECTORS["chains"]


def _int(x: Any) -> int:
    return int(x, 16) if isinstance(x, str) else int(x)


def _params(c: dict[str, Any]) -> ChallengeParams:
    return ChallengeParams(
        bytes.fromhex(c["seed"]),
        bytes.fromhex(c["validator"]),
        bytes.fromhex(c["executor"]),
        c["n"],
        c["T"],
        c["m"],
    )


@pytest.fixture(scope="module")
def traces() -> dict[int, CpuTrace]:
    """Each vector chain proved once (the n=2048 one takes about a second)."""
    engine = CpuEngine()
    return {x: engine.prove(_params(c)) for x, c in enumerate(CHAINS)}


def _ids(c: dict[str, Any]) -> str:
    return f"n{c['n']}-T{c['T']}-m{c['m']}"


@pytest.mark.parametrize("v", VECTORS["philox4x32_10"])
def test_philox_scalar(v: dict[str, Any]) -> None:
    out = philox.philox4x32_10([_int(x) for x in v["ctr"]], [_int(x) for x in v["key"]])
    assert out == tuple(_int(x) for x in v["out"])


def test_philox_arrays_match_vectors_together() -> None:
    vs = VECTORS["philox4x32_10"]
    ctr = np.array([[_int(x) for x in v["ctr"]] for v in vs], dtype=np.uint64)
    for v, row in zip(vs, ctr):
        words = philox.philox4x32_10_arrays(row[0:1], row[1:2], row[2:3], row[3:4], [_int(x) for x in v["key"]])
        assert [int(w[0]) for w in words] == [_int(x) for x in v["out"]]


def test_stream_blocks_match_scalar_including_high_counter_word() -> None:
    """The fast chunked generator equals the scalar definition, also across b = 2^32 (c1 != 0)."""
    key = (0x12345678, 0x9ABCDEF0)
    for start in (0, 70_000, 2**32 - 3):
        got = philox.stream_blocks(key, philox.TAG_B, 5, start, 7)
        for x in range(7):
            b = start + x
            want = philox.philox4x32_10((b & 0xFFFFFFFF, b >> 32, 5, philox.TAG_B), key)
            assert tuple(int(w) for w in got[x]) == want
    # A stream longer than one internal chunk: spot-check the block after the chunk boundary.
    long = philox.stream_blocks(key, philox.TAG_STATE, 0, 0, (1 << 15) + 3)
    b = 1 << 15
    assert tuple(int(w) for w in long[b]) == philox.philox4x32_10((b, 0, 0, philox.TAG_STATE), key)


@pytest.mark.parametrize("v", VECTORS["mix"])
def test_mix(v: dict[str, Any]) -> None:
    assert mix_scalar(v["in"]) == v["out"]
    assert int(mix(np.array([v["in"]], dtype=np.int32))[0]) == v["out"]
    assert int(mix(np.array([v["in"] & 0xFFFFFFFF], dtype=np.uint32))[0]) == v["out"]
    assert int(mix(np.array([v["in"] + 2**32 * 3], dtype=np.int64))[0]) == v["out"]


@pytest.mark.parametrize("ci", range(len(CHAINS)), ids=[_ids(c) for c in CHAINS])
def test_chain_generation_fields(ci: int) -> None:
    c = CHAINS[ci]
    p = _params(c)
    key = p.philox_key()
    n = p.n
    assert list(key) == c["philox_key"]
    assert philox.x0_matrix(key, n)[0, :16].tolist() == c["X0_row0_first16"]
    assert philox.matrix_row(key, philox.TAG_STATE, 0, n, 0)[:16].tolist() == c["X0_row0_first16"]
    assert philox.b_matrix(key, 0, n)[0, :16].tolist() == c["B0_row0_first16"]
    assert philox.b_matrix(key, p.m - 1, n)[n - 1, n - 16 :].tolist() == c["B_last_row_last16"]
    assert philox.matrix_row(key, philox.TAG_B, p.m - 1, n, n - 1)[n - 16 :].tolist() == c["B_last_row_last16"]
    assert philox.salt(key, 0, n)[:4].tolist() == c["salt0_first4"]
    assert philox.salt_at(key, [0, 0, 0, 0], [0, 1, 2, 3]).tolist() == c["salt0_first4"]


@pytest.mark.parametrize("ci", range(len(CHAINS)), ids=[_ids(c) for c in CHAINS])
def test_chain_commitment_and_samples(ci: int, traces: dict[int, CpuTrace]) -> None:
    c, tr = CHAINS[ci], traces[ci]
    p = tr.params
    assert [d.hex() for d in tr.digests] == c["digests"]
    assert tr.root.hex() == c["root"]
    for band, field in ((0, "refs_band0"), (63, "refs_band63")):
        got = [[list(jo) for jo in band_refs(tr.digests[t - 1] if t else None, t, p.n, band)] for t in range(p.T)]
        assert got == c[field]
    reveal = bytes.fromhex(c["reveal"])
    assert sample_commit(reveal).hex() == c["sample_commit"]
    assert [list(s) for s in derive_samples(tr.root, reveal, c["k"], p.T, p.n)] == c["samples"]


@pytest.mark.parametrize("ci", range(len(CHAINS)), ids=[_ids(c) for c in CHAINS])
def test_chain_first_sample(ci: int, traces: dict[int, CpuTrace]) -> None:
    c, tr = CHAINS[ci], traces[ci]
    fs = c["first_sample"]
    p = tr.params
    n, t, i = p.n, fs["t"], fs["i"]
    assert band_of(i, n) == fs["band"]
    refs = band_refs(tr.digests[t - 1] if t else None, t, n, fs["band"])
    assert [list(jo) for jo in refs] == fs["refs"]
    assert int(philox.salt(p.philox_key(), t, n)[i]) == fs["salt"]
    assert int(philox.salt_at(p.philox_key(), [t], [i])[0]) == fs["salt"]
    assert list(np.frombuffer(tr.row(t, i), np.int8)[:16]) == fs["row_t_first16"]
    assert list(np.frombuffer(tr.row(t + 1, i), np.int8)[:16]) == fs["row_next_first16"]
    assert [list(np.frombuffer(tr.row(j, (i + o) % n), np.int8)[:16]) for j, o in refs] == fs["ref_rows_first16"]
    assert merkle.row_node(tr.row(t + 1, i)).hex() == fs["row_next_node"]
    assert tr.row_nodes(t + 1)[i].tobytes().hex() == fs["row_next_node"]
    assert merkle.top_leaf(t + 1, tr.digests[t + 1]).hex() == fs["top_leaf_next"]
    # The same paths as the openings carry them.
    op = build_openings(tr, bytes.fromhex(c["reveal"]), 1)
    assert [h.hex() for h in op.rows[(t + 1, i)].path] == fs["row_next_path"]
    assert [h.hex() for h in op.digests[t + 1].proof] == fs["top_path_next"]
    assert merkle.verify_inclusion(
        bytes.fromhex(fs["row_next_node"]), i, n, [bytes.fromhex(h) for h in fs["row_next_path"]], tr.digests[t + 1]
    )
    assert merkle.verify_inclusion(
        bytes.fromhex(fs["top_leaf_next"]), t + 1, p.T + 1, [bytes.fromhex(h) for h in fs["top_path_next"]], tr.root
    )


def test_state_digest_equals_tree_over_chunks() -> None:
    """For n > 1024 the row-node construction equals the spec's tree over all 1 KiB chunks."""
    rng = np.random.default_rng(7)
    X = rng.integers(-128, 128, size=(2048, 2048), dtype=np.int8)
    buf = X.tobytes()
    chunks = [merkle.leaf_hash(buf[o : o + 1024]) for o in range(0, len(buf), 1024)]
    assert merkle.state_digest(X) == merkle.mth(chunks)
    X64 = X[:64, :64].copy()
    assert merkle.state_digest(X64) == merkle.mth([merkle.leaf_hash(r.tobytes()) for r in X64])
