"""What hashing a state costs on the GPU, as latency and as throughput, beside bare cuBLAS: the
evidence for issue 22's hashing item and for the spec's leaf size.

    PYTHONUNBUFFERED=1 python3 tests/bench/gpu_digest.py --out $OUT/gpu_digest.json [--n 4096 --n 8192]

Per n, in one run (CUDA events, medians of 20 after warm-up):
- ``gemm_us``: the bare cuBLAS int8 GEMM (int32 out) of one step;
- ``digest_us[cs]``: one state's digest alone on the device (leaves + row subtrees, then the tree
  over the n row nodes) with leaves of ``cs`` bytes: 1024 is the spec's ``cs = min(n, 1024)``, the
  smaller sizes are the proposal this measures (the same kernels, ``cs`` is their argument);
- ``digest_batch_us[cs]``: the same work for ``--batch`` states in the same launches, per state:
  the throughput cost of the hashing when it has the whole GPU to itself. A step that runs the
  product and the hashing on the same SMs cannot take less than about ``gemm + digest_batch``
  while the GEMM kernel fills every SM's registers and shared memory (cuBLAS's and CUTLASS's
  Hopper int8 kernels do), so this is the floor the spec's hashing puts under the step.
Every digest is checked against hashlib (node.pow.merkle's RFC 9162 tree over the same chunks)
before it is timed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cupy as cp

from node.gpu.bench import time_events
from node.gpu.engine import CublasInt8, _u32
from node.gpu.facts import gpu_facts
from node.gpu.kernels import pow_kernels
from node.pow import merkle

THREADS = 128


def row_nodes(k, X: cp.ndarray, nodes: cp.ndarray, n: int, cs: int, states: int = 1) -> None:
    """Row nodes of ``states`` consecutive n x n states (leaves of cs bytes) into ``nodes``."""
    nleaves = states * n * n // cs
    k.row_nodes(
        ((nleaves + THREADS - 1) // THREADS,),
        (THREADS,),
        (X, nodes, _u32(nleaves), _u32(cs), _u32(n // cs)),
        shared_mem=THREADS * 32,
    )


def tree(k, nodes: cp.ndarray, count: int, digest: cp.ndarray, scratch: list[cp.ndarray], per_state: int) -> None:
    """Fold ``count`` row nodes to count / per_state roots (per_state a power of two): blocks of up
    to 512 nodes folded in shared memory, never across states."""
    src, ping = nodes, 0
    while per_state > 1:
        t = min(256, per_state // 2)
        blocks = count // (2 * t)
        dst = digest if per_state == 2 * t else scratch[ping]
        k.merkle_reduce((blocks,), (t,), (src, dst, _u32(count)), shared_mem=t * 32)
        src, ping = dst, ping ^ 1
        count, per_state = blocks, per_state // (2 * t)


def reference_digest(X: np.ndarray, cs: int) -> bytes:
    """The RFC 9162 tree over the state's cs-byte chunks (rows are complete subtrees)."""
    flat = X.tobytes()
    return merkle.mth([merkle.leaf_hash(flat[i : i + cs]) for i in range(0, len(flat), cs)])


def check(k, n: int, cs: int) -> None:
    """The kernels' digest with cs-byte leaves equals hashlib's, one state and a batch of two."""
    rng = np.random.default_rng(n + cs)
    Xh = rng.integers(-128, 128, size=(2, n, n), dtype=np.int8)
    X = cp.asarray(Xh)
    nodes = cp.empty((2 * n, 32), dtype=cp.uint8)
    dig = cp.empty((2, 32), dtype=cp.uint8)
    scratch = [cp.empty((2 * n, 32), dtype=cp.uint8) for _ in range(2)]
    row_nodes(k, X, nodes, n, cs, states=2)
    tree(k, nodes, 2 * n, dig, scratch, n)
    got = cp.asnumpy(dig)
    for s in range(2):
        want = reference_digest(Xh[s], cs)
        if bytes(got[s]) != want:
            raise SystemExit(f"digest mismatch at n={n} cs={cs} state {s}: {bytes(got[s]).hex()} != {want.hex()}")


