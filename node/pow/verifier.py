"""The engine-independent verifier (spec pow-v1 section 5).

``verify(params, k, root, d_T, reveal, openings)`` rederives the ``k`` samples from ``R`` and ``r``
and checks every opening for every role it plays. Checks run cheapest first, and with
``stop_at_first`` (the default) the first failure ends the run, so a junk proof costs a validator
little (issue 13; tests/bench/bench_verify.py measures it):

0. sizes, no hashing: the commitment's field sizes, the sample count, and every opened entry on its
   own: its key in range (``s <= T``, ``i < n``), row length ``n``, row path ``log2(n)`` hashes,
   top proof exactly as long as RFC 9162 requires for leaf ``s`` of ``T+1``, an opened ``d_T``
   equal to the committed one;
1. structure: the ``k`` samples rederived from ``R`` and ``r`` (k hashes) and compared, every
   needed row and digest present, each digest's top proof against ``R`` at its role's leaf index
   (log2(T) hashes each; the references are then derived from the *proven* ``d_{t-1}``), and no
   entry that no sample needs;
2. rows: every row (its row node) against its digest at its role's row index (Merkle paths);
3. ``X_0`` rows against Philox (one row of blocks each);
4. relations, the only expensive part: each needed ``B_r`` is generated once, in row slices
   straight into float32, and the rows ``X_t[i]`` of all samples with ``t mod m = r`` are
   multiplied against it together (float32 slices of at most 1024 along the inner dimension keep
   every partial sum exact, see chain.py; measured faster than float64 BLAS on one core).

Failure check names (``Failure.check``): ``format``, ``reveal-commit``, ``sample-count``,
``sample-mismatch``, ``missing-digest``, ``missing-row``, ``refs`` (a reference row or its digest
not opened), ``row-length``, ``row-path``, ``top-proof``, ``d_T-mismatch``, ``x0-row``,
``relation``, ``extra-opening`` (entries no sample needs: signed openings carry nothing else).
``Failure.sample`` is the sample index, or -1 for failures that belong to no single sample (the
sizes of phase 0 are checked per entry, before it is known which samples use the entry; the
message names the entry).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from node.pow import merkle, philox
from node.pow.chain import K_SLICE, band_of, band_refs, combine, derive_samples
from node.pow.chain import sample_commit as _sample_commit
from node.pow.engine import ChallengeParams
from node.pow.openings import DigestOpening, Openings

__all__ = ["Failure", "VerifyResult", "verify", "CHECKS"]

CHECKS = (
    "format",
    "reveal-commit",
    "sample-count",
    "sample-mismatch",
    "missing-digest",
    "missing-row",
    "refs",
    "row-length",
    "row-path",
    "top-proof",
    "d_T-mismatch",
    "x0-row",
    "relation",
    "extra-opening",
)

_B_SLICE = 512  # rows of B generated and multiplied at a time (bounded memory for any n)


@dataclass(frozen=True)
class Failure:
    sample: int  # sample index, -1 if the failure belongs to no single sample
    check: str
    message: str

    def __str__(self) -> str:
        where = f"sample {self.sample}" if self.sample >= 0 else "proof"
        return f"{where}: {self.check}: {self.message}"


@dataclass
class VerifyResult:
    ok: bool
    failures: list[Failure]
    samples: list[tuple[int, int]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: philox, products, hashing, total


class _Stop(Exception):
    pass


@dataclass
class _Plan:
    """What one sample needs, resolved against the openings in phase 1."""

    t: int
    i: int
    refs: list[tuple[int, int]]
    digests: list[tuple[int, str]]  # (s, role)
    rows: list[tuple[tuple[int, int], int, str]]  # ((s, i), digest s, role)
    ok: bool = True


def verify(
    params: ChallengeParams,
    k: int,
    root: bytes,
    d_T: bytes,
    reveal: bytes,
    openings: Openings,
    *,
    sample_commit: bytes | None = None,
    stop_at_first: bool = True,
) -> VerifyResult:
    """Check ``openings`` for the challenge ``params``/``k`` and the commitment ``(root, d_T)``.

    ``sample_commit``, when given, is checked against ``reveal`` first. With ``stop_at_first`` the
    first failure ends the check (the verdict is the same, it is just cheaper for a false proof);
    otherwise every failure is collected.
    """
    n, T = params.n, params.T
    log_n = n.bit_length() - 1
    timings = {"philox": 0.0, "products": 0.0, "hashing": 0.0}
    failures: list[Failure] = []
    seen: set[tuple[int, str, object]] = set()
    samples: list[tuple[int, int]] = []
    t_start = time.perf_counter()

    def fail(sample: int, check: str, message: str, key: object = None) -> None:
        if (sample, check, key) in seen:
            return
        seen.add((sample, check, key))
        failures.append(Failure(sample, check, message))
        if stop_at_first:
            raise _Stop

    def timed(bucket: str, fn: Callable[[], object]) -> object:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            timings[bucket] += time.perf_counter() - t0

    try:
        for name, val in (("root", root), ("d_T", d_T), ("reveal", reveal)):
            if not isinstance(val, (bytes, bytearray)) or len(val) != 32:
                fail(-1, "format", f"{name} must be 32 bytes")
        if sample_commit is not None and _sample_commit(reveal) != sample_commit:
            fail(-1, "reveal-commit", "the reveal does not match the challenge's sample_commit")
        if k < 1:
            fail(-1, "sample-count", f"k must be >= 1, got {k}")
        if len(openings.samples) != k:
            fail(-1, "sample-count", f"openings hold {len(openings.samples)} samples, the challenge asks for {k}")
        bad: _Bad = timed("hashing", lambda: _phase_sizes(params, d_T, openings, fail, log_n))  # type: ignore[assignment]
        samples = timed("hashing", lambda: derive_samples(root, reveal, k, T, n))  # type: ignore[assignment]
        for s, exp in enumerate(samples):
            got = openings.samples[s] if s < len(openings.samples) else None
            if got is not None and tuple(got) != exp:
                fail(s, "sample-mismatch", f"opened (t, i) = {tuple(got)}, but R and r select {exp}")

        plans: list[_Plan] = timed(  # type: ignore[assignment]
            "hashing", lambda: _phase_structure(params, root, samples, openings, bad, fail)
        )
        _check_extra(plans, openings, fail)
        timed("hashing", lambda: _phase_rows(params, plans, openings, bad, fail))
        key = params.philox_key()
        timed("philox", lambda: _phase_x0(key, n, plans, openings, bad, fail))
        _phase_relations(params, key, plans, openings, fail, timings)
    except _Stop:
        pass
    timings["total"] = time.perf_counter() - t_start
    return VerifyResult(ok=not failures, failures=failures, samples=list(samples), timings=timings)


FailFn = Callable[..., None]


@dataclass
class _Bad:
    """Entries that failed phase 0: later phases skip them (they matter with stop_at_first=False)."""

    rows: set[tuple[int, int]] = field(default_factory=set)
    digests: set[int] = field(default_factory=set)


def _phase_sizes(params: ChallengeParams, d_T: bytes, op: Openings, fail: FailFn, log_n: int) -> _Bad:
    """Phase 0: every opened entry's key range and sizes, and an opened d_T; no hashing at all."""
    n, T = params.n, params.T
    bad = _Bad()
    for s, ent in op.digests.items():
        if not 0 <= s <= T:
            bad.digests.add(s)
            fail(-1, "extra-opening", f"d_{s} opened, but the trace has states 0..{T}", ("d", s))
            continue
        want = merkle.proof_length(s, T + 1)
        if len(ent.digest) != 32 or len(ent.proof) != want:
            bad.digests.add(s)
            fail(
                -1,
                "top-proof",
                f"d_{s}: {len(ent.digest)}-byte digest with an inclusion proof of "
                f"{len(ent.proof)} hashes; a tree of {T + 1} leaves needs 32 bytes and {want} hashes "
                f"at index {s}",
                ("d", s),
            )
        elif s == T and ent.digest != d_T:
            bad.digests.add(s)
            fail(-1, "d_T-mismatch", f"opened d_{T} differs from the committed d_T", ("dT",))
    for (s, i), row_ent in op.rows.items():
        if not (0 <= s <= T and 0 <= i < n):
            bad.rows.add((s, i))
            fail(-1, "extra-opening", f"row {i} of X_{s} opened, but states are 0..{T} and rows 0..{n - 1}", ("r", s, i))
        elif len(row_ent.row) != n:
            bad.rows.add((s, i))
            fail(-1, "row-length", f"row {i} of X_{s} has {len(row_ent.row)} bytes, n = {n}", ("r", s, i))
        elif len(row_ent.path) != log_n:
            bad.rows.add((s, i))
            fail(-1, "row-path", f"row {i} of X_{s}: path has {len(row_ent.path)} hashes, log2(n) = {log_n}", ("r", s, i))
    return bad


