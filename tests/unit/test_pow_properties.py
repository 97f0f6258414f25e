"""Properties of proofs and of the verifier (hypothesis, plus one exhaustive sweep).

- Honest proofs for random small parameters and identities survive the proof file round trip and
  verify.
- Every single-byte change of a proof file is rejected, with the check its region calls for
  (ProofFormatError counts as the CLI's ``format`` check); random changes with random masks too.
- Cheapest checks first (issue 13): sizes before any hashing, top proofs before row paths, every
  junk proof rejected before any B matrix is generated; collect-all mode finds the same first
  failure as stop-at-first mode.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.pow import merkle
from node.pow.chain import derive_samples
from node.pow.cpu_engine import CpuEngine, CpuTrace
from node.pow.engine import ChallengeParams
from node.pow.openings import (
    DigestOpening,
    Openings,
    ProofFile,
    ProofFormatError,
    RowOpening,
    build_openings,
    decode_proof_file,
    encode_proof_file,
)
from node.pow.verifier import CHECKS, VerifyResult, verify


def _h(tag: str, x: int = 0) -> bytes:
    return hashlib.sha256(f"{tag}:{x}".encode()).digest()


def _verify_pf(pf: ProofFile, stop_at_first: bool = True) -> VerifyResult:
    return verify(pf.params, pf.k, pf.root, pf.d_T, pf.reveal, pf.openings, stop_at_first=stop_at_first)


def _verdict(raw: bytes) -> str | None:
    """None for an accepted proof file, else the first failure's check (``format`` when malformed)."""
    try:
        pf = decode_proof_file(raw)
    except ProofFormatError:
        return "format"
    res = _verify_pf(pf)
    if res.ok:
        return None
    assert len(res.failures) == 1  # stop at the first failure
    return res.failures[0].check


# --- honest proofs ------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    validator=st.binary(min_size=32, max_size=32),
    executor=st.binary(min_size=32, max_size=32),
    n=st.sampled_from([64, 128, 256]),
    T=st.integers(1, 6),
    m=st.integers(1, 5),
    k=st.integers(1, 16),
    reveal=st.binary(min_size=32, max_size=32),
)
def test_honest_proof_file_round_trip_verifies(
    seed: bytes, validator: bytes, executor: bytes, n: int, T: int, m: int, k: int, reveal: bytes
) -> None:
    p = ChallengeParams(seed, validator, executor, n, T, m)
    tr = CpuEngine().prove(p)
    raw = encode_proof_file(ProofFile(p, k, tr.root, tr.digests[-1], reveal, build_openings(tr, reveal, k)))
    pf = decode_proof_file(raw)
    assert encode_proof_file(pf) == raw  # one encoding per proof
    res = _verify_pf(pf, stop_at_first=False)
    assert res.ok, res.failures
    assert res.samples == derive_samples(tr.root, reveal, k, T, n)
    assert res.timings["products"] > 0  # an accepted proof had every relation multiplied out


# --- single-byte tampering of a whole proof file -------------------------------------------------


@pytest.fixture(scope="module")
def small_proof() -> tuple[bytes, ProofFile]:
    """n=64, T=3, m=2, k=3, distinct identities, and a reveal whose samples open d_T (a sample with
    t = T-1): the committed d_T is only checked where an opening proves it (spec section 5)."""
    p = ChallengeParams(_h("seed"), _h("validator"), _h("executor"), 64, 3, 2)
    tr = CpuEngine().prove(p)
    k = 3
    reveal = next(
        _h("reveal", x)
        for x in range(1000)
        if any(t == p.T - 1 for t, _ in derive_samples(tr.root, _h("reveal", x), k, p.T, p.n))
    )
    pf = ProofFile(p, k, tr.root, tr.digests[-1], reveal, build_openings(tr, reveal, k))
    return encode_proof_file(pf), pf


def _expected_regions(raw: bytes, pf: ProofFile) -> dict[int, set[str]]:
    """Byte offset -> the checks a change there must fail, for every field whose meaning is known.

    Fields are located in the order the encoder writes them (a cursor moves forward), so a hash
    that occurs twice is mapped at each of its own positions."""
    want: dict[int, set[str]] = {}
    cur = 0

    def mark(value: bytes, checks: set[str]) -> None:
        nonlocal cur
        at = raw.find(value, cur)
        assert at >= 0
        for x in range(at, at + len(value)):
            want[x] = checks
        cur = at + len(value)

    philox_bound = {"x0-row", "relation"}  # a different Philox key: X_0 rows or relations break
    p = pf.params
    mark(p.seed, philox_bound)
    mark(p.validator, philox_bound)
    mark(p.executor, philox_bound)
    mark(pf.root, {"sample-mismatch"})  # the samples are drawn from R
    mark(pf.d_T, {"d_T-mismatch"})
    mark(pf.reveal, {"sample-mismatch"})
    for s, d in sorted(pf.openings.digests.items()):
        mark(d.digest, {"d_T-mismatch"} if s == p.T else {"top-proof"})
        for h in d.proof:
            mark(h, {"top-proof"})
    for _, r in sorted(pf.openings.rows.items()):
        mark(r.row, {"row-path"})
        for h in r.path:
            mark(h, {"row-path"})
    return want


