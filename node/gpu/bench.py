"""``gpow bench``: the GPU engine's step time per variant, side by side with bare cuBLAS int8 GEMM.

Every figure comes from CUDA events on the engine's stream, median of repeated runs after a
warm-up, with the inputs rotated among three sets so that no timing reads a cached operand:
- ``gemm_cublas_s``: cuBLAS int8 GEMM (int32 out) alone, the reference point of the targets;
- ``gemm_cutlass_s[cfg]``, ``step_cutlass_s[cfg]``: each CUTLASS tile configuration's bare product
  (int32 stored) and its fused step (product + epilogue, int8 stored), with their exactness;
- ``gemm_mma_s``: the fused kernel's product alone (int32 stored, no epilogue);
- ``epilogue_s``, ``hash_s``: the cuBLAS path's separate epilogue and one state's Merkle digest;
- ``step_s[variant]``: steady-state step of a real chain (prep, product, epilogue, hashing),
  from an event before step 0 to one after step T-1, divided by T;
- ``copy_GBps``: device-to-device copy, bytes read plus bytes written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import cupy as cp
import numpy as np

from node.gpu.cutlass_step import VARIANT_NAMES
from node.gpu.engine import CutlassPlan
from node.gpu.experimental import ExperimentalGpuEngine
from node.gpu.facts import gpu_facts
from node.pow.engine import ChallengeParams, max_steps_for

# label -> the ExperimentalGpuEngine attributes it sets (the rest stay at the production choice):
# variant; overlap (hashing on a second stream: True the whole digest, "tree" only the tree over
# the row nodes, "late" started after the next GEMM, False in line); fuse_leaves (epilogue and leaf
# hashing in one kernel); hash_low_priority=False (the hashing stream at the chain's priority);
# sms_left (the CUTLASS persistent grid on that many SMs fewer, left to the hashing stream).
CONFIGS: dict[str, dict[str, Any]] = {
    "auto": {},
    "cutlass": {"variant": "cutlass", "overlap": True},
    "cutlass-tree": {"variant": "cutlass", "overlap": "tree"},
    "cutlass-serial": {"variant": "cutlass", "overlap": False},
    "cutlass-left8": {"variant": "cutlass", "overlap": True, "sms_left": 8},
    "cutlass-left16": {"variant": "cutlass", "overlap": True, "sms_left": 16},
    "cutlass-left24": {"variant": "cutlass", "overlap": True, "sms_left": 24},
    "cutlass-left32": {"variant": "cutlass", "overlap": True, "sms_left": 32},
    "cutlass-left48": {"variant": "cutlass", "overlap": True, "sms_left": 48},
    "cutlass-tree-left8": {"variant": "cutlass", "overlap": "tree", "sms_left": 8},
    "cutlass-tree-left16": {"variant": "cutlass", "overlap": "tree", "sms_left": 16},
    "cublas": {"variant": "cublas", "overlap": True},
    "cublas-sameprio": {"variant": "cublas", "overlap": True, "hash_low_priority": False},
    "cublas-serial": {"variant": "cublas", "overlap": False},
    "cublas-tree": {"variant": "cublas", "overlap": "tree"},
    "cublas-late": {"variant": "cublas", "overlap": "late"},
    "cublas-fl": {"variant": "cublas", "overlap": "tree", "fuse_leaves": True},
    "cublas-fl-serial": {"variant": "cublas", "overlap": False, "fuse_leaves": True},
    "fused": {"variant": "fused", "overlap": True},
    "fused-serial": {"variant": "fused", "overlap": False},
    "wgmma": {"variant": "wgmma", "overlap": True},
    "wgmma-serial": {"variant": "wgmma", "overlap": False},
}

# (swizzle, raster) of the CUTLASS persistent tile scheduler tried for each tile configuration.
CUTLASS_ORDERS = [(1, 0), (2, 0), (4, 0), (8, 0), (1, 1), (1, 2), (4, 1), (4, 2), (8, 1), (8, 2)]

__all__ = [
    "CONFIGS",
    "CUTLASS_ORDERS",
    "apply_config",
    "bench_main",
    "bench_n",
    "copy_bandwidth",
    "memory_fill_run",
    "time_events",
]


def apply_config(
    engine: ExperimentalGpuEngine, label: str, extra: dict[str, Any] | None = None, table: dict[str, dict[str, Any]] | None = None
) -> str:
    """Set the engine up as ``table[label]`` (default CONFIGS) plus ``extra``; returns the variant
    asked for ("auto": the production engine's choice). Keys: the engine's attributes, and for the
    CUTLASS path ``cutlass_variant``, ``cutlass_order`` (swizzle, raster) and ``sms_left``."""
    engine.set_defaults()
    cfg = dict((CONFIGS if table is None else table)[label], **(extra or {}))
    plan = {k: cfg.pop(k) for k in ("cutlass_variant", "cutlass_order", "sms_left") if k in cfg}
    for k, v in cfg.items():
        if not hasattr(engine, k):
            raise AttributeError(f"config {label}: the engine has no attribute {k}")
        setattr(engine, k, v)
    if cfg.get("variant") == "cutlass" and plan:
        swizzle, raster = plan.get("cutlass_order", (1, 0))
        engine.cutlass_override = CutlassPlan(
            variant=int(plan.get("cutlass_variant", 0)),
            swizzle=int(swizzle),
            raster=int(raster),
            sms_left=int(plan.get("sms_left", 0)),
            overlap=cfg.get("overlap", True),
        )
    return str(cfg.get("variant", "auto"))


def time_events(fn: Callable[[int], None], reps: int = 20, warmup: int = 3) -> float:
    """Median seconds of ``fn(rep)`` between two events on the current stream."""
    for w in range(warmup):
        fn(w)
    cp.cuda.get_current_stream().synchronize()
    times = []
    for r in range(reps):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record()
        fn(r)
        b.record()
        b.synchronize()
        times.append(cp.cuda.get_elapsed_time(a, b) / 1e3)
    return float(np.median(times))


def copy_bandwidth(engine: ExperimentalGpuEngine, nbytes: int = 1 << 30) -> float:
    engine.close()  # the engine's arena holds the whole budget; the next prove takes what it needs
    with cp.cuda.Device(engine.device_id), engine._stream:
        src = cp.ones(nbytes, dtype=cp.uint8)
        dst = cp.empty_like(src)
        t = time_events(lambda r: dst.__setitem__(Ellipsis, src), reps=10)
    return 2 * nbytes / t / 1e9


def _rand_i8(shape: tuple[int, ...]) -> Any:
    return cp.random.randint(-128, 128, size=shape, dtype=cp.int32).astype(cp.int8)


def best_chain_timing(engine: ExperimentalGpuEngine, n: int, steps: int, m: int, runs: int = 2) -> dict[str, float]:
    """The engine's own timing of a whole chain (after a 2-step warm-up), best of ``runs``."""
    params = ChallengeParams(bytes([n & 0xFF]) * 32, bytes(32), bytes(32), n, steps, m)
    engine.release(engine.prove(ChallengeParams(bytes(32), bytes(32), bytes(32), n, 2, m)))
    best: dict[str, float] | None = None
    for _ in range(runs):
        tr = engine.prove(params)
        if best is None or tr.timing["step_s"] < best["step_s"]:
            best = tr.timing
        engine.release(tr)
    assert best is not None
    return best


def _time_pieces(engine: ExperimentalGpuEngine, n: int, reps: int, out: dict[str, Any]) -> None:
    """Into ``out``: the product, epilogue and hashing pieces at size ``n``, each alone."""
    with cp.cuda.Device(engine.device_id), engine._stream:
        X = [_rand_i8((n, n)) for _ in range(3)]
        Bt = [_rand_i8((n, n)) for _ in range(3)]
        A = cp.empty((n, n), dtype=cp.int32)
        out["gemm_cublas_s"] = time_events(lambda r: engine._gemm(X[r % 3], Bt[r % 3], A), reps)
        pool = cp.stack(X)  # three states to draw reference rows from
        refs = cp.asarray(np.random.default_rng(1).integers(0, 3, size=512), dtype=cp.uint32)
        refs[1::2] = cp.asarray(np.random.default_rng(2).integers(0, n, size=256), dtype=cp.uint32)
        salt = cp.asarray(np.random.default_rng(3).integers(0, 2**32, size=n), dtype=cp.uint32)
        if engine.cutlass is not None:
            lib, st, sms = engine.cutlass, engine._stream, engine.sm_count
            A2 = cp.empty((n, n), dtype=cp.int32)
            Xn, want = cp.empty((n, n), dtype=cp.int8), cp.empty((n, n), dtype=cp.int8)
            engine._gemm(X[0], Bt[0], A)
            engine._epilogue(A, pool, refs, salt, want)
            steps_t: dict[str, float] = {}
            for v, name in enumerate(VARIANT_NAMES):
                if not lib.fits(v, n):
                    continue
                for sw, ra in CUTLASS_ORDERS:
                    steps_t[f"{name}/s{sw}r{ra}"] = time_events(
                        lambda r, v=v, sw=sw, ra=ra: lib.step(
                            v, X[r % 3], Bt[r % 3], pool, refs, salt, Xn, None, sms, st, sw, ra
                        ),
                        reps,
                    )
                out.setdefault("gemm_cutlass_s", {})[name] = time_events(
                    lambda r, v=v: lib.step(v, X[r % 3], Bt[r % 3], None, None, None, None, A2, sms, st), reps
                )
                A2.fill(0x7F7F7F7F)
                Xn.fill(0x55)
                lib.step(v, X[0], Bt[0], None, None, None, None, A2, sms, st)
                lib.step(v, X[0], Bt[0], pool, refs, salt, Xn, None, sms, st, 8, 2)
                out.setdefault("cutlass_exact", {})[name] = bool(cp.array_equal(A, A2)) and bool(cp.array_equal(Xn, want))
            out["step_cutlass_all_s"] = steps_t
            # Per configuration: its default tile order, and its best one.
            out["step_cutlass_s"] = {name: steps_t[f"{name}/s1r0"] for name in out.get("gemm_cutlass_s", {})}
            if steps_t:
                best = min(steps_t, key=steps_t.get)
                out["cutlass_best"] = best
                name, order = best.split("/")
                v, sw, ra = VARIANT_NAMES.index(name), int(order[1:].split("r")[0]), int(order.split("r")[1])
                out["gemm_cutlass_best_order_s"] = time_events(
                    lambda r: lib.step(v, X[r % 3], Bt[r % 3], None, None, None, None, A2, sms, st, sw, ra), reps
                )
            del A2, Xn, want
        if engine._step_mma is not None and n >= 128:
            A2 = cp.empty((n, n), dtype=cp.int32)
            dummy = cp.empty((n, n), dtype=cp.int8)
            zr, zs = cp.zeros(512, dtype=cp.uint32), cp.zeros(n, dtype=cp.uint32)
            out["gemm_mma_s"] = time_events(lambda r: engine.step_fused(X[r % 3], Bt[r % 3], X[0], zr, zs, dummy, A2), reps)
            engine._gemm(X[0], Bt[0], A)
            engine.step_fused(X[0], Bt[0], X[0], zr, zs, dummy, A2)
            out["gemm_mma_exact"] = bool(cp.array_equal(A, A2))
            del A2, dummy
        if engine.wgmma_desc is not None and n >= 256:
            A3 = cp.empty((n, n), dtype=cp.int32)
            dummy = cp.empty((n, n), dtype=cp.int8)
            zr, zs = cp.zeros(512, dtype=cp.uint32), cp.zeros(n, dtype=cp.uint32)
            out["gemm_wgmma_s"] = time_events(lambda r: engine.step_wgmma(X[r % 3], Bt[r % 3], X[0], zr, zs, dummy, A3), reps)
            engine._gemm(X[1], Bt[1], A)
            engine.step_wgmma(X[1], Bt[1], X[0], zr, zs, dummy, A3)
            out["gemm_wgmma_exact"] = bool(cp.array_equal(A, A3))
            out["wgmma_desc"] = list(engine.wgmma_desc)
            del A3, dummy
        Xn = cp.empty((n, n), dtype=cp.int8)
        out["epilogue_s"] = time_events(
            lambda r: engine._k.epilogue(((n * n // 16 + 255) // 256,), (256,), (A, pool, refs, salt, Xn, np.uint32(n))), reps
        )
        nodes = cp.empty((n, 32), dtype=cp.uint8)
        dig = cp.empty(32, dtype=cp.uint8)
        scratch = cp.empty((2, max(1, n // 512), 32), dtype=cp.uint8)
        out["hash_s"] = time_events(lambda r: engine.hash_state(X[r % 3], nodes, dig, scratch), reps)
        out["hash_rows_s"] = time_events(lambda r: engine.hash_rows(X[r % 3], nodes), reps)
        out["hash_tree_s"] = time_events(lambda r: engine.hash_tree(nodes, dig, scratch), reps)


def bench_n(engine: ExperimentalGpuEngine, n: int, steps: int = 32, m: int = 4, reps: int = 20) -> dict[str, Any]:
    """Time every piece and every variant at size ``n`` (see the module docstring)."""
    out: dict[str, Any] = {"n": n, "steps": steps, "m": m, "ops_per_gemm": 2 * n**3}
    engine.close()  # room for the timing buffers beside the arena
    _time_pieces(engine, n, reps, out)  # its buffers are freed on return
    cp.get_default_memory_pool().free_all_blocks()
    out["hash_GBps"] = n * n / out["hash_s"] / 1e9
    out["step_s"], out["chain_total_s"], out["variant_used"] = {}, {}, {}
    # The chain configs run the CUTLASS tile configuration and order measured fastest above.
    extra: dict[str, Any] = {}
    if out.get("cutlass_best"):
        name, order = out["cutlass_best"].split("/")
        extra = {
            "cutlass_variant": VARIANT_NAMES.index(name),
            "cutlass_order": (int(order[1:].split("r")[0]), int(order.split("r")[1])),
        }
    out["chain_extra"] = extra
    for label in CONFIGS:
        v = apply_config(engine, label, extra)
        if v != "auto" and engine.variant_for(n) != v:
            continue
        best = best_chain_timing(engine, n, steps, m)
        out["step_s"][label] = best["step_s"]
        out["chain_total_s"][label] = best["total_s"]
        out["variant_used"][label] = engine.variant_for(n)
    engine.set_defaults()
    g = out["gemm_cublas_s"]
    out["tops_cublas"] = out["ops_per_gemm"] / g / 1e12
    for name in ("mma", "wgmma"):
        if f"gemm_{name}_s" in out:
            out[f"tops_{name}"] = out["ops_per_gemm"] / out[f"gemm_{name}_s"] / 1e12
    for key in ("gemm_cutlass_s", "step_cutlass_s"):
        if key in out:
            out[key.replace("_s", "_over_gemm")] = {c: s / g for c, s in out[key].items()}
    out["step_over_gemm"] = {v: s / g for v, s in out["step_s"].items()}
    out["tops_step"] = {v: out["ops_per_gemm"] / s / 1e12 for v, s in out["step_s"].items()}
    return out


def memory_fill_run(engine: ExperimentalGpuEngine, n: int, step_s: float, m: int = 4, fill: float = 0.9) -> dict[str, Any]:
    """A challenge sized as the validator sizes one (pool = ``fill`` of the declared memory): its
    wall time from the call to the returned trace, against T x the steady step time."""
    T = max_steps_for(n, int(engine.memory_budget_bytes() * fill))
    res: dict[str, Any] = {
        "n": n,
        "T": T,
        "m": m,
        "pool_bytes": (T + 1) * (n * n + 32 * n),
        "budget_bytes": engine.memory_budget_bytes(),
        "T_x_step_s": T * step_s,
    }
    engine.close()  # the first run allocates its arena (cold), the second reuses it (warm)
    for run in ("cold", "warm"):
        params = ChallengeParams(bytes([7 + len(run)]) * 32, bytes([1]) * 32, bytes([2]) * 32, n, T, m)
        tr = engine.prove(params)
        res[run] = {
            "total_s": tr.timing["total_s"],
            "steps_s": tr.timing["steps_s"],
            "total_over_T_step": tr.timing["total_s"] / res["T_x_step_s"],
        }
        res["variant"] = tr.variant
        engine.release(tr)
    res["total_over_T_step"] = res["warm"]["total_over_T_step"]
    return res


def bench_main(args: argparse.Namespace) -> int:
    sizes = args.n or [4096, 8192]
    engine = ExperimentalGpuEngine(device_id=0)
    facts = gpu_facts(0)
    result: dict[str, Any] = {"facts": facts.to_dict(), "copy_GBps": copy_bandwidth(engine), "sizes": []}
    print(
        f"{facts.model}: {facts.sm_count} SMs, {facts.memory_bytes / 2**30:.1f} GiB, "
        f"driver {facts.driver_version}, copy {result['copy_GBps']:.0f} GB/s",
        flush=True,
    )
    for n in sizes:
        r = bench_n(engine, n, steps=args.steps)
        result["sizes"].append(r)
        print(
            f"n={n}: cuBLAS GEMM {r['gemm_cublas_s'] * 1e6:.1f} us ({r['tops_cublas']:.0f} TOPS); "
            + (f"mma GEMM {r['gemm_mma_s'] * 1e6:.1f} us ({r['tops_mma']:.0f} TOPS); " if "gemm_mma_s" in r else "")
            + "".join(
                f"CUTLASS {c} GEMM {r['gemm_cutlass_s'][c] * 1e6:.1f} us, fused step {r['step_cutlass_s'][c] * 1e6:.1f} us"
                f" (exact {r['cutlass_exact'][c]}); "
                for c in r.get("gemm_cutlass_s", {})
            )
            + (
                f"best fused step {r['cutlass_best']} {r['step_cutlass_all_s'][r['cutlass_best']] * 1e6:.1f} us"
                f" (its GEMM {r['gemm_cutlass_best_order_s'] * 1e6:.1f} us); "
                if r.get("cutlass_best")
                else ""
            )
            + f"epilogue {r['epilogue_s'] * 1e6:.1f} us; hash {r['hash_s'] * 1e6:.1f} us ({r['hash_GBps']:.0f} GB/s)",
            flush=True,
        )
        for v, s in r["step_s"].items():
            print(
                f"   step[{v}] {s * 1e6:.1f} us = {r['step_over_gemm'][v]:.3f} x GEMM, {r['tops_step'][v]:.0f} TOPS", flush=True
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, action="append")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--json")
    sys.exit(bench_main(ap.parse_args()))
