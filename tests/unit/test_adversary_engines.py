"""The harness's engine-level adversaries, checked against the real verifier (no network)."""

from __future__ import annotations

import hashlib

from node.harness.adversaries import node_parts
from node.pow.chain import derive_samples
from node.pow.cpu_engine import CpuEngine
from node.pow.engine import ChallengeParams
from node.pow.openings import build_openings
from node.pow.verifier import verify

N, T, M, K = 64, 24, 2, 16


def _params(i: int = 0) -> ChallengeParams:
    return ChallengeParams(hashlib.sha256(b"cheat" + bytes([i])).digest(), bytes(32), bytes([2]) * 32, N, T, M)


def _reveal(x: int) -> bytes:
    return hashlib.sha256(b"reveal" + x.to_bytes(4, "little")).digest()


def test_grind_refs_gives_up_on_a_real_sized_chain():
    """Steering fails: the partial pool's recomputation explodes and the commitment never comes."""
    import pytest

    from node.harness.adversaries.engines import GaveUp

    with pytest.raises(GaveUp):
        node_parts("grind-refs").answerer(0).prove(CpuEngine(memory_budget_bytes=1 << 26), _params(), deadline_s=1.0)


def test_grind_refs_tampers_one_row_per_state_and_is_caught_where_sampled():
    T = 8
    params = ChallengeParams(_params().seed, bytes(32), bytes([2]) * 32, N, T, M)
    engine = CpuEngine(memory_budget_bytes=1 << 26)
    honest = engine.prove(params)
    cheat = node_parts("grind-refs").answerer(0)
    trace = cheat.prove(engine, params)
    assert trace.root != honest.root
    assert all(trace.row(s, 0) != honest.row(s, 0) for s in range(1, T + 1))
    # Samples come from the root and the reveal: find a reveal whose samples land on a rewritten row.
    for x in range(200):
        samples = derive_samples(trace.root, _reveal(x), K, T, N)
        if any(i == 0 and t >= 1 for t, i in samples):
            break
    else:
        raise AssertionError("no reveal among 200 samples row 0")
    res = verify(params, K, trace.root, trace.digests[-1], _reveal(x), build_openings(trace, _reveal(x), K))
    assert not res.ok and any(f.check.startswith("relation") or "relation" in f.check for f in res.failures), res.failures


def test_zero_chain_and_corrupt_rows_fail_every_challenge():
    params = _params(1)
    engine = CpuEngine(memory_budget_bytes=1 << 26)
    for spec in ("zero-chain", "corrupt-rows:1.0"):
        trace = node_parts(spec).answerer(0).prove(engine, params)
        res = verify(params, K, trace.root, trace.digests[-1], _reveal(1), build_openings(trace, _reveal(1), K))
        assert not res.ok, spec
