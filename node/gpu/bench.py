"""``gpow bench``: the GPU engine's step time per variant, side by side with bare cuBLAS int8 GEMM.

Every figure comes from CUDA events on the engine's stream, median of repeated runs after a
warm-up, with the inputs rotated among three sets so that no timing reads a cached operand:
- ``gemm_cublas_s``: cuBLAS int8 GEMM (int32 out) alone, the reference point of the targets;
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
from typing import Any, Callable

import cupy as cp
import numpy as np

from node.pow.engine import ChallengeParams, max_steps_for

from node.gpu.engine import GpuEngine
from node.gpu.facts import gpu_facts

# (label, variant, hashing overlapped on a second stream: True, False or "tree" = only the tree over
# the row nodes); "-fl": epilogue and leaf hashing fused; "-sameprio" runs the hashing stream at
# the chain stream's priority instead of the lowest.
CONFIGS = [("cublas", "cublas", True), ("cublas-sameprio", "cublas", True), ("cublas-serial", "cublas", False),
           ("cublas-tree", "cublas", "tree"), ("cublas-late", "cublas", "late"),
           ("cublas-fl", "cublas", "tree"), ("cublas-fl-serial", "cublas", False),
           ("fused", "fused", True), ("fused-serial", "fused", False), ("wgmma", "wgmma", True),
           ("wgmma-serial", "wgmma", False)]

__all__ = ["CONFIGS", "time_events", "copy_bandwidth", "bench_n", "memory_fill_run", "bench_main"]


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


def copy_bandwidth(engine: GpuEngine, nbytes: int = 1 << 30) -> float:
    engine.close()  # the engine's arena holds the whole budget; the next prove takes what it needs
    with cp.cuda.Device(engine.device_id), engine._stream:
        src = cp.ones(nbytes, dtype=cp.uint8)
        dst = cp.empty_like(src)
        t = time_events(lambda r: dst.__setitem__(Ellipsis, src), reps=10)
        del src, dst
    return 2 * nbytes / t / 1e9


def _rand_i8(shape: tuple[int, ...]) -> Any:
    return cp.random.randint(-128, 128, size=shape, dtype=cp.int32).astype(cp.int8)


def best_chain_timing(engine: GpuEngine, n: int, steps: int, m: int, runs: int = 2) -> dict[str, float]:
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


def bench_n(engine: GpuEngine, n: int, steps: int = 32, m: int = 4, reps: int = 20) -> dict[str, Any]:
    """Time every piece and every variant at size ``n`` (see the module docstring)."""
    out: dict[str, Any] = {"n": n, "steps": steps, "m": m, "ops_per_gemm": 2 * n ** 3}
    engine.close()  # room for the timing buffers beside the arena
    with cp.cuda.Device(engine.device_id), engine._stream:
        X = [_rand_i8((n, n)) for _ in range(3)]
        Bt = [_rand_i8((n, n)) for _ in range(3)]
        A = cp.empty((n, n), dtype=cp.int32)
        out["gemm_cublas_s"] = time_events(lambda r: engine._gemm(X[r % 3], Bt[r % 3], A), reps)
        if engine._k.step_mma is not None and n >= 128:
            A2 = cp.empty((n, n), dtype=cp.int32)
            dummy = cp.empty((n, n), dtype=cp.int8)
            refs = cp.zeros(512, dtype=cp.uint32)
            salt = cp.zeros(n, dtype=cp.uint32)
            out["gemm_mma_s"] = time_events(lambda r: engine.step_fused(X[r % 3], Bt[r % 3], X[0], refs, salt, dummy, A2), reps)
            engine._gemm(X[0], Bt[0], A)
            engine.step_fused(X[0], Bt[0], X[0], refs, salt, dummy, A2)
            out["gemm_mma_exact"] = bool(cp.array_equal(A, A2))
            del A2, dummy
        if engine.wgmma_desc is not None and n >= 256:
            A3 = cp.empty((n, n), dtype=cp.int32)
            dummy = cp.empty((n, n), dtype=cp.int8)
            refs = cp.zeros(512, dtype=cp.uint32)
            salt = cp.zeros(n, dtype=cp.uint32)
            out["gemm_wgmma_s"] = time_events(lambda r: engine.step_wgmma(X[r % 3], Bt[r % 3], X[0], refs, salt, dummy, A3), reps)
            engine._gemm(X[1], Bt[1], A)
            engine.step_wgmma(X[1], Bt[1], X[0], refs, salt, dummy, A3)
            out["gemm_wgmma_exact"] = bool(cp.array_equal(A, A3))
            out["wgmma_desc"] = list(engine.wgmma_desc)
            del A3, dummy
        pool = cp.stack(X)  # three states to draw reference rows from
        refs = cp.asarray(np.random.default_rng(1).integers(0, 3, size=512), dtype=cp.uint32)
        refs[1::2] = cp.asarray(np.random.default_rng(2).integers(0, n, size=256), dtype=cp.uint32)
        salt = cp.asarray(np.random.default_rng(3).integers(0, 2**32, size=n), dtype=cp.uint32)
        Xn = cp.empty((n, n), dtype=cp.int8)
        out["epilogue_s"] = time_events(lambda r: engine._k.epilogue(((n * n // 16 + 255) // 256,), (256,),
                                                                       (A, pool, refs, salt, Xn, np.uint32(n))), reps)
        nodes = cp.empty((n, 32), dtype=cp.uint8)
        dig = cp.empty(32, dtype=cp.uint8)
        scratch = cp.empty((2, max(1, n // 512), 32), dtype=cp.uint8)
        out["hash_s"] = time_events(lambda r: engine.hash_state(X[r % 3], nodes, dig, scratch), reps)
        out["hash_rows_s"] = time_events(lambda r: engine.hash_rows(X[r % 3], nodes), reps)
        out["hash_tree_s"] = time_events(lambda r: engine.hash_tree(nodes, dig, scratch), reps)
        del X, Bt, A, pool, Xn, nodes, scratch
    cp.get_default_memory_pool().free_all_blocks()
    out["hash_GBps"] = n * n / out["hash_s"] / 1e9
    out["step_s"], out["chain_total_s"] = {}, {}
    saved = engine.variant, engine.overlap
    for label, v, overlap in CONFIGS:
        engine.variant, engine.overlap = v, overlap
        engine.hash_low_priority = not label.endswith("-sameprio")
        engine.fuse_leaves = "-fl" in label  # epilogue and leaf hashing in one kernel
        if engine.variant_for(n) != v:
            continue
        best = best_chain_timing(engine, n, steps, m)
        out["step_s"][label] = best["step_s"]
        out["chain_total_s"][label] = best["total_s"]
    engine.variant, engine.overlap = saved
    engine.hash_low_priority = True
    engine.fuse_leaves = None
    g = out["gemm_cublas_s"]
    out["tops_cublas"] = out["ops_per_gemm"] / g / 1e12
    for name in ("mma", "wgmma"):
        if f"gemm_{name}_s" in out:
            out[f"tops_{name}"] = out["ops_per_gemm"] / out[f"gemm_{name}_s"] / 1e12
    out["step_over_gemm"] = {v: s / g for v, s in out["step_s"].items()}
    out["tops_step"] = {v: out["ops_per_gemm"] / s / 1e12 for v, s in out["step_s"].items()}
    return out


def memory_fill_run(engine: GpuEngine, n: int, step_s: float, m: int = 4, fill: float = 0.9) -> dict[str, Any]:
    """A challenge sized as the validator sizes one (pool = ``fill`` of the declared memory): its
    wall time from the call to the returned trace, against T x the steady step time."""
    T = max_steps_for(n, int(engine.memory_budget_bytes() * fill))
    res: dict[str, Any] = {"n": n, "T": T, "m": m, "pool_bytes": (T + 1) * (n * n + 32 * n),
                           "budget_bytes": engine.memory_budget_bytes(), "T_x_step_s": T * step_s}
    engine.close()  # the first run allocates its arena (cold), the second reuses it (warm)
    for run in ("cold", "warm"):
        params = ChallengeParams(bytes([7 + len(run)]) * 32, bytes([1]) * 32, bytes([2]) * 32, n, T, m)
        tr = engine.prove(params)
        res[run] = {"total_s": tr.timing["total_s"], "steps_s": tr.timing["steps_s"],
                    "total_over_T_step": tr.timing["total_s"] / res["T_x_step_s"]}
        res["variant"] = tr.variant
        engine.release(tr)
    res["total_over_T_step"] = res["warm"]["total_over_T_step"]
    return res


def bench_main(args: argparse.Namespace) -> int:
    sizes = args.n or [4096, 8192]
    engine = GpuEngine(device_id=0)
    facts = gpu_facts(0)
    result: dict[str, Any] = {"facts": facts.to_dict(), "copy_GBps": copy_bandwidth(engine), "sizes": []}
    print(f"{facts.model}: {facts.sm_count} SMs, {facts.memory_bytes / 2**30:.1f} GiB, "
          f"driver {facts.driver_version}, copy {result['copy_GBps']:.0f} GB/s", flush=True)
    for n in sizes:
        r = bench_n(engine, n, steps=args.steps)
        result["sizes"].append(r)
        print(f"n={n}: cuBLAS GEMM {r['gemm_cublas_s'] * 1e6:.1f} us ({r['tops_cublas']:.0f} TOPS); "
              + (f"mma GEMM {r['gemm_mma_s'] * 1e6:.1f} us ({r['tops_mma']:.0f} TOPS); " if "gemm_mma_s" in r else "")
              + f"epilogue {r['epilogue_s'] * 1e6:.1f} us; hash {r['hash_s'] * 1e6:.1f} us ({r['hash_GBps']:.0f} GB/s)",
              flush=True)
        for v, s in r["step_s"].items():
            print(f"   step[{v}] {s * 1e6:.1f} us = {r['step_over_gemm'][v]:.3f} x GEMM, {r['tops_step'][v]:.0f} TOPS", flush=True)
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