def _phase_structure(
    params: ChallengeParams,
    root: bytes,
    samples: list[tuple[int, int]],
    op: Openings,
    bad_entries: _Bad,
    fail: FailFn,
) -> list[_Plan]:
    """Presence of everything each sample needs, and the digests' top proofs.

    Top proofs (log2(T) hashes each) are checked here rather than with the rows because the
    references must come from a *proven* d_{t-1}: an unproven one would only point at other rows.
    """
    n, T = params.n, params.T
    top_ok: dict[int, bool] = {}
    plans: list[_Plan] = []
    for si, (t, i) in enumerate(samples):
        plan = _Plan(t, i, refs=[], digests=[], rows=[])
        plans.append(plan)

        def bad(check: str, msg: str, key: object) -> None:
            plan.ok = False
            fail(si, check, msg, key)

        def need_digest(s: int, role: str, missing_check: str) -> DigestOpening | None:
            ent = op.digests.get(s)
            if ent is None:
                bad(missing_check, f"d_{s} ({role}) not opened", ("d", s))
                return None
            plan.digests.append((s, role))
            if s in bad_entries.digests:  # already reported by phase 0
                plan.ok = False
                return None
            if s not in top_ok:
                top_ok[s] = merkle.verify_inclusion(merkle.top_leaf(s, ent.digest), s, T + 1, ent.proof, root)
            if not top_ok[s]:
                bad("top-proof", f"d_{s} ({role}) does not verify against R at leaf {s}", ("d", s))
                return None
            return ent

        def need_row(s: int, ri: int, role: str, missing_check: str) -> None:
            if (s, ri) not in op.rows:
                bad(missing_check, f"row {ri} of X_{s} ({role}) not opened", ("r", s, ri))
                return
            plan.rows.append(((s, ri), s, role))
            if (s, ri) in bad_entries.rows:  # already reported by phase 0
                plan.ok = False

        need_digest(t, "d_t", "missing-digest")
        need_digest(t + 1, "d_{t+1}", "missing-digest")
        prev = need_digest(t - 1, "d_{t-1}", "missing-digest") if t >= 1 else None
        if t == 0:
            plan.refs = band_refs(None, 0, n, band_of(i, n))
        elif prev is not None:
            plan.refs = band_refs(prev.digest, t, n, band_of(i, n))  # from the proven d_{t-1}
        need_row(t, i, "X_t[i]", "missing-row")
        need_row(t + 1, i, "X_{t+1}[i]", "missing-row")
        for r, (j, o) in enumerate(plan.refs):
            need_digest(j, f"d_j of reference {r}", "refs")
            need_row(j, (i + o) % n, f"reference {r} (j={j}, o={o})", "refs")
    return plans


