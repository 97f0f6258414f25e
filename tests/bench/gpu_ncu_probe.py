"""One launch each of the kernels worth profiling, for Nsight Compute on the device:

    ncu --clock-control none --section SpeedOfLight --section LaunchStats --section Occupancy \
        python3 tests/bench/gpu_ncu_probe.py [--n 4096] [--variant 0]

cuBLAS int8 GEMM (int32 out), the CUTLASS library's bare product and fused step (configuration
``--variant``), the cuBLAS path's epilogue, the leaf hashing and the tree over the row nodes. ncu
names each kernel and gives its time, throughput against the SM and memory ceilings, registers and
grid; the run itself prints nothing worth reading.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cupy as cp

from node.gpu.experimental import ExperimentalGpuEngine


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, action="append")
    ap.add_argument("--variant", type=int, default=0)
    ap.add_argument("--swizzle", type=int, default=1)
    ap.add_argument("--raster", type=int, default=0)
    a = ap.parse_args()
    e = ExperimentalGpuEngine(device_id=0, memory_budget_bytes=1 << 30, preallocate=False)
    rng = np.random.default_rng(1)
    for n in a.n or [4096]:
        with cp.cuda.Device(0), e._stream:
            X = cp.asarray(rng.integers(-128, 128, (n, n), dtype=np.int8))
            Bt = cp.asarray(rng.integers(-128, 128, (n, n), dtype=np.int8))
            pool = cp.stack([X, Bt, X])
            refs = cp.asarray(np.stack([rng.integers(0, 3, 256), rng.integers(0, n, 256)], 1).ravel(), dtype=cp.uint32)
            salt = cp.asarray(rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32))
            A = cp.empty((n, n), dtype=cp.int32)
            out = cp.empty((n, n), dtype=cp.int8)
            nodes = cp.empty((n, 32), dtype=cp.uint8)
            dig = cp.empty(32, dtype=cp.uint8)
            scratch = cp.empty((2, max(1, n // 512), 32), dtype=cp.uint8)
            e._gemm(X, Bt, A)
            if e.cutlass is not None:
                e.cutlass.step(a.variant, X, Bt, None, None, None, None, A, e.sm_count, e._stream, a.swizzle, a.raster)
                e.cutlass.step(a.variant, X, Bt, pool, refs, salt, out, None, e.sm_count, e._stream, a.swizzle, a.raster)
            e._epilogue(A, pool, refs, salt, out)
            e.hash_rows(out, nodes)
            e.hash_tree(nodes, dig, scratch)
            e._stream.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