def test_every_single_byte_change_is_rejected(small_proof: tuple[bytes, ProofFile]) -> None:
    """Exhaustive over positions (one mask per position, cycling through the eight bits)."""
    raw, pf = small_proof
    assert _verdict(raw) is None
    regions = _expected_regions(raw, pf)
    assert len(regions) > len(raw) // 2  # most of the file is hashes and rows
    named = set(CHECKS)
    seen: set[str] = set()
    for pos in range(len(raw)):
        bad = bytearray(raw)
        bad[pos] ^= 1 << (pos % 8)
        check = _verdict(bytes(bad))
        assert check is not None, f"byte {pos} changed and the proof still verifies"
        assert check in named, (pos, check)
        if pos in regions:
            assert check in regions[pos], (pos, check, regions[pos])
        seen.add(check)
    # The sweep reached every stage of the verifier, Philox included (a changed identity or seed).
    assert {"format", "sample-mismatch", "d_T-mismatch", "top-proof", "row-path"} <= seen, seen
    assert seen & {"x0-row", "relation"}, seen


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_single_byte_change_is_rejected(small_proof: tuple[bytes, ProofFile], data: st.DataObject) -> None:
    raw, pf = small_proof
    pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
    mask = data.draw(st.integers(1, 255), label="mask")
    bad = bytearray(raw)
    bad[pos] ^= mask
    check = _verdict(bytes(bad))
    assert check in CHECKS, (pos, mask, check)
    regions = _expected_regions(raw, pf)
    if pos in regions:
        assert check in regions[pos]


# --- cheapest checks first -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mid() -> tuple[ChallengeParams, CpuTrace, bytes, Openings]:
    p = ChallengeParams(_h("mid"), _h("v"), _h("e"), 128, 8, 3)
    tr = CpuEngine().prove(p)
    reveal = _h("mid-reveal")
    return p, tr, reveal, build_openings(tr, reveal, 16)


def _row_key(op: Openings, sample: int, role: str) -> tuple[int, int]:
    t, i = op.samples[sample]
    return (t + 1, i) if role == "next" else (t, i)


Tamper = Callable[[Openings, int], Openings]


def _set_row(op: Openings, key: tuple[int, int], ent: RowOpening | None) -> Openings:
    rows = dict(op.rows)
    if ent is None:
        del rows[key]
    else:
        rows[key] = ent
    return dataclasses.replace(op, rows=rows)


def _set_digest(op: Openings, s: int, ent: DigestOpening) -> Openings:
    ds = dict(op.digests)
    ds[s] = ent
    return dataclasses.replace(op, digests=ds)


def _flip(b: bytes, at: int = 0) -> bytes:
    """Add 1 to one byte (not an XOR: two tampers of the same byte must not cancel out)."""
    return b[:at] + bytes([(b[at] + 1) & 0xFF]) + b[at + 1 :]


def t_row_short(op: Openings, si: int) -> Openings:
    key = _row_key(op, si, "next")
    e = op.rows[key]
    return _set_row(op, key, RowOpening(e.row[:-1], e.path))


def t_path_long(op: Openings, si: int) -> Openings:
    key = _row_key(op, si, "next")
    e = op.rows[key]
    return _set_row(op, key, RowOpening(e.row, e.path + (e.path[0],)))


def t_proof_short(op: Openings, si: int) -> Openings:
    s = op.samples[si][0]
    d = op.digests[s]
    return _set_digest(op, s, DigestOpening(d.digest, d.proof[:-1]))


def t_row_byte(op: Openings, si: int) -> Openings:
    key = _row_key(op, si, "next")
    e = op.rows[key]
    return _set_row(op, key, RowOpening(_flip(e.row, 5), e.path))


def t_path_hash(op: Openings, si: int) -> Openings:
    key = _row_key(op, si, "this")
    e = op.rows[key]
    return _set_row(op, key, RowOpening(e.row, (_flip(e.path[0]),) + e.path[1:]))


def t_proof_hash(op: Openings, si: int) -> Openings:
    s = op.samples[si][0] + 1
    d = op.digests[s]
    return _set_digest(op, s, DigestOpening(d.digest, d.proof[:-1] + (_flip(d.proof[-1], 3),)))


def t_missing_row(op: Openings, si: int) -> Openings:
    return _set_row(op, _row_key(op, si, "this"), None)