def _phase_rows(params: ChallengeParams, plans: list[_Plan], op: Openings, bad: _Bad, fail: FailFn) -> None:
    """Every row (its row node) against its digest at the row index its role requires."""
    n = params.n
    row_ok: dict[tuple[int, int], bool] = {}
    for si, plan in enumerate(plans):
        for (s, ri), ds, role in plan.rows:
            if (s, ri) in bad.rows:
                continue
            if (s, ri) not in row_ok:
                ent = op.rows[(s, ri)]
                dig = op.digests.get(ds)
                row_ok[(s, ri)] = (
                    dig is not None
                    and len(ent.row) == n
                    and merkle.verify_inclusion(merkle.row_node(ent.row), ri, n, ent.path, dig.digest)
                )
            if not row_ok[(s, ri)]:
                plan.ok = False
                fail(si, "row-path", f"row {ri} of X_{s} ({role}) does not verify against d_{s} at row {ri}", ("r", s, ri))


def _phase_x0(key: tuple[int, int], n: int, plans: list[_Plan], op: Openings, bad: _Bad, fail: FailFn) -> None:
    memo: dict[int, bool] = {}
    for si, plan in enumerate(plans):
        for (s, ri), _, role in plan.rows:
            if s != 0 or (s, ri) in bad.rows:
                continue
            if ri not in memo:
                want = philox.matrix_row(key, philox.TAG_STATE, 0, n, ri).tobytes()
                memo[ri] = op.rows[(0, ri)].row == want
            if not memo[ri]:
                plan.ok = False
                fail(si, "x0-row", f"row {ri} of X_0 ({role}) differs from the Philox row", ("x0", ri))


