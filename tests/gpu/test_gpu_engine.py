"""The GPU engine against the numpy reference engine and the spec vectors (skipped without a GPU).

The production engine (CUTLASS fused step on Hopper, else cuBLAS + epilogue) and every bench-only
configuration of ExperimentalGpuEngine (hand-written fused steps, panels, hashing schedules) must
give the same bytes as the reference: digests, root, every state and the openings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

cp = pytest.importorskip("cupy")
try:
    _NDEV = cp.cuda.runtime.getDeviceCount()
except Exception:  # no driver, or CUDA unusable here
    _NDEV = 0
if _NDEV < 1:
    pytest.skip("no CUDA device", allow_module_level=True)

from node.gpu.cutlass_step import VARIANT_NAMES
from node.gpu.engine import CUTLASS_PLANS, CutlassPlan, GpuEngine
from node.gpu.experimental import ExperimentalGpuEngine
from node.gpu.facts import gpu_facts
from node.pow.cpu_engine import CpuEngine
from node.pow.engine import ChallengeParams, EngineCapacityError
from node.pow.openings import build_openings, encode_openings

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "data" / "pow-v1-vectors.json").read_text())
CONFIGS = [
    ("cublas", False),
    ("cublas", True),
    ("cublas", "tree"),
    ("cublas", "late"),
    ("fused", False),
    ("fused", True),
    ("wgmma", False),
    ("wgmma", True),
    ("cutlass", False),
    ("cutlass", True),
    ("cutlass", "tree"),
]
HOPPER = str(cp.cuda.Device(0).compute_capability) == "90"


@pytest.fixture(scope="module")
def prod() -> GpuEngine:
    e = GpuEngine(device_id=0, memory_budget_bytes=3 << 30)
    yield e
    e.close()


@pytest.fixture(scope="module")
def engine(prod: GpuEngine) -> ExperimentalGpuEngine:
    prod.close()  # one arena at a time
    e = ExperimentalGpuEngine(device_id=0, memory_budget_bytes=2 << 30)
    yield e
    e.close()


# ---- the production engine ----------------------------------------------------------------------


def test_production_engine_loads_the_cutlass_step_on_hopper(prod: GpuEngine) -> None:
    if not HOPPER:
        assert prod.cutlass is None and prod.variant_for(4096) == "cublas"
        return
    assert prod.cutlass is not None, "the CUTLASS step did not load or did not match cuBLAS on this Hopper GPU"
    for n in (64, 4096, 8192):
        assert prod.variant_for(n) == ("cutlass" if n in CUTLASS_PLANS else "cublas")


@pytest.mark.parametrize("ci", range(len(VECTORS["chains"])))
def test_production_vectors(prod: GpuEngine, ci: int) -> None:
    c = VECTORS["chains"][ci]
    tr = prod.prove(_params(c))
    try:
        assert [d.hex() for d in tr.digests] == c["digests"] and tr.root.hex() == c["root"]
    finally:
        prod.release(tr)


@pytest.mark.parametrize("n,T,m", [(64, 5, 2), (128, 6, 3), (256, 5, 1), (1024, 4, 2), (4096, 2, 1)])
def test_production_random_params_match_reference(prod: GpuEngine, n: int, T: int, m: int) -> None:
    rng = np.random.default_rng()
    p = ChallengeParams(rng.bytes(32), rng.bytes(32), rng.bytes(32), n, T, m)
    ref = CpuEngine().prove(p)
    tr = prod.prove(p)
    try:
        assert tr.digests == ref.digests and tr.root == ref.root
        assert np.array_equal(cp.asnumpy(tr.states), ref.states)
        reveal = rng.bytes(32)
        assert encode_openings(build_openings(tr, reveal, 16)) == encode_openings(build_openings(ref, reveal, 16))
    finally:
        prod.release(tr)


@pytest.mark.parametrize("n", [256, 4096])
def test_production_state_hook_changes_the_digest(prod: GpuEngine, n: int) -> None:
    p = ChallengeParams(bytes([6]) * 32, bytes(32), bytes(32), n, 3, 1)
    honest = prod.prove(p)
    good = list(honest.digests)
    prod.release(honest)

    def flip(s: int, X: object) -> None:
        if s == 2:
            X[5, 7] += 1  # type: ignore[index]

    bad = prod.prove(p, state_hook=flip)
    assert bad.digests[:2] == good[:2] and bad.digests[2] != good[2]
    prod.release(bad)


def test_without_cutlass_the_engine_says_so_once_and_uses_cublas(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GPOW_NO_CUTLASS", "1")
    with caplog.at_level(logging.INFO, logger="gpow.gpu"):
        e = GpuEngine(device_id=0, memory_budget_bytes=1 << 28, preallocate=False)
    lines = [r for r in caplog.records if "CUTLASS" in r.getMessage()]
    assert len(lines) == 1 and "GPOW_NO_CUTLASS" in lines[0].getMessage()
    assert e.cutlass is None and e.variant_for(4096) == "cublas"
    p = ChallengeParams(bytes([4]) * 32, bytes(32), bytes(32), 256, 3, 2)
    tr = e.prove(p)
    assert tr.variant == "cublas" and tr.digests == CpuEngine().prove(p).digests
    e.release(tr)
    e.close()


def test_cutlass_calibration_rejects_a_wrong_product(prod: GpuEngine) -> None:
    """The start-up check compares with cuBLAS: a library whose product differs is refused."""
    if prod.cutlass is None:
        pytest.skip("no CUTLASS step on this device")

    class Off:
        tiles, path = prod.cutlass.tiles, prod.cutlass.path

        def fits(self, v: int, n: int) -> bool:
            return True

        def step(
            self,
            v: int,
            X: object,
            Bt: object,
            pool: object,
            refs: object,
            salt: object,
            out: object,
            out32: object,
            sms: int,
            stream: object,
        ) -> None:
            prod.cutlass.step(v, X, Bt, pool, refs, salt, out, out32, sms, stream)
            if out32 is not None:
                out32[3, 5] += 1  # type: ignore[index]

    assert prod._cutlass_mismatch(Off(), 0, 512) == "product"  # type: ignore[arg-type]
    assert prod._cutlass_mismatch(prod.cutlass, 0, 512) == ""


# ---- the bench-only variants ----------------------------------------------------------------------


def _params(c: dict) -> ChallengeParams:
    return ChallengeParams(
        bytes.fromhex(c["seed"]), bytes.fromhex(c["validator"]), bytes.fromhex(c["executor"]), c["n"], c["T"], c["m"]
    )


@pytest.mark.parametrize("variant,overlap", CONFIGS)
@pytest.mark.parametrize("ci", range(len(VECTORS["chains"])))
def test_vectors(engine: GpuEngine, ci: int, variant: str, overlap: bool | str) -> None:
    c = VECTORS["chains"][ci]
    engine.variant, engine.overlap = variant, overlap
    tr = engine.prove(_params(c))
    try:
        assert [d.hex() for d in tr.digests] == c["digests"]
        assert tr.root.hex() == c["root"]
    finally:
        engine.release(tr)


@pytest.mark.parametrize("fuse_leaves", [False, True])
@pytest.mark.parametrize("n,T,m", [(64, 5, 2), (256, 4, 1), (2048, 3, 2)])
def test_epilogue_with_leaf_hashing_matches_reference(engine: GpuEngine, n: int, T: int, m: int, fuse_leaves: bool) -> None:
    p = ChallengeParams(bytes([n & 0xFF]) * 32, bytes([3]) * 32, bytes(32), n, T, m)
    engine.variant, engine.overlap, engine.fuse_leaves = "cublas", "tree", fuse_leaves
    tr = engine.prove(p)
    engine.fuse_leaves = False
    try:
        ref = CpuEngine().prove(p)
        assert tr.digests == ref.digests and np.array_equal(tr.row_nodes(T), ref.row_nodes(T))
    finally:
        engine.release(tr)


@pytest.mark.parametrize("variant,overlap", CONFIGS)
@pytest.mark.parametrize("n,T,m", [(64, 7, 2), (128, 6, 3), (256, 5, 2), (512, 4, 1), (2048, 3, 2)])
def test_random_params_match_reference_states_and_openings(
    engine: GpuEngine, n: int, T: int, m: int, variant: str, overlap: bool | str
) -> None:
    rng = np.random.default_rng(n * 31 + T)
    p = ChallengeParams(rng.bytes(32), rng.bytes(32), rng.bytes(32), n, T, m)
    ref = CpuEngine().prove(p)
    engine.variant, engine.overlap = variant, overlap
    tr = engine.prove(p)
    try:
        assert tr.digests == ref.digests and tr.root == ref.root
        assert np.array_equal(cp.asnumpy(tr.states), ref.states)
        assert np.array_equal(tr.row_nodes(T), ref.row_nodes(T))
        reveal = rng.bytes(32)
        assert encode_openings(build_openings(tr, reveal, 16)) == encode_openings(build_openings(ref, reveal, 16))
    finally:
        engine.release(tr)


def test_hashing_at_the_chain_streams_priority_is_exact_too(engine: GpuEngine) -> None:
    p = ChallengeParams(bytes([9]) * 32, bytes(32), bytes(32), 256, 5, 2)
    engine.variant, engine.overlap, engine.hash_low_priority = "cublas", True, False
    tr = engine.prove(p)
    engine.hash_low_priority = True
    try:
        assert tr.digests == CpuEngine().prove(p).digests
    finally:
        engine.release(tr)


@pytest.mark.parametrize("cutlass_variant", range(len(VARIANT_NAMES)))
def test_every_cutlass_tile_configuration_matches_reference(engine: ExperimentalGpuEngine, cutlass_variant: int) -> None:
    if engine.cutlass is None:
        pytest.skip("no CUTLASS step on this device")
    p = ChallengeParams(bytes([cutlass_variant]) * 32, bytes([5]) * 32, bytes(32), 512, 4, 2)
    engine.set_defaults()
    engine.variant, engine.cutlass_override = "cutlass", CutlassPlan(variant=cutlass_variant, swizzle=4, raster=1, sms_left=8)
    tr = engine.prove(p)
    engine.set_defaults()
    try:
        assert tr.variant == "cutlass"
        ref = CpuEngine().prove(p)
        assert tr.digests == ref.digests and np.array_equal(cp.asnumpy(tr.states), ref.states)
    finally:
        engine.release(tr)


def test_two_live_traces_do_not_share_memory(engine: GpuEngine) -> None:
    """A second challenge proved before the first is released must not overwrite its pool."""
    engine.variant, engine.overlap = "auto", None
    p1 = ChallengeParams(bytes([1]) * 32, bytes(32), bytes(32), 128, 4, 1)
    p2 = ChallengeParams(bytes([2]) * 32, bytes(32), bytes(32), 128, 4, 1)
    t1 = engine.prove(p1)
    row = t1.row(4, 3)
    t2 = engine.prove(p2)
    assert t1.row(4, 3) == row
    assert t1.row(4, 3) == CpuEngine().prove(p1).row(4, 3)
    engine.release(t2)
    engine.release(t1)


def test_state_hook_changes_the_digest(engine: GpuEngine) -> None:
    p = ChallengeParams(bytes(32), bytes(32), bytes(32), 128, 3, 1)
    honest = engine.prove(p)
    good = list(honest.digests)
    engine.release(honest)

    def flip(s: int, X: object) -> None:
        if s == 2:
            X[5, 7] += 1  # type: ignore[index]

    bad = engine.prove(p, state_hook=flip)
    assert bad.digests[:2] == good[:2] and bad.digests[2] != good[2]
    engine.release(bad)


def test_capacity_error_is_clear_and_raised_before_work(engine: GpuEngine) -> None:
    p = ChallengeParams(bytes(32), bytes(32), bytes(32), 4096, 10_000, 1)
    with pytest.raises(EngineCapacityError) as exc:
        engine.check_fits(p)
    assert "GPU 0" in str(exc.value) and exc.value.largest_T == engine.largest_T(4096, 1)
    with pytest.raises(EngineCapacityError):
        engine.prove(p)
    fits = ChallengeParams(bytes(32), bytes(32), bytes(32), 4096, engine.largest_T(4096, 1), 1)
    engine.check_fits(fits)


def test_facts() -> None:
    f = gpu_facts(0)
    assert f.model and f.uuid.startswith("GPU-") and f.memory_bytes > 0 and f.sm_count > 0
    assert f.pci_bus_id.count(":") == 2


# Variant "panels": the GEMM in P row panels, each panel's epilogue on a second stream.
PANEL_CONFIGS = [
    (2, True, False),
    (4, "tree", False),
    (8, "tree", False),
    (2, "tree-main", False),
    (8, True, True),
    (4, False, False),
]


@pytest.mark.parametrize("panels,overlap,epi_low", PANEL_CONFIGS)
@pytest.mark.parametrize("ci", range(len(VECTORS["chains"])))
def test_panels_vectors(engine: GpuEngine, ci: int, panels: int, overlap: bool | str, epi_low: bool) -> None:
    c = VECTORS["chains"][ci]
    engine.variant, engine.overlap, engine.panels, engine.epilogue_low_priority = "panels", overlap, panels, epi_low
    tr = engine.prove(_params(c))
    engine.panels, engine.epilogue_low_priority = 4, False
    try:
        assert tr.variant == "panels"
        assert [d.hex() for d in tr.digests] == c["digests"]
        assert tr.root.hex() == c["root"]
    finally:
        engine.release(tr)


@pytest.mark.parametrize("panels,overlap,epi_low", PANEL_CONFIGS)
@pytest.mark.parametrize("n,T,m", [(64, 7, 2), (256, 5, 2), (2048, 3, 2)])
def test_panels_match_reference_states_and_openings(
    engine: GpuEngine, n: int, T: int, m: int, panels: int, overlap: bool | str, epi_low: bool
) -> None:
    rng = np.random.default_rng(n * 17 + T + panels)
    p = ChallengeParams(rng.bytes(32), rng.bytes(32), rng.bytes(32), n, T, m)
    ref = CpuEngine().prove(p)
    engine.variant, engine.overlap, engine.panels, engine.epilogue_low_priority = "panels", overlap, panels, epi_low
    tr = engine.prove(p)
    engine.panels, engine.epilogue_low_priority = 4, False
    try:
        assert tr.digests == ref.digests and tr.root == ref.root
        assert np.array_equal(cp.asnumpy(tr.states), ref.states)
        assert np.array_equal(tr.row_nodes(T), ref.row_nodes(T))
        reveal = rng.bytes(32)
        assert encode_openings(build_openings(tr, reveal, 16)) == encode_openings(build_openings(ref, reveal, 16))
    finally:
        engine.release(tr)


@pytest.mark.parametrize("panels,overlap", [(2, True), (4, "tree-main")])
def test_panels_with_inline_epilogue_match_reference(engine: GpuEngine, panels: int, overlap: bool | str) -> None:
    p = ChallengeParams(bytes([panels]) * 32, bytes([1]) * 32, bytes(32), 512, 4, 2)
    engine.variant, engine.overlap, engine.panels, engine.panel_epilogue_inline = "panels", overlap, panels, True
    tr = engine.prove(p)
    engine.panels, engine.panel_epilogue_inline = 4, False
    try:
        ref = CpuEngine().prove(p)
        assert tr.digests == ref.digests and np.array_equal(cp.asnumpy(tr.states), ref.states)
    finally:
        engine.release(tr)


def test_panels_state_hook_changes_the_digest(engine: GpuEngine) -> None:
    p = ChallengeParams(bytes(32), bytes(32), bytes(32), 128, 3, 1)
    engine.variant, engine.overlap = "panels", "tree"
    honest = engine.prove(p)
    good = list(honest.digests)
    engine.release(honest)

    def flip(s: int, X: object) -> None:
        if s == 2:
            X[5, 7] += 1  # type: ignore[index]

    bad = engine.prove(p, state_hook=flip)
    assert bad.digests[:2] == good[:2] and bad.digests[2] != good[2]
    engine.release(bad)