# Phase of each tamper: 0 sizes (no hashing), 1 top proofs and presence, 2 row paths.
TAMPERS: dict[str, tuple[Tamper, int, str]] = {
    "row-short": (t_row_short, 0, "row-length"),
    "path-long": (t_path_long, 0, "row-path"),
    "proof-short": (t_proof_short, 0, "top-proof"),
    "proof-hash": (t_proof_hash, 1, "top-proof"),
    "missing-row": (t_missing_row, 1, "missing-row"),
    "row-byte": (t_row_byte, 2, "row-path"),
    "path-hash": (t_path_hash, 2, "row-path"),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_junk_rejected_before_any_b_is_generated(mid: tuple[ChallengeParams, CpuTrace, bytes, Openings], name: str) -> None:
    p, tr, reveal, op = mid
    fn, phase, check = TAMPERS[name]
    last = len(op.samples) - 1
    res = verify(p, len(op.samples), tr.root, tr.digests[-1], reveal, fn(op, last))
    assert not res.ok and res.failures[0].check == check
    # Phase 0 names the entry (sample -1); later phases the first sample that uses it.
    assert res.failures[0].sample == -1 if phase == 0 else 0 <= res.failures[0].sample <= last
    assert res.timings["philox"] == 0 and res.timings["products"] == 0


@settings(max_examples=60, deadline=None)
@given(picks=st.lists(st.tuples(st.sampled_from(sorted(TAMPERS)), st.integers(0, 15)), min_size=1, max_size=3))
def test_first_failure_is_from_the_cheapest_phase(
    mid: tuple[ChallengeParams, CpuTrace, bytes, Openings], picks: list[tuple[str, int]]
) -> None:
    """Several tampers at once, at random samples: the verdict's one failure comes from the earliest
    phase any of them belongs to, wherever the samples are; collect-all mode reports the same
    failure first."""
    p, tr, reveal, op = mid
    bad = op
    applied = []
    for name, si in picks:
        try:
            bad = TAMPERS[name][0](bad, si)
        except (KeyError, IndexError):  # an earlier tamper removed what this one would change
            continue
        applied.append(name)
    if not applied:
        return
    k = len(op.samples)
    first = verify(p, k, tr.root, tr.digests[-1], reveal, bad)
    every = verify(p, k, tr.root, tr.digests[-1], reveal, bad, stop_at_first=False)
    assert not first.ok and len(first.failures) == 1
    assert every.failures[0] == first.failures[0]
    phase = min(TAMPERS[n][1] for n in applied)
    if phase == 0:
        assert first.failures[0].sample == -1
        assert first.failures[0].check in {"row-length", "row-path", "top-proof"}
    assert first.timings["philox"] == 0 and first.timings["products"] == 0


def test_sizes_before_top_proofs_before_row_paths(mid: tuple[ChallengeParams, CpuTrace, bytes, Openings]) -> None:
    p, tr, reveal, op = mid
    k, last = len(op.samples), len(op.samples) - 1
    # A bad top proof at sample 0 and a short row at the last sample: the size check wins.
    res = verify(p, k, tr.root, tr.digests[-1], reveal, t_row_short(t_proof_hash(op, 0), last))
    assert [(f.sample, f.check) for f in res.failures] == [(-1, "row-length")]
    # A bad row at sample 0 and a bad top proof at the last sample: the top proof wins.
    res = verify(p, k, tr.root, tr.digests[-1], reveal, t_proof_hash(t_row_byte(op, 0), last))
    assert res.failures[0].check == "top-proof"


def test_out_of_range_entry_is_rejected_first(mid: tuple[ChallengeParams, CpuTrace, bytes, Openings]) -> None:
    p, tr, reveal, op = mid
    k = len(op.samples)
    e = next(iter(op.rows.values()))
    res = verify(p, k, tr.root, tr.digests[-1], reveal, _set_row(op, (p.T + 1, 0), e))
    assert [(f.sample, f.check) for f in res.failures] == [(-1, "extra-opening")]
    d = next(iter(op.digests.values()))
    res = verify(p, k, tr.root, tr.digests[-1], reveal, _set_digest(op, p.T + 5, d))
    assert [(f.sample, f.check) for f in res.failures] == [(-1, "extra-opening")]


def test_false_relation_is_the_only_failure_that_reaches_the_products() -> None:
    """A committed false row (every Merkle proof holds) passes every cheap check: only the
    product finds it, after the B matrices were generated."""
    p = ChallengeParams(_h("cheat"), _h("v"), _h("e"), 64, 4, 2)

    def corrupt(s: int, X: np.ndarray) -> None:
        if s == p.T:
            X[:] = np.roll(X, 1, axis=1)  # every row of X_T wrong, every relation (T-1, i) false

    tr = CpuEngine(state_hook=corrupt).prove(p)
    reveal = next(
        _h("r", x) for x in range(1000) if any(t == p.T - 1 for t, _ in derive_samples(tr.root, _h("r", x), 6, p.T, p.n))
    )
    res = verify(p, 6, tr.root, tr.digests[-1], reveal, build_openings(tr, reveal, 6))
    assert not res.ok and res.failures[0].check == "relation"
    assert res.samples[res.failures[0].sample][0] == p.T - 1
    assert res.timings["philox"] > 0 and res.timings["products"] > 0
    # Its Merkle proofs are sound: each opened row is the committed one.
    for (s, i), e in build_openings(tr, reveal, 6).rows.items():
        assert merkle.row_node(e.row) == tr.row_nodes(s)[i].tobytes()
