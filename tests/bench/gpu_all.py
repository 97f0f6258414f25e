"""One device call: build the kernels, check the GPU engine bit-exact against the numpy reference
engine (every spec vector, random parameters n = 64..8192, openings included, both variants), then
time every variant beside bare cuBLAS and run a challenge that fills 90% of the declared memory.

    PYTHONUNBUFFERED=1 python3 tests/bench/gpu_all.py --out $OUT/gpu_all.json [--quick]

Prints a short table last; the JSON holds every number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cupy as cp

from node.gpu.bench import (
    CONFIGS,
    apply_config,
    bench_n,
    best_chain_timing,
    copy_bandwidth,
    memory_fill_run,
    time_events,
)
from node.gpu.experimental import ExperimentalGpuEngine as GpuEngine
from node.gpu.facts import gpu_facts
from node.pow.cpu_engine import CpuEngine
from node.pow.engine import ChallengeParams, EngineCapacityError
from node.pow.openings import build_openings, encode_openings

# Variant "panels" (GEMM in P row panels, each panel's epilogue on a second stream once its GEMM is
# done): (label, overlap, P, epilogue stream at low priority). Overlap "tree" here: each panel's
# leaves hashed on the epilogue stream after its epilogue, the tree on the low-priority stream;
# "tree-main": the leaves on the chain stream once the step's epilogues are done (as cublas-tree).
# The last field: True = epilogue stream at low priority, "inline" = epilogues on the chain stream
# (no overlap: only the GEMM is split).
PANEL_CONFIGS: dict[str, dict] = {}
for _lab, _ov, _P, _low in [
    ("panels2", True, 2, False),
    ("panels4", True, 4, False),
    ("panels8", True, 8, False),
    ("panels2-tree", "tree", 2, False),
    ("panels4-tree", "tree", 4, False),
    ("panels8-tree", "tree", 8, False),
    ("panels2-treemain", "tree-main", 2, False),
    ("panels4-treemain", "tree-main", 4, False),
    ("panels4-epilow", True, 4, True),
    ("panels4-serial", False, 4, False),
    ("panels2-inline", True, 2, "inline"),
    ("panels4-inline", True, 4, "inline"),
    ("panels2-inline-treemain", "tree-main", 2, "inline"),
]:
    PANEL_CONFIGS[_lab] = {
        "variant": "panels",
        "overlap": _ov,
        "panels": _P,
        "epilogue_low_priority": _low is True,
        "panel_epilogue_inline": _low == "inline",
    }
ALL_CONFIGS = dict(CONFIGS, **PANEL_CONFIGS)
ALL_LABELS = list(ALL_CONFIGS)


def reset_config(engine: GpuEngine) -> None:
    engine.set_defaults()


def bench_panels(engine: GpuEngine, n: int, r: dict, steps: int, m: int = 4, reps: int = 20) -> None:
    """Into bench_n's result ``r``: the P panel GEMMs alone, back to back (``gemm_panels_s``), and
    the chain step of every PANEL_CONFIGS entry, timed as bench_n times the others."""
    engine.close()
    r["gemm_panels_s"] = {}
    with cp.cuda.Device(engine.device_id), engine._stream:
        X = [cp.random.randint(-128, 128, size=(n, n), dtype=cp.int32).astype(cp.int8) for _ in range(3)]
        Bt = [cp.random.randint(-128, 128, size=(n, n), dtype=cp.int32).astype(cp.int8) for _ in range(3)]
        A = cp.empty((n, n), dtype=cp.int32)
        for P in (2, 4, 8):
            rows = n // P

            def panels(rep: int, P: int = P, rows: int = rows) -> None:
                for p in range(P):
                    engine._gemm.rows(
                        X[rep % 3].data.ptr + p * rows * n, rows, Bt[rep % 3].data.ptr, A.data.ptr + 4 * p * rows * n, n
                    )

            r["gemm_panels_s"][str(P)] = time_events(panels, reps)
        # The panel GEMMs together give cuBLAS's product exactly.
        ref = cp.empty_like(A)
        engine._gemm(X[0], Bt[0], ref)
        A.fill(0x7F)
        for p in range(8):
            engine._gemm.rows(X[0].data.ptr + p * (n // 8) * n, n // 8, Bt[0].data.ptr, A.data.ptr + 4 * p * (n // 8) * n, n)
        r["gemm_panels_exact"] = bool(cp.array_equal(A, ref))
        X.clear()
        Bt.clear()
        A = ref = None  # the timing buffers go back to the pool before the chains run
    cp.get_default_memory_pool().free_all_blocks()
    for label in PANEL_CONFIGS:
        apply_config(engine, label, table=PANEL_CONFIGS)
        best = best_chain_timing(engine, n, steps, m)
        r["step_s"][label] = best["step_s"]
        r["chain_total_s"][label] = best["total_s"]
        r["step_over_gemm"][label] = best["step_s"] / r["gemm_cublas_s"]
        r["tops_step"][label] = r["ops_per_gemm"] / best["step_s"] / 1e12
    reset_config(engine)


EXACT_LABELS = ALL_LABELS
VECTORS = json.loads((Path(__file__).resolve().parents[1] / "data" / "pow-v1-vectors.json").read_text())


def log(*a: object) -> None:
    print(*a, flush=True)


def check_exact(
    engine: GpuEngine,
    cpu: CpuEngine,
    params: ChallengeParams,
    k: int,
    reveal: bytes,
    want_digests: list[str] | None = None,
    want_root: str | None = None,
) -> dict:
    cpu_tr = cpu.prove(params)
    res = {"n": params.n, "T": params.T, "m": params.m}
    for label in EXACT_LABELS:
        v = apply_config(engine, label, table=ALL_CONFIGS)
        if v != "auto" and engine.variant_for(params.n) != v:
            continue
        tr = engine.prove(params)
        ok = tr.digests == cpu_tr.digests and tr.root == cpu_tr.root
        if want_digests is not None:
            ok = ok and [d.hex() for d in tr.digests] == want_digests and tr.root.hex() == want_root
        op_ok = encode_openings(build_openings(tr, reveal, k)) == encode_openings(build_openings(cpu_tr, reveal, k))
        # Every state byte, not only the digests (cheap at these sizes).
        states_ok = bool(np.array_equal(cp.asnumpy(tr.states), cpu_tr.states)) if params.n <= 2048 else None
        res[label] = {"digests_root": ok, "openings": op_ok, "states": states_ok}
        engine.release(tr)
    reset_config(engine)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_all.json"))
    ap.add_argument("--quick", action="store_true", help="correctness only at small n, short timing")
    ap.add_argument("--skip-exact", action="store_true")
    ap.add_argument("--sizes", default="4096,8192")
    ap.add_argument("--no-panels", action="store_true", help="time no panels configs")
    ap.add_argument("--only-panels", action="store_true", help="bit-exactness of the panels configs only, and no 90%% challenge")
    a = ap.parse_args()
    global EXACT_LABELS
    EXACT_LABELS = list(PANEL_CONFIGS) if a.only_panels else ALL_LABELS
    result: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cupy": cp.__version__}
    t0 = time.perf_counter()
    facts = gpu_facts(0)
    result["facts"] = facts.to_dict()
    log("facts:", result["facts"])
    engine = GpuEngine(device_id=0)
    result["build_s"] = time.perf_counter() - t0
    result["wgmma_desc"] = engine.wgmma_desc
    result["cutlass"] = str(engine.cutlass.path) if engine.cutlass is not None else None
    log("wgmma descriptor strides that match cuBLAS:", engine.wgmma_desc)
    log(f"kernels built in {result['build_s']:.1f} s; budget {engine.memory_budget_bytes() / 2**30:.2f} GiB")

    def save() -> None:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)

    # ---- bit-exactness ----
    exact = []
    if not a.skip_exact:
        cpu = CpuEngine(memory_budget_bytes=100 << 30)
        for c in VECTORS["chains"]:
            p = ChallengeParams(
                bytes.fromhex(c["seed"]), bytes.fromhex(c["validator"]), bytes.fromhex(c["executor"]), c["n"], c["T"], c["m"]
            )
            r = check_exact(engine, cpu, p, c["k"], bytes.fromhex(c["reveal"]), c["digests"], c["root"])
            r["vector"] = True
            exact.append(r)
            log("vector", r)
        rng = np.random.default_rng(int(time.time()))
        sizes = [(64, 9), (128, 7), (256, 6), (512, 5), (1024, 4), (2048, 3)]
        if not a.quick:
            sizes += [(4096, 3), (8192, 2)]
        for n, T in sizes:
            p = ChallengeParams(rng.bytes(32), rng.bytes(32), rng.bytes(32), n, T, int(rng.integers(1, 4)))
            t1 = time.perf_counter()
            r = check_exact(engine, cpu, p, 24, rng.bytes(32))
            r["vector"] = False
            r["s"] = time.perf_counter() - t1
            exact.append(r)
            log("random", r)
            save()
        # A state changed on the device before hashing must change the digests (the hook is live).
        p = ChallengeParams(bytes(32), bytes(32), bytes(32), 128, 3, 1)
        honest = engine.prove(p)

        def flip(s: int, X: object) -> None:
            if s == 2:
                X[5, 7] += 1  # type: ignore[index]

        bad = engine.prove(p, state_hook=flip)
        result["hook_changes_digest"] = honest.digests[:2] == bad.digests[:2] and honest.digests[2] != bad.digests[2]
        engine.release(honest)
        engine.release(bad)
        apply_config(engine, "panels4-tree", table=PANEL_CONFIGS)  # the hook is live on the panels path too
        bad = engine.prove(p, state_hook=flip)
        result["hook_changes_digest_panels"] = bad.digests[:2] == honest.digests[:2] and bad.digests[2] != honest.digests[2]
        engine.release(bad)
        reset_config(engine)
        try:
            engine.check_fits(ChallengeParams(bytes(32), bytes(32), bytes(32), 16384, 10**6, 1))
            result["capacity_error"] = "not raised"
        except EngineCapacityError as exc:
            result["capacity_error"] = str(exc)
        del cpu
    result["exact"] = exact
    flat = [x.get(lab, {}) for x in exact for lab in ALL_LABELS]
    result["all_exact"] = bool(exact) and all(all(val in (True, None) for val in f.values()) for f in flat)
    log("ALL EXACT:", result["all_exact"])
    save()

    # ---- timing ----
    try:
        result["copy_GBps"] = copy_bandwidth(engine)
        sizes = [int(x) for x in a.sizes.split(",") if x]
        result["bench"] = []
        for n in sizes:
            r = bench_n(engine, n, steps=16 if a.quick else 48)
            if not a.no_panels:
                bench_panels(engine, n, r, steps=16 if a.quick else 48)
            result["bench"].append(r)
            log("bench", json.dumps(r))
            save()
        # 90% of the declared memory, as the validator sizes a challenge.
        result["fill"] = []
        for r in [] if a.only_panels else result["bench"]:
            label = min(r["step_s"], key=r["step_s"].get)
            best = r["step_s"][label]
            apply_config(engine, label, extra=r.get("chain_extra"), table=ALL_CONFIGS)
            engine.close()
            f = memory_fill_run(engine, r["n"], best)
            f["config"] = label
            result["fill"].append(f)
            log("fill", f)
            save()
            if a.quick:
                break
        reset_config(engine)
    except Exception:
        result["timing_error"] = traceback.format_exc()
        log(result["timing_error"])
    save()

    log("\n==== summary ====")
    log(f"{facts.model} | cupy {cp.__version__} | all exact: {result['all_exact']} | copy {result.get('copy_GBps', 0):.0f} GB/s")
    for r in result.get("bench", []):
        line = f"n={r['n']}: cuBLAS {r['gemm_cublas_s'] * 1e6:.1f} us ({r['tops_cublas']:.0f} TOPS)"
        if "gemm_mma_s" in r:
            line += f" | mma {r['gemm_mma_s'] * 1e6:.1f} us ({r['tops_mma']:.0f} TOPS, exact={r.get('gemm_mma_exact')})"
        if "gemm_wgmma_s" in r:
            line += f" | wgmma {r['gemm_wgmma_s'] * 1e6:.1f} us ({r['tops_wgmma']:.0f} TOPS, exact={r.get('gemm_wgmma_exact')})"
        line += f" | epi {r['epilogue_s'] * 1e6:.1f} us | hash {r['hash_s'] * 1e6:.1f} us"
        for c in r.get("gemm_cutlass_s", {}):
            line += (
                f" | CUTLASS {c}: GEMM {r['gemm_cutlass_s'][c] * 1e6:.1f}, step {r['step_cutlass_s'][c] * 1e6:.1f} us"
                f" ({r['step_cutlass_over_gemm'][c]:.3f} x cuBLAS, exact={r['cutlass_exact'][c]})"
            )
        line += " | panel GEMMs " + ", ".join(f"P={P}: {s * 1e6:.1f}" for P, s in r.get("gemm_panels_s", {}).items())
        log(line)
        for v, s in r["step_s"].items():
            log(f"   step[{v}] {s * 1e6:.1f} us = {r['step_over_gemm'][v]:.3f} x cuBLAS GEMM ({r['tops_step'][v]:.0f} TOPS)")
    for f in result.get("fill", []):
        log(
            f"fill n={f['n']} T={f['T']} pool {f['pool_bytes'] / 2**30:.1f} GiB ({f['config']}): "
            f"cold {f['cold']['total_s']:.3f} s = {f['cold']['total_over_T_step']:.3f} x T*step, "
            f"warm {f['warm']['total_s']:.3f} s = {f['warm']['total_over_T_step']:.3f} x T*step"
        )
    return 0 if result["all_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