def bench(k, n: int, sizes: list[int], batch: int) -> dict:
    out: dict = {"n": n, "batch": batch, "gemm_us": None, "digest_us": {}, "digest_batch_us": {}, "leaves_us": {}, "tree_us": {}}
    X = cp.random.randint(-128, 128, size=(n, n), dtype=cp.int32).astype(cp.int8)
    Bt = cp.random.randint(-128, 128, size=(n, n), dtype=cp.int32).astype(cp.int8)
    product = cp.empty((n, n), dtype=cp.int32)
    gemm = CublasInt8()
    out["gemm_us"] = time_events(lambda r: gemm(X, Bt, product)) * 1e6
    Xb = cp.random.randint(-128, 128, size=(batch, n, n), dtype=cp.int32).astype(cp.int8)
    for cs in sizes:
        if cs > n or n // cs > 16:  # the row fold in row_nodes takes at most 16 leaves per row
            continue
        nodes = cp.empty((batch * n, 32), dtype=cp.uint8)
        dig = cp.empty((batch, 32), dtype=cp.uint8)
        scratch = [cp.empty((batch * n, 32), dtype=cp.uint8) for _ in range(2)]
        leaves = time_events(lambda r: row_nodes(k, X, nodes, n, cs))
        tr = time_events(lambda r: tree(k, nodes, n, dig, scratch, n))
        one = time_events(lambda r: (row_nodes(k, X, nodes, n, cs), tree(k, nodes, n, dig, scratch, n)))
        many = time_events(lambda r: (row_nodes(k, Xb, nodes, n, cs, batch), tree(k, nodes, batch * n, dig, scratch, n)))
        out["leaves_us"][cs] = leaves * 1e6
        out["tree_us"][cs] = tr * 1e6
        out["digest_us"][cs] = one * 1e6
        out["digest_batch_us"][cs] = many / batch * 1e6
        print(
            f"n={n} cs={cs}: digest {one * 1e6:.1f} us (leaves {leaves * 1e6:.1f} + tree {tr * 1e6:.1f}); "
            f"batch of {batch}: {many / batch * 1e6:.1f} us per state; cuBLAS GEMM {out['gemm_us']:.1f} us",
            flush=True,
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, action="append")
    ap.add_argument("--cs", type=int, action="append", help="leaf sizes in bytes (default 1024 512 256 128 64)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out")
    a = ap.parse_args()
    ns = a.n or [4096, 8192]
    sizes = a.cs or [1024, 512, 256, 128, 64]
    k = pow_kernels(0)
    t0 = time.perf_counter()
    for cs in sizes:
        check(k, 1024 if cs < 1024 else 2048, cs)
    print(f"digests with leaves of {sizes} bytes equal hashlib's ({time.perf_counter() - t0:.1f} s)", flush=True)
    f = gpu_facts(0)
    result = {"gpu": f.model, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": []}
    for n in ns:
        result["runs"].append(bench(k, n, sizes, a.batch))
    cp.get_default_memory_pool().free_all_blocks()
    from node.gpu.bench import apply_config, best_chain_timing
    from node.gpu.experimental import ExperimentalGpuEngine

    engine = ExperimentalGpuEngine(device_id=0)
    for r in result["runs"]:
        apply_config(engine, "auto")
        r["step_us"] = best_chain_timing(engine, r["n"], 48, 4)["step_s"] * 1e6
        print(f"n={r['n']}: engine step {r['step_us']:.1f} us = {r['step_us'] / r['gemm_us']:.2f}x the GEMM", flush=True)
    engine.close()
    for r in result["runs"]:
        g = r["gemm_us"]
        for cs, d in r["digest_batch_us"].items():
            r.setdefault("floor_x_gemm", {})[cs] = (g + d) / g
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1, default=str))
    print(hashlib.sha256(json.dumps(result, default=str).encode()).hexdigest()[:12], "written" if a.out else "", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