def _phase_relations(
    params: ChallengeParams,
    key: tuple[int, int],
    plans: list[_Plan],
    op: Openings,
    fail: FailFn,
    timings: dict[str, float],
) -> None:
    n, m = params.n, params.m
    todo = [si for si, p in enumerate(plans) if p.ok]
    if not todo:
        return
    t0 = time.perf_counter()
    salts = philox.salt_at(key, [plans[si].t for si in todo], [plans[si].i for si in todo])
    salt_of = dict(zip(todo, salts))
    timings["philox"] += time.perf_counter() - t0
    by_b: dict[int, list[int]] = {}
    for si in todo:
        by_b.setdefault(plans[si].t % m, []).append(si)
    for r in sorted(by_b):
        group = by_b[r]
        t0 = time.perf_counter()
        rows_t = np.stack([np.frombuffer(op.rows[(plans[si].t, plans[si].i)].row, dtype=np.int8) for si in group])
        xf = rows_t.astype(np.float32)
        acc = np.zeros((len(group), n), dtype=np.float64)  # exact: |sum| < 2^28
        timings["products"] += time.perf_counter() - t0
        for r0 in range(0, n, _B_SLICE):
            h = min(_B_SLICE, n - r0)
            t0 = time.perf_counter()
            b_rows = philox.matrix_rows(key, philox.TAG_B, r, n, r0, h)
            t1 = time.perf_counter()
            # h <= K_SLICE rows of B: every partial sum of this slice is exact in float32.
            assert h <= K_SLICE
            acc += xf[:, r0 : r0 + h] @ b_rows.astype(np.float32)
            t2 = time.perf_counter()
            timings["philox"] += t1 - t0
            timings["products"] += t2 - t1
        t0 = time.perf_counter()
        ref_sum = np.zeros((len(group), n), dtype=np.int64)
        for gi, si in enumerate(group):
            p = plans[si]
            for j, o in p.refs:
                ref_sum[gi] += np.frombuffer(op.rows[(j, (p.i + o) % n)].row, dtype=np.int8)
        want = combine(acc.astype(np.int64), ref_sum, np.array([salt_of[si] for si in group], dtype=np.uint32))
        timings["products"] += time.perf_counter() - t0
        for gi, si in enumerate(group):
            p = plans[si]
            got = np.frombuffer(op.rows[(p.t + 1, p.i)].row, dtype=np.int8)
            diff = np.flatnonzero(got != want[gi])
            if diff.size:
                p.ok = False
                fail(
                    si,
                    "relation",
                    f"X_{p.t + 1}[{p.i}] != mix(X_{p.t}[{p.i}] . B_{r} + refs + salt) at "
                    f"{diff.size} of {n} columns (first: column {int(diff[0])})",
                    ("rel",),
                )


def _check_extra(plans: list[_Plan], op: Openings, fail: FailFn) -> None:
    """Entries no sample needs. Only decidable once every sample's references are known, i.e.
    when every sample's structure resolved (otherwise its reference rows would look extra)."""
    if not all(p.ok for p in plans):
        return
    used_d = {s for p in plans for s, _ in p.digests}
    used_r = {key for p in plans for key, _, _ in p.rows}
    extra_d = sorted(set(op.digests) - used_d)
    extra_r = sorted(set(op.rows) - used_r)
    if extra_d or extra_r:
        fail(-1, "extra-opening", f"openings carry entries no sample needs: digests {extra_d[:8]}, rows {extra_r[:8]}")
