"""Challenge parameters, pool sizing, capacity refusal and the CPU engine's exactness."""

from __future__ import annotations

import numpy as np
import pytest

from node.pow import merkle, philox
from node.pow.chain import K_SLICE, exact_matmul
from node.pow.cpu_engine import CpuEngine, CpuTrace, available_ram_bytes
from node.pow.engine import ChallengeParams, Engine, EngineCapacityError, Trace, max_steps_for, pool_bytes

Z = bytes(32)


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"n": 32}, "power of two"),
        ({"n": 96}, "power of two"),
        ({"n": 32768}, "power of two"),
        ({"T": 0}, "T (steps)"),
        ({"m": 0}, "m (B matrices)"),
        ({"m": 65}, "m (B matrices)"),
        ({"seed": b"x" * 31}, "seed must be exactly 32 bytes"),
        ({"validator": b"x" * 33}, "validator must be exactly 32 bytes"),
        ({"executor": "00" * 32}, "executor must be bytes"),
        ({"n": 64.0}, "n must be an int"),
    ],
)
def test_params_validation(kw: dict, needle: str) -> None:
    base = {"seed": Z, "validator": Z, "executor": Z, "n": 64, "T": 1, "m": 1}
    base.update(kw)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        ChallengeParams(**base)


def test_params_accept_limits() -> None:
    for n in (64, 128, 1024, 16384):
        ChallengeParams(Z, Z, Z, n, 1, 64)


def test_philox_key_binds_every_field() -> None:
    base = ChallengeParams(Z, Z, Z, 64, 4, 2)
    variants = [
        ChallengeParams(b"\x01" + Z[1:], Z, Z, 64, 4, 2),
        ChallengeParams(Z, b"\x01" + Z[1:], Z, 64, 4, 2),
        ChallengeParams(Z, Z, b"\x01" + Z[1:], 64, 4, 2),
        ChallengeParams(Z, Z, Z, 128, 4, 2),
        ChallengeParams(Z, Z, Z, 64, 5, 2),
        ChallengeParams(Z, Z, Z, 64, 4, 3),
    ]
    keys = {base.philox_key()} | {v.philox_key() for v in variants}
    assert len(keys) == 7


def test_pool_sizing() -> None:
    assert pool_bytes(64, 1) == 2 * (64 * 64 + 64 * 32)
    for n in (64, 1024, 8192):
        for budget in (10**6, 10**9, 80 * 2**30):
            T = max_steps_for(n, budget)
            if T >= 1:
                assert pool_bytes(n, T) <= budget < pool_bytes(n, T + 1)
            else:
                assert pool_bytes(n, 1) > budget


def test_capacity_refused_up_front() -> None:
    p = ChallengeParams(Z, Z, Z, 256, 100, 2)
    engine = CpuEngine(memory_budget_bytes=4_000_000)
    with pytest.raises(EngineCapacityError) as ei:
        engine.prove(p)
    err = ei.value
    assert err.largest_T >= 1
    assert err.needed > err.available == 4_000_000
    assert "needs" in str(err) and "available" in str(err) and f"largest T that would fit is {err.largest_T}" in str(err)
    fits = ChallengeParams(Z, Z, Z, 256, err.largest_T, 2)
    engine.check_fits(fits)  # the suggested T really fits
    with pytest.raises(EngineCapacityError):
        engine.check_fits(ChallengeParams(Z, Z, Z, 256, err.largest_T + 1, 2))
    tr = engine.prove(fits)
    assert len(tr.digests) == err.largest_T + 1


def test_default_budget_is_fraction_of_available_ram() -> None:
    ram = available_ram_bytes()
    assert ram > 0
    b = CpuEngine(budget_fraction=0.25).memory_budget_bytes()
    assert 0 < b <= ram * 0.3  # MemAvailable moves a little between the two reads
    with pytest.raises(ValueError):
        CpuEngine(memory_budget_bytes=0)


def test_protocols_and_release() -> None:
    engine = CpuEngine()
    assert isinstance(engine, Engine) and engine.kind == "cpu"
    p = ChallengeParams(Z, Z, Z, 64, 3, 1)
    progress: list[tuple[int, int]] = []
    tr = engine.prove(p, lambda d, t: progress.append((d, t)))
    assert isinstance(tr, Trace)
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert tr.row_nodes(2).shape == (64, 32) and tr.row_nodes(2).dtype == np.uint8
    assert len(tr.row(3, 5)) == 64
    assert tr.digests[2] == merkle.pow2_root(tr.row_nodes(2)) == merkle.state_digest(tr.states[2])
    again = CpuTrace.from_states(p, tr.states.copy())
    assert again.digests == tr.digests and again.root == tr.root
    engine.release(tr)
    assert tr.states.size == 0


@pytest.mark.parametrize("n", [64, 2048])
def test_exact_matmul_matches_integer_product(n: int) -> None:
    """Worst-case magnitudes included (all -128): float32 slices stay exact."""
    rng = np.random.default_rng(n)
    X = rng.integers(-128, 128, size=(8, n), dtype=np.int8)
    X[0] = -128
    B = rng.integers(-128, 128, size=(n, n), dtype=np.int8)
    B[:, 0] = -128
    want = X.astype(np.int64) @ B.astype(np.int64)
    got = exact_matmul(X, B)
    assert got.dtype == np.int32
    assert np.array_equal(got, want)
    assert want[0, 0] == n * 128 * 128
    assert n <= K_SLICE or n % K_SLICE == 0


def test_engine_step_matches_spec_formula_row_by_row() -> None:
    """X_{t+1}[i] recomputed with plain Python ints from the spec's formula."""
    from node.pow.chain import band_refs
    from node.pow.mix import mix_scalar

    p = ChallengeParams(b"\x07" * 32, Z, Z, 64, 4, 3)
    tr = CpuEngine().prove(p)
    key = p.philox_key()
    n = p.n
    for t, i in ((0, 5), (3, 63), (2, 17)):
        B = philox.b_matrix(key, t % p.m, n).astype(np.int64)
        refs = band_refs(tr.digests[t - 1] if t else None, t, n, i // (n // 64))
        x = np.frombuffer(tr.row(t, i), np.int8).astype(np.int64)
        a = x @ B
        sig = int(philox.salt(key, t, n)[i])
        want = []
        for c in range(n):
            v = int(a[c]) + sum(int(np.frombuffer(tr.row(j, (i + o) % n), np.int8)[c]) for j, o in refs) + sig
            want.append(mix_scalar(v))
        assert list(np.frombuffer(tr.row(t + 1, i), np.int8)) == want
