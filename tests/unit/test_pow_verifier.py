"""The verifier: honest proofs pass; every kind of tampering fails with the check that names it;
a cheater who gets a fraction f of the relations wrong is caught at rate 1 - (1 - f)^k."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.pow import merkle, philox
from node.pow.chain import derive_samples, gather_refs, sample_commit, step, step_refs
from node.pow.cpu_engine import CpuEngine, CpuTrace
from node.pow.engine import ChallengeParams
from node.pow.openings import DigestOpening, Openings, RowOpening, build_openings
from node.pow.verifier import CHECKS, verify

ZERO = bytes(32)


def _params(seed: int, n: int = 64, T: int = 6, m: int = 2) -> ChallengeParams:
    return ChallengeParams(hashlib.sha256(b"test-seed" + bytes([seed])).digest(), ZERO, bytes([1]) * 32, n, T, m)


def _reveal(x: int) -> bytes:
    return hashlib.sha256(b"test-reveal" + x.to_bytes(4, "little")).digest()


def prove_custom(
    params: ChallengeParams,
    *,
    x0_patch: bool = False,
    shift_j_from: int | None = None,
) -> CpuTrace:
    """A chain built from the spec's parts with one deliberate deviation, then committed honestly:
    ``x0_patch`` changes X_0 row 0 (Philox not followed); ``shift_j_from`` uses reference state
    ``(j + 1) mod t`` instead of ``j`` from that step on."""
    n, T, m = params.n, params.T, params.m
    key = params.philox_key()
    states = np.empty((T + 1, n, n), dtype=np.int8)
    states[0] = philox.x0_matrix(key, n)
    if x0_patch:
        states[0, 0] ^= 0x55
    digests = [merkle.state_digest(states[0])]
    for t in range(T):
        refs = step_refs(digests[t - 1] if t else None, t, n)
        if shift_j_from is not None and t >= shift_j_from:
            refs[:, :, 0] = (refs[:, :, 0] + 1) % t
        states[t + 1] = step(states[t], philox.b_matrix(key, t % m, n), gather_refs(states, refs, n), philox.salt(key, t, n))
        digests.append(merkle.state_digest(states[t + 1]))
    return CpuTrace.from_states(params, states)


@pytest.fixture(scope="module")
def honest() -> tuple[ChallengeParams, CpuTrace]:
    p = _params(1, n=64, T=6, m=2)
    return p, CpuEngine().prove(p)


K = 12


def _check(p: ChallengeParams, tr: CpuTrace, reveal: bytes, op: Openings, **kw: object):
    return verify(p, K, tr.root, tr.digests[-1], reveal, op, **kw)  # type: ignore[arg-type]


def _flip(b: bytes, at: int = 0, mask: int = 0x01) -> bytes:
    x = bytearray(b)
    x[at % len(x)] ^= mask
    return bytes(x)


def _with_row(op: Openings, key: tuple[int, int], new: RowOpening | None) -> Openings:
    rows = dict(op.rows)
    if new is None:
        del rows[key]
    else:
        rows[key] = new
    return dataclasses.replace(op, rows=rows)


def _with_digest(op: Openings, s: int, new: DigestOpening | None) -> Openings:
    ds = dict(op.digests)
    if new is None:
        del ds[s]
    else:
        ds[s] = new
    return dataclasses.replace(op, digests=ds)


def test_honest_passes_with_timings(honest: tuple[ChallengeParams, CpuTrace]) -> None:
    p, tr = honest
    r = _reveal(0)
    res = _check(p, tr, r, build_openings(tr, r, K), sample_commit=sample_commit(r))
    assert res.ok and res.failures == []
    assert res.samples == derive_samples(tr.root, r, K, p.T, p.n)
    assert set(res.timings) >= {"philox", "products", "hashing", "total"}
    assert res.timings["total"] >= res.timings["philox"] > 0


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 255),
    n=st.sampled_from([64, 128]),
    T=st.integers(1, 5),
    m=st.integers(1, 4),
    k=st.integers(1, 10),
    rv=st.integers(0, 2**32 - 1),
)
def test_honest_proofs_verify(seed: int, n: int, T: int, m: int, k: int, rv: int) -> None:
    p = _params(seed, n=n, T=T, m=m)
    tr = CpuEngine().prove(p)
    op = build_openings(tr, _reveal(rv), k)
    res = verify(p, k, tr.root, tr.digests[-1], _reveal(rv), op, stop_at_first=False)
    assert res.ok, res.failures


def test_every_row_byte_and_path_hash_flip_fails_row_path(honest: tuple[ChallengeParams, CpuTrace]) -> None:
    p, tr = honest
    r = _reveal(1)
    op = build_openings(tr, r, K)
    for key, ent in op.rows.items():
        for at in (0, p.n // 2, p.n - 1):
            res = _check(p, tr, r, _with_row(op, key, RowOpening(_flip(ent.row, at), ent.path)))
            assert not res.ok and res.failures[0].check == "row-path", (key, at, res.failures)
        for h in range(len(ent.path)):
            path = list(ent.path)
            path[h] = _flip(path[h], h * 7, 0x80)
            res = _check(p, tr, r, _with_row(op, key, RowOpening(ent.row, tuple(path))))
            assert not res.ok and res.failures[0].check == "row-path", (key, h)


def test_every_digest_and_top_proof_flip_fails(honest: tuple[ChallengeParams, CpuTrace]) -> None:
    p, tr = honest
    r = _reveal(2)
    op = build_openings(tr, r, K)
    for s, ent in op.digests.items():
        res = _check(p, tr, r, _with_digest(op, s, DigestOpening(_flip(ent.digest, 9), ent.proof)))
        want = "d_T-mismatch" if s == p.T else "top-proof"
        assert not res.ok and res.failures[0].check == want, (s, res.failures)
        for h in range(len(ent.proof)):
            proof = list(ent.proof)
            proof[h] = _flip(proof[h], 31)
            res = _check(p, tr, r, _with_digest(op, s, DigestOpening(ent.digest, tuple(proof))))
            assert not res.ok and res.failures[0].check == "top-proof", (s, h)


def test_reveal_root_and_commit_tampering(honest: tuple[ChallengeParams, CpuTrace]) -> None:
    p, tr = honest
    r = _reveal(3)
    op = build_openings(tr, r, K)
    res = verify(p, K, tr.root, tr.digests[-1], _flip(r, 4), op)
    assert not res.ok and res.failures[0].check == "sample-mismatch"
    res = verify(p, K, _flip(tr.root, 1), tr.digests[-1], r, op)
    assert not res.ok and res.failures[0].check in ("sample-mismatch", "top-proof")
    res = _check(p, tr, r, op, sample_commit=sample_commit(_reveal(4)))
    assert not res.ok and res.failures[0].check == "reveal-commit"
    res = verify(p, K + 1, tr.root, tr.digests[-1], r, op)
    assert not res.ok and res.failures[0].check == "sample-count"
    res = verify(p, K, tr.root, tr.digests[-1], r[:31], op)
    assert not res.ok and res.failures[0].check == "format"


def test_committed_d_T_is_checked_where_opened(honest: tuple[ChallengeParams, CpuTrace]) -> None:
    p, tr = honest
    r = next(_reveal(x) for x in range(100) if any(t == p.T - 1 for t, _ in derive_samples(tr.root, _reveal(x), K, p.T, p.n)))
    res = verify(p, K, tr.root, _flip(tr.digests[-1], 3), r, build_openings(tr, r, K))
    assert not res.ok and res.failures[0].check == "d_T-mismatch"


def test_row_from_wrong_state_and_wrong_index(honest: tuple[ChallengeParams, CpuTrace]) -> None:
    p, tr = honest
    r = _reveal(5)
    op = build_openings(tr, r, K)
    t, i = op.samples[0]
    other_s = (t + 2) % (p.T + 1)
    lv = merkle.pow2_levels(tr.row_nodes(other_s))
    wrong_state = RowOpening(tr.row(other_s, i), tuple(merkle.pow2_path(lv, i)))
    res = _check(p, tr, r, _with_row(op, (t + 1, i), wrong_state))
    assert not res.ok and res.failures[0].check == "row-path" and res.failures[0].sample == 0
    lv = merkle.pow2_levels(tr.row_nodes(t + 1))
    j = (i + 1) % p.n
    wrong_index = RowOpening(tr.row(t + 1, j), tuple(merkle.pow2_path(lv, j)))
    res = _check(p, tr, r, _with_row(op, (t + 1, i), wrong_index))
    assert not res.ok and res.failures[0].check == "row-path"


def test_missing_extra_and_malformed_entries(honest: tuple[ChallengeParams, CpuTrace]) -> None:
    p, tr = honest
    r = _reveal(6)
    op = build_openings(tr, r, K)
    t, i = op.samples[0]
    assert _check(p, tr, r, _with_row(op, (t, i), None)).failures[0].check == "missing-row"
    assert _check(p, tr, r, _with_digest(op, t + 1, None)).failures[0].check == "missing-digest"
    ent = op.rows[(t, i)]
    assert _check(p, tr, r, _with_row(op, (t, i), RowOpening(ent.row[:-1], ent.path))).failures[0].check == "row-length"
    assert _check(p, tr, r, _with_row(op, (t, i), RowOpening(ent.row, ent.path[:-1]))).failures[0].check == "row-path"
    d = op.digests[t]
    res = _check(p, tr, r, _with_digest(op, t, DigestOpening(d.digest, d.proof + (d.digest,))))
    assert res.failures[0].check == "top-proof"
    unused = next(x for x in range(p.n) if (p.T, x) not in op.rows)
    lv = merkle.pow2_levels(tr.row_nodes(p.T))
    res = _check(p, tr, r, _with_row(op, (p.T, unused), RowOpening(tr.row(p.T, unused), tuple(merkle.pow2_path(lv, unused)))))
    assert not res.ok and res.failures[0].check == "extra-opening"
    short = dataclasses.replace(op, samples=op.samples[:-1])
    assert _check(p, tr, r, short).failures[0].check == "sample-count"


def test_reference_row_missing_is_refs_failure() -> None:
    p = _params(9, n=64, T=6, m=2)
    tr = CpuEngine().prove(p)
    r = next(_reveal(x) for x in range(100) if derive_samples(tr.root, _reveal(x), 1, p.T, p.n)[0][0] >= 2)
    op = build_openings(tr, r, 1)
    t, i = op.samples[0]
    ref_keys = [key for key in op.rows if key not in ((t, i), (t + 1, i))]
    assert ref_keys
    res = verify(p, 1, tr.root, tr.digests[-1], r, _with_row(op, ref_keys[0], None))
    assert not res.ok and res.failures[0].check == "refs"


def test_wrong_reference_state_fails_relation() -> None:
    """A prover that reads reference state j+1 instead of j (from step 2 on) commits consistently,
    so every Merkle check passes; the relation check catches every sample with t >= 2."""
    p = _params(11, n=64, T=5, m=2)
    tr = prove_custom(p, shift_j_from=2)
    honest_tr = CpuEngine().prove(p)
    assert tr.digests[:3] == honest_tr.digests[:3] and tr.digests[3] != honest_tr.digests[3]
    for x in range(20):
        r = _reveal(x)
        op = build_openings(tr, r, 6)
        res = verify(p, 6, tr.root, tr.digests[-1], r, op, stop_at_first=False)
        bad = {si for si, (t, _) in enumerate(res.samples) if t >= 2}
        assert {f.sample for f in res.failures} == bad
        assert all(f.check == "relation" for f in res.failures)


def test_x0_not_from_philox_fails_x0_row() -> None:
    p = _params(12, n=64, T=3, m=1)
    tr = prove_custom(p, x0_patch=True)
    for x in range(200):
        r = _reveal(x)
        op = build_openings(tr, r, 4)
        if (0, 0) in op.rows:
            res = verify(p, 4, tr.root, tr.digests[-1], r, op)
            assert not res.ok and res.failures[0].check == "x0-row"
            return
    pytest.fail("no reveal opened X_0[0] in 200 tries")


def test_collect_all_failures(honest: tuple[ChallengeParams, CpuTrace]) -> None:
    p, tr = honest
    r = _reveal(7)
    op = build_openings(tr, r, K)
    rows = {key: RowOpening(_flip(e.row, 3), e.path) for key, e in op.rows.items()}
    bad = dataclasses.replace(op, rows=rows)
    first = _check(p, tr, r, bad)
    every = _check(p, tr, r, bad, stop_at_first=False)
    assert len(first.failures) == 1
    assert {f.sample for f in every.failures} == set(range(K))
    assert all(f.check in CHECKS for f in every.failures)


def test_cheater_caught_at_rate_one_minus_one_minus_f_to_the_k() -> None:
    """A prover that writes garbage into exactly f*n rows of every new state (and computes every
    other row honestly from what it committed) gets exactly a fraction f of the T*n relations
    wrong. Over 400 reveals (fixed, so the test is deterministic) the verifier must catch it at
    1 - (1 - f)^k within 0.1 (about 4 standard deviations of a binomial with p ~ 0.57, n = 400);
    and every single verdict must agree with whether a sample hit a corrupted relation."""
    n, T, k, f = 64, 16, 8, 0.1
    p = _params(13, n=n, T=T, m=3)
    per_state = round(f * n)
    rng = np.random.default_rng(1234)
    corrupted: set[tuple[int, int]] = set()

    def hook(s: int, X: np.ndarray) -> None:
        rows = rng.choice(n, size=per_state, replace=False)
        for i in rows:
            X[i] = rng.integers(-128, 128, size=n, dtype=np.int8)
            corrupted.add((s - 1, int(i)))  # relation (t, i) produces X_{t+1}[i]

    tr = CpuEngine(state_hook=hook).prove(p)
    f_real = len(corrupted) / (T * n)
    caught = 0
    trials = 400
    for x in range(trials):
        r = _reveal(10_000 + x)
        op = build_openings(tr, r, k)
        res = verify(p, k, tr.root, tr.digests[-1], r, op)
        hit = any(s in corrupted for s in res.samples)
        assert res.ok == (not hit)
        if not res.ok:
            assert res.failures[0].check == "relation"
            caught += 1
    expected = 1 - (1 - f_real) ** k
    assert abs(caught / trials - expected) < 0.1, (caught / trials, expected)
