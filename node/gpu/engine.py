"""The GPU engine: the chain of spec pow-v1 on one CUDA device, pool held in device memory.

Per step, with no host round trip: ``step_prep`` derives the 256 references from ``d_{t-1}``
(SHA-256 on the device) and the row salts (Philox); the product plus epilogue writes ``X_{t+1}``
into the pool; ``row_nodes`` hashes the 1 KiB leaves and each row's subtree, and ``merkle_reduce``
folds the row nodes to ``d_{t+1}`` (in line, or on a second, low-priority stream where that was
measured faster). Only the ``T+1`` digests come back at the end; openings read rows from the pool.

Three step variants, bit-identical (all are checked against the numpy reference engine):
- ``cublas``: cuBLAS int8 GEMM (int32 out, cublasGemmEx) then a separate epilogue kernel;
- ``fused``: kernels/step_mma.cu, int8 mma.sync with the epilogue applied from the accumulators;
- ``wgmma``: kernels/step_wgmma.cu, the same fusion on Hopper's wgmma (sm_90 only), enabled only
  after its product matched cuBLAS bit for bit on this device (``_calibrate_wgmma``).
- ``panels``: the cuBLAS path with each step's GEMM split into ``panels`` row panels on the chain
  stream; each panel's epilogue runs on a second stream as soon as its GEMM is done (events), so the
  memory-bound epilogue overlaps the next panel's compute-bound GEMM. The pipeline drains each step
  (the next GEMM needs the whole new state).
``auto`` picks the one measured faster on Hopper (see BENCHMARKS.md, "GPU engine").
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import cupy as cp
import numpy as np

from node.pow import merkle, philox
from node.pow.engine import ChallengeParams, EngineCapacityError, pool_bytes

from node.gpu.kernels import (FUSED_SMEM_BYTES, FUSED_TILE, WGMMA_LBO, WGMMA_SBO, WGMMA_SMEM_BYTES, WGMMA_TILE_M,
                              WGMMA_TILE_N, PowKernels, load_module, pow_kernels)

__all__ = ["GpuEngine", "GpuTrace", "VARIANTS", "DEFAULT_RESERVE_BYTES", "CublasInt8"]

VARIANTS = ("cublas", "fused", "wgmma", "panels")
# Left free beside the budget: CUDA context, cuBLAS workspace, NVRTC. The validator fills 90% of
# the declared budget with the pool, so the working buffers of a step fit in the other 10%.
DEFAULT_RESERVE_BYTES = 1 << 30
# Measured on the lent H100 (BENCHMARKS.md): the variant "auto" uses, and the smallest n at which
# hashing on a second stream beat hashing in line (at n=4096 it slowed the GEMM more than it hid).
AUTO_VARIANT = "cublas"  # "panels" (P = 2, 4, 8) measured 0.4-16% slower: BENCHMARKS.md, "Panelled ..."
OVERLAP_MIN_N = 8192
AUTO_SMALL_OVERLAP: bool | str = "tree"  # below OVERLAP_MIN_N: only the tree on the second stream
AUTO_FUSE_LEAVES = False  # epilogue_rows (epilogue + leaf hashing in one kernel): being measured

_G, _RF = 64, 4


class CublasInt8:
    """Row-major ``C (int32) = X (int8) . B`` through cublasGemmEx, given ``Bt`` (B transposed).

    In cuBLAS's column-major view the row-major buffers are transposes: C^T = B^T X^T, and the
    buffer of Bt read column-major is B, so the call is op(A)=T on Bt, op(B)=N on X ("TN", the
    layout cuBLAS's int8 tensor-core kernels prefer).
    """

    CUDA_R_8I = 3
    CUDA_R_32I = 10
    COMPUTE_32I = 72  # CUBLAS_COMPUTE_32I
    OP_N, OP_T = 0, 1
    GEMM_DEFAULT = -1

    def __init__(self) -> None:
        from cupy.cuda import cublas, device

        self._cublas = cublas
        self._handle = device.get_cublas_handle()
        self._one = np.ones(1, dtype=np.int32)
        self._zero = np.zeros(1, dtype=np.int32)
        cublas.setPointerMode(self._handle, getattr(cublas, "CUBLAS_POINTER_MODE_HOST", 0))

    def __call__(self, X: cp.ndarray, Bt: cp.ndarray, C: cp.ndarray) -> None:
        n = X.shape[0]
        self._cublas.gemmEx(
            self._handle, self.OP_T, self.OP_N, n, n, n,
            self._one.ctypes.data, Bt.data.ptr, self.CUDA_R_8I, n,
            X.data.ptr, self.CUDA_R_8I, n,
            self._zero.ctypes.data, C.data.ptr, self.CUDA_R_32I, n,
            self.COMPUTE_32I, self.GEMM_DEFAULT,
        )

    def rows(self, x_ptr: int, rows: int, bt_ptr: int, c_ptr: int, n: int) -> None:
        """``C[rows] = X[rows] . B`` for a panel of ``rows`` consecutive rows (raw device pointers
        to the panel's first row of X and of C; B is n x n). Column-major: C^T (n x rows) = B^T X^T."""
        self._cublas.gemmEx(
            self._handle, self.OP_T, self.OP_N, n, rows, n,
            self._one.ctypes.data, bt_ptr, self.CUDA_R_8I, n,
            x_ptr, self.CUDA_R_8I, n,
            self._zero.ctypes.data, c_ptr, self.CUDA_R_32I, n,
            self.COMPUTE_32I, self.GEMM_DEFAULT,
        )


@dataclass(eq=False)
class GpuTrace:
    """A trace whose pool (all T+1 states and their row nodes) stays in device memory."""

    params: ChallengeParams
    device_id: int
    states: Any  # cupy (T+1, n, n) int8
    nodes: Any  # cupy (T+1, n, 32) uint8
    digests: list[bytes]
    root: bytes
    timing: dict[str, float] = field(default_factory=dict)  # steps_s, step_s, total_s
    variant: str = ""
    _top_levels: list[list[bytes]] | None = field(default=None, repr=False)
    _owner: Any = field(default=None, repr=False)  # the device buffer the pool lives in

    def row(self, s: int, i: int) -> bytes:
        with cp.cuda.Device(self.device_id):
            return cp.asnumpy(self.states[s, i]).tobytes()

    def row_nodes(self, s: int) -> np.ndarray:
        with cp.cuda.Device(self.device_id):
            return cp.asnumpy(self.nodes[s])

    def top_levels(self) -> list[list[bytes]]:
        if self._top_levels is None:
            self._top_levels = merkle.build_levels(merkle.top_leaves(self.digests))
        return self._top_levels


def _u32(x: int) -> np.uint32:
    return np.uint32(x & 0xFFFFFFFF)


class GpuEngine:
    """Engine protocol implementation on one CUDA device (see node.pow.engine.Engine)."""

    kind = "gpu"

    def __init__(
        self,
        device_id: int = 0,
        variant: str = "auto",
        memory_budget_bytes: int | None = None,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        overlap: bool | str | None = None,
        preallocate: bool = True,
        hash_low_priority: bool = True,
        fuse_leaves: bool | None = None,
        panels: int = 4,
        epilogue_low_priority: bool = False,
        panel_epilogue_inline: bool = False,
    ) -> None:
        if variant not in VARIANTS + ("auto",):
            raise ValueError(f"variant must be one of {VARIANTS + ('auto',)}, got {variant!r}")
        if cp.cuda.runtime.getDeviceCount() <= device_id:
            raise RuntimeError(f"no CUDA device {device_id} (this host has {cp.cuda.runtime.getDeviceCount()})")
        self.device_id = device_id
        self.variant = variant
        self.overlap = overlap
        self.hash_low_priority = hash_low_priority
        self.fuse_leaves = fuse_leaves
        # Variant "panels": row panels per step (a power of two), and the epilogue stream's priority.
        self.panels = panels
        self.epilogue_low_priority = epilogue_low_priority
        # Variant "panels" with each panel's epilogue on the chain stream (no overlap): measures the
        # split GEMM alone (cuBLAS picked a faster kernel for 4096 x 8192 x 8192 than for 8192^3).
        self.panel_epilogue_inline = panel_epilogue_inline
        self._arena: Any = None
        self._arena_busy = False
        with cp.cuda.Device(device_id):
            gc.collect()  # an engine dropped in a reference cycle still holds its arena
            cp.get_default_memory_pool().free_all_blocks()  # blocks cached by engines now gone
            free, total = cp.cuda.runtime.memGetInfo()
            self.total_bytes = int(total)
            self._k: PowKernels = pow_kernels(device_id)  # compile now: fail at start, not mid-challenge
            # The chain's stream at the device's highest priority and the overlapped hashing at its
            # lowest: the block scheduler then gives hashing only the SMs the product leaves idle.
            # CuPy does not expose cudaDeviceGetStreamPriorityRange; CUDA clamps a priority outside
            # the device's range to its nearest end, so 0 (lowest) and -8 reach both ends.
            self._stream = cp.cuda.Stream(non_blocking=True, priority=-8)
            self._hash_stream_low = cp.cuda.Stream(non_blocking=True, priority=0)
            self._hash_stream_same = cp.cuda.Stream(non_blocking=True, priority=-8)
            self._epi_stream = cp.cuda.Stream(non_blocking=True, priority=-8)
            self._epi_stream_low = cp.cuda.Stream(non_blocking=True, priority=0)
            self._epilogue_panel_k = load_module("pow", device_id).get_function("epilogue_panel")
            self._gemm = CublasInt8()
            self.wgmma_desc: tuple[int, int] | None = self._calibrate_wgmma()
        if memory_budget_bytes is not None:
            if memory_budget_bytes <= 0:
                raise ValueError(f"memory_budget_bytes must be positive, got {memory_budget_bytes}")
            self._budget = int(memory_budget_bytes)
        else:
            self._budget = max(0, int(free) - reserve_bytes)
        if preallocate and self._budget > 0:
            # Hold the whole budget from the start, as an executor dedicated to this GPU should:
            # a challenge then pays no cudaMalloc (about 0.2 s for a 70 GB pool, measured).
            with cp.cuda.Device(device_id):
                self._arena = cp.empty(self._budget, dtype=cp.uint8)

    # ---- sizing ---------------------------------------------------------------------------------

    def memory_budget_bytes(self) -> int:
        return self._budget

    def _calibrate_wgmma(self) -> tuple[int, int] | None:
        """The (lbo, sbo) descriptor strides under which the wgmma kernel's bare product equals
        cuBLAS's on random int8 input, or None (then the variant falls back)."""
        if self._k.step_wgmma is None:
            return None
        n = 512
        rng = np.random.default_rng(5)
        with self._stream:
            X = cp.asarray(rng.integers(-128, 128, (n, n), dtype=np.int8))
            Bt = cp.asarray(rng.integers(-128, 128, (n, n), dtype=np.int8))
            ref = cp.empty((n, n), dtype=cp.int32)
            self._gemm(X, Bt, ref)
            got = cp.empty((n, n), dtype=cp.int32)
            z = cp.zeros(n, dtype=cp.uint32)
            for desc in ((WGMMA_LBO, WGMMA_SBO), (WGMMA_SBO, WGMMA_LBO)):
                got.fill(0x7F7F7F7F)
                self._wgmma(X, Bt, X, z, z, X, got, desc)
                if bool(cp.array_equal(got, ref)):
                    return desc
        return None

    def variant_for(self, n: int) -> str:
        v = AUTO_VARIANT if self.variant == "auto" else self.variant
        if v == "wgmma" and (self.wgmma_desc is None or n < WGMMA_TILE_N):
            v = "fused"
        if v == "fused" and (self._k.step_mma is None or n < FUSED_TILE):
            return "cublas"  # the 128 x 128 tile needs n >= 128 and an sm_80+ device
        return v

    @staticmethod
    def working_bytes(params: ChallengeParams) -> int:
        """Device buffers beside the pool: the m transposed B matrices, one B being generated, the
        int32 product (cuBLAS variant), Merkle scratch, references and salts."""
        n2 = params.n * params.n
        return params.m * n2 + n2 + 4 * n2 + params.n * 32 + params.n * 4 + 4096

    def largest_T(self, n: int, m: int, budget: int | None = None) -> int:
        """The largest T whose pool and working buffers fit ``budget`` (default: this engine's)."""
        b = self._budget if budget is None else budget
        probe = ChallengeParams(bytes(32), bytes(32), bytes(32), n, 1, m)
        per_state = n * n + n * 32
        return max(0, (b - self.working_bytes(probe)) // per_state - 1)

    def check_fits(self, params: ChallengeParams) -> None:
        needed = pool_bytes(params.n, params.T) + self.working_bytes(params)
        if needed > self._budget:
            raise EngineCapacityError(
                needed, self._budget, self.largest_T(params.n, params.m),
                what=f"GPU {self.device_id}'s memory budget (n={params.n}, T={params.T}, m={params.m})",
            )

    # ---- pieces, also used by the benchmark -----------------------------------------------------

    def _philox_matrix(self, out: cp.ndarray, key: tuple[int, int], tag: int, id_: int) -> None:
        nblocks = out.size // 16
        threads = 256
        blocks = min((nblocks + threads - 1) // threads, 65535 * 8)
        self._k.philox_stream((blocks,), (threads,), (out, np.uint64(nblocks), _u32(tag), _u32(id_), _u32(key[0]), _u32(key[1])))

    def _transpose(self, B: cp.ndarray, Bt: cp.ndarray) -> None:
        n = B.shape[0]
        self._k.transpose_i8((n // 32, n // 32), (32, 8), (B, Bt, _u32(n)))

    def _hash_behind(self, after: Any, hs: Any, X: cp.ndarray, nodes: cp.ndarray, digest: cp.ndarray,
                     scratch: cp.ndarray, *, tree_only: bool) -> Any:
        """Hash state X on stream ``hs`` once all work queued so far on stream ``after`` is done
        (tree_only: its row nodes are already there). Returns the event that marks its digest."""
        ready = cp.cuda.Event(disable_timing=True)
        ready.record(after)
        hs.wait_event(ready)
        with hs:
            if tree_only:
                self.hash_tree(nodes, digest, scratch)
            else:
                self.hash_state(X, nodes, digest, scratch)
        done = cp.cuda.Event(disable_timing=True)
        done.record(hs)
        return done

    def hash_state(self, X: cp.ndarray, nodes: cp.ndarray, digest: cp.ndarray, scratch: cp.ndarray) -> None:
        """Row nodes of state ``X`` into ``nodes`` (n, 32) and ``d`` into ``digest`` (32,)."""
        self.hash_rows(X, nodes)
        self.hash_tree(nodes, digest, scratch)

    def hash_rows(self, X: cp.ndarray, nodes: cp.ndarray) -> None:
        """The row nodes: leaves H(0x00 || chunk) and each row's subtree."""
        n = X.shape[0]
        cs = merkle.chunk_size(n)
        nleaves = n * n // cs
        per_row = n // cs
        threads = 128
        self._k.row_nodes(((nleaves + threads - 1) // threads,), (threads,),
                          (X, nodes, _u32(nleaves), _u32(cs), _u32(per_row)), shared_mem=threads * 32)

    def hash_tree(self, nodes: cp.ndarray, digest: cp.ndarray, scratch: cp.ndarray) -> None:
        """``d`` from the n row nodes: blocks of 512 nodes folded in shared memory, then one block."""
        n = nodes.shape[0]
        src, count, ping = nodes, n, 0
        while count > 1:
            t = min(256, count // 2)
            blocks = count // (2 * t)
            dst = digest if blocks == 1 else scratch[ping]
            self._k.merkle_reduce((blocks,), (t,), (src, dst, _u32(count)), shared_mem=t * 32)
            src, count, ping = dst, blocks, ping ^ 1

    def step_prep(self, d_prev: cp.ndarray, t: int, n: int, key: tuple[int, int], refs: cp.ndarray, salt: cp.ndarray) -> None:
        threads = 256
        blocks = (max(n, _G * _RF) + threads - 1) // threads
        self._k.step_prep((blocks,), (threads,), (d_prev, _u32(t), _u32(n), _u32(key[0]), _u32(key[1]), refs, salt))

    def _epilogue(self, A: cp.ndarray, pool: cp.ndarray, refs: cp.ndarray, salt: cp.ndarray, out: cp.ndarray) -> None:
        n = A.shape[0]
        groups = n * n // 16
        self._k.epilogue(((groups + 255) // 256,), (256,), (A, pool, refs, salt, out, _u32(n)))

    def _epilogue_rows(self, A: cp.ndarray, pool: cp.ndarray, refs: cp.ndarray, salt: cp.ndarray, out: cp.ndarray,
                       nodes: cp.ndarray) -> None:
        """The epilogue fused with the leaf hashing: writes X_next and its row nodes."""
        n = A.shape[0]
        cs = merkle.chunk_size(n)
        nleaves = n * n // cs
        threads = 128
        self._k.epilogue_rows(((nleaves + threads - 1) // threads,), (threads,),
                              (A, pool, refs, salt, out, nodes, _u32(n), _u32(cs), _u32(n // cs)),
                              shared_mem=threads * 32)

    def step_fused(self, X: cp.ndarray, Bt: cp.ndarray, pool: cp.ndarray, refs: cp.ndarray, salt: cp.ndarray,
                   out: cp.ndarray, out32: cp.ndarray | None = None) -> None:
        n = X.shape[0]
        grid = (n // FUSED_TILE, n // FUSED_TILE)
        o32 = out32 if out32 is not None else np.uint64(0)
        self._k.step_mma(grid, (256,), (X, Bt, pool, refs, salt, out, o32, _u32(n)), shared_mem=FUSED_SMEM_BYTES)

    def _wgmma(self, X: cp.ndarray, Bt: cp.ndarray, pool: cp.ndarray, refs: cp.ndarray, salt: cp.ndarray,
               out: cp.ndarray, out32: cp.ndarray | None, desc: tuple[int, int]) -> None:
        n = X.shape[0]
        grid = ((n // WGMMA_TILE_N) * (n // WGMMA_TILE_M),)
        o32 = out32 if out32 is not None else np.uint64(0)
        self._k.step_wgmma(grid, (256,), (X, Bt, pool, refs, salt, out, o32, _u32(n), _u32(desc[0]), _u32(desc[1])),
                           shared_mem=WGMMA_SMEM_BYTES)

    def step_wgmma(self, X: cp.ndarray, Bt: cp.ndarray, pool: cp.ndarray, refs: cp.ndarray, salt: cp.ndarray,
                   out: cp.ndarray, out32: cp.ndarray | None = None) -> None:
        assert self.wgmma_desc is not None
        self._wgmma(X, Bt, pool, refs, salt, out, out32, self.wgmma_desc)

    # ---- the chain ------------------------------------------------------------------------------

    def _carve(self, sizes: list[int]) -> tuple[list[Any], Any]:
        """Byte buffers of the given sizes, and their owner. They come from the engine's arena
        (grown, never shrunk, so the next challenge pays no cudaMalloc of tens of GB) unless a
        live trace still holds it; then from a buffer of their own, freed with that trace."""
        align = 256
        offs, total = [], 0
        for sz in sizes:
            offs.append(total)
            total += (sz + align - 1) // align * align
        if self._arena_busy:
            own = cp.empty(total, dtype=cp.uint8)
            return [own[o:o + sz] for o, sz in zip(offs, sizes)], own
        if self._arena is None or self._arena.size < total:
            self._arena = None
            cp.get_default_memory_pool().free_all_blocks()
            self._arena = cp.empty(total, dtype=cp.uint8)
        self._arena_busy = True
        return [self._arena[o:o + sz] for o, sz in zip(offs, sizes)], self._arena

    def prove(
        self, params: ChallengeParams, progress: Callable[[int, int], None] | None = None,
        state_hook: Callable[[int, Any], None] | None = None,
    ) -> GpuTrace:
        """Run the chain. ``state_hook(t+1, X_{t+1})`` (tests and cheater models only) may change
        a new state on the device before it is hashed.

        With ``overlap`` the digest of ``X_{t+1}`` is computed on a second stream while the main
        stream runs step ``t+1``: only step ``t+2`` needs ``d_{t+1}`` (for its references), so the
        hashing has a whole step to hide in. ``overlap="tree"`` moves only the latency-bound tree
        over the row nodes there (few blocks) and hashes the leaves in line. ``overlap="late"`` (cuBLAS
        variant) starts the digest of ``X_{t+1}`` only once the GEMM of step ``t+1`` is done, so it
        shares the SMs with the memory-bound epilogue rather than the GEMM. ``None``: the measured
        choice (OVERLAP_MIN_N, AUTO_SMALL_OVERLAP)."""
        self.check_fits(params)
        n, T, m = params.n, params.T, params.m
        key = params.philox_key()
        variant = self.variant_for(n)
        n2 = n * n
        t_start = time.perf_counter()
        try:
            with cp.cuda.Device(self.device_id), self._stream:
                overlap = self.overlap if self.overlap is not None else (True if n >= OVERLAP_MIN_N else AUTO_SMALL_OVERLAP)
                hash_stream = self._hash_stream_low if self.hash_low_priority else self._hash_stream_same
                main, hs = self._stream, (hash_stream if overlap else self._stream)
                bufs, owner = self._carve([(T + 1) * n2, (T + 1) * n * 32, (T + 1) * 32, m * n2, n2,
                                    4 * n2 if variant in ("cublas", "panels") else 0, _G * _RF * 8, 4 * n, 2 * max(1, n // 512) * 32])
                states = bufs[0].view(cp.int8).reshape(T + 1, n, n)
                nodes = bufs[1].reshape(T + 1, n, 32)
                dig = bufs[2].reshape(T + 1, 32)
                Bts = bufs[3].view(cp.int8).reshape(m, n, n)
                tmp = bufs[4].view(cp.int8).reshape(n, n)
                A = bufs[5].view(cp.int32).reshape(n, n) if variant in ("cublas", "panels") else None
                refs = bufs[6].view(cp.uint32)
                salt = bufs[7].view(cp.uint32)
                scratch = bufs[8].reshape(2, max(1, n // 512), 32)
                for r in range(m):
                    self._philox_matrix(tmp, key, philox.TAG_B, r)
                    self._transpose(tmp, Bts[r])
                self._philox_matrix(states[0], key, philox.TAG_STATE, 0)
                self.hash_state(states[0], nodes[0], dig[0], scratch)
                hashed: list[Any] = [None] * (T + 1)
                ev0, ev1 = cp.cuda.Event(), cp.cuda.Event()
                ev0.record(main)
                fuse = self.fuse_leaves if self.fuse_leaves is not None else AUTO_FUSE_LEAVES
                fl = bool(fuse) and variant == "cublas" and state_hook is None
                late = overlap == "late" and variant == "cublas" and hs is not main and not fl

                def enqueue_hash(s: int) -> None:
                    ready = cp.cuda.Event(disable_timing=True)
                    ready.record(main)
                    hs.wait_event(ready)
                    with hs:
                        self.hash_state(states[s], nodes[s], dig[s], scratch)
                    done = cp.cuda.Event(disable_timing=True)
                    done.record(hs)
                    hashed[s] = done

                if variant == "panels":
                    self._chain_panels(states, nodes, dig, Bts, A, refs, salt, scratch, key, overlap, hs, hashed,
                                       progress, state_hook)
                for t in range(T if variant != "panels" else 0):
                    if variant == "cublas":
                        self._gemm(states[t], Bts[t % m], A)
                        if late and t >= 1:
                            enqueue_hash(t)  # X_t's digest, started once GEMM_t is done
                    if t >= 2 and hashed[t - 1] is not None:
                        main.wait_event(hashed[t - 1])  # d_{t-1} for the references
                    self.step_prep(dig[t - 1] if t else dig[0], t, n, key, refs, salt)
                    if variant == "fused":
                        self.step_fused(states[t], Bts[t % m], states, refs, salt, states[t + 1])
                    elif variant == "wgmma":
                        self.step_wgmma(states[t], Bts[t % m], states, refs, salt, states[t + 1])
                    elif fl:
                        self._epilogue_rows(A, states, refs, salt, states[t + 1], nodes[t + 1])
                    else:
                        self._epilogue(A, states, refs, salt, states[t + 1])
                    if state_hook is not None:
                        state_hook(t + 1, states[t + 1])
                    if fl and hs is main:
                        self.hash_tree(nodes[t + 1], dig[t + 1], scratch)
                    elif hs is main:
                        self.hash_state(states[t + 1], nodes[t + 1], dig[t + 1], scratch)
                    elif late:
                        if t == T - 1:
                            enqueue_hash(T)
                    else:
                        if overlap == "tree" and not fl:
                            self.hash_rows(states[t + 1], nodes[t + 1])
                        hashed[t + 1] = self._hash_behind(main, hs, states[t + 1], nodes[t + 1], dig[t + 1], scratch,
                                                          tree_only=overlap == "tree" or fl)
                    if progress is not None:
                        progress(t + 1, T)  # enqueued; the device may still be running it
                if hashed[T] is not None:
                    main.wait_event(hashed[T])
                ev1.record(main)
                digest_bytes = cp.asnumpy(dig, stream=main)
                main.synchronize()
                steps_s = cp.cuda.get_elapsed_time(ev0, ev1) / 1e3
        except cp.cuda.memory.OutOfMemoryError as exc:
            if not self._arena_busy:  # else a live trace still reads the arena: keep it
                self._arena = None
            cp.get_default_memory_pool().free_all_blocks()
            raise EngineCapacityError(pool_bytes(n, T) + self.working_bytes(params), self._budget,
                                      self.largest_T(n, m), what=f"GPU {self.device_id} at allocation ({exc})") from exc
        digests = [digest_bytes[s].tobytes() for s in range(T + 1)]
        total_s = time.perf_counter() - t_start
        timing = {"steps_s": steps_s, "step_s": steps_s / T, "total_s": total_s}
        return GpuTrace(params, self.device_id, states, nodes, digests, merkle.trace_root(digests), timing, variant,
                        _owner=owner)

    def _epilogue_panel(self, A: cp.ndarray, pool: cp.ndarray, refs: cp.ndarray, salt: cp.ndarray, out: cp.ndarray,
                        row0: int, rows: int) -> None:
        n = A.shape[0]
        groups = rows * n // 16
        self._epilogue_panel_k(((groups + 255) // 256,), (256,), (A, pool, refs, salt, out, _u32(n), _u32(row0), _u32(rows)))

    def _hash_rows_panel(self, X: cp.ndarray, nodes: cp.ndarray, row0: int, rows: int) -> None:
        """Row nodes of rows [row0, row0 + rows) of state ``X`` (a panel's leaves are consecutive)."""
        n = X.shape[1]
        cs = merkle.chunk_size(n)
        per_row = n // cs
        nleaves = rows * per_row
        threads = 128
        self._k.row_nodes(((nleaves + threads - 1) // threads,), (threads,),
                          (X[row0:row0 + rows], nodes[row0:row0 + rows], _u32(nleaves), _u32(cs), _u32(per_row)),
                          shared_mem=threads * 32)

    def _chain_panels(self, states: cp.ndarray, nodes: cp.ndarray, dig: cp.ndarray, Bts: cp.ndarray, A: cp.ndarray,
                      refs: cp.ndarray, salt: cp.ndarray, scratch: cp.ndarray, key: tuple[int, int],
                      overlap: bool | str, hs: Any, hashed: list[Any],
                      progress: Callable[[int, int], None] | None, state_hook: Callable[[int, Any], None] | None) -> None:
        """The chain of variant "panels" (see the module docstring). Per step t, on the chain stream:
        the P panel GEMMs, an event after each. On the epilogue stream: wait for d_{t-1}, the step's
        references and salts, then each panel's epilogue once its GEMM's event has fired (and, with
        ``overlap="tree"``, that panel's row nodes). The chain stream waits for the last epilogue
        before the next GEMM. Hashing: ``True`` the whole digest on the hashing stream, ``"tree"``
        leaves per panel on the epilogue stream and the tree on the hashing stream, ``"tree-main"``
        the leaves on the chain stream once the step is drained and the tree on the hashing stream,
        ``False`` in line."""
        T, m, n = states.shape[0] - 1, Bts.shape[0], states.shape[1]
        P = max(1, min(int(self.panels), n // 16))
        if n % P:
            raise ValueError(f"panels={P} does not divide n={n}")
        rows = n // P
        main = self._stream
        epi = self._epi_stream_low if self.epilogue_low_priority else self._epi_stream
        if self.panel_epilogue_inline:
            epi = main
        tree_only = overlap in ("tree", "tree-main")
        panel_leaves = overlap == "tree" and hs is not main and state_hook is None
        gemm_done = [cp.cuda.Event(disable_timing=True) for _ in range(P)]  # re-recorded each step
        n2, x_base, a_base = n * n, states.data.ptr, A.data.ptr
        bt_ptrs = [Bts[r].data.ptr for r in range(m)]
        for t in range(T):
            bt, x0 = bt_ptrs[t % m], x_base + t * n2
            for p in range(P):
                self._gemm.rows(x0 + p * rows * n, rows, bt, a_base + 4 * p * rows * n, n)
                gemm_done[p].record(main)
            if t >= 2 and hashed[t - 1] is not None:
                epi.wait_event(hashed[t - 1])  # d_{t-1} for the references
            out, out_nodes = states[t + 1], nodes[t + 1]
            with epi:
                # Writes refs/salt: the last step's epilogues, the only readers, are earlier on this stream.
                self.step_prep(dig[t - 1] if t else dig[0], t, n, key, refs, salt)
                for p in range(P):
                    epi.wait_event(gemm_done[p])
                    self._epilogue_panel(A, states, refs, salt, out, p * rows, rows)
                    if panel_leaves:
                        self._hash_rows_panel(out, out_nodes, p * rows, rows)
            written = cp.cuda.Event(disable_timing=True)
            written.record(epi)
            main.wait_event(written)  # the next GEMM reads the whole new state (and A is reused)
            if state_hook is not None:
                state_hook(t + 1, states[t + 1])
            if hs is main:
                self.hash_state(states[t + 1], nodes[t + 1], dig[t + 1], scratch)
            else:
                if tree_only and not panel_leaves:
                    self.hash_rows(states[t + 1], nodes[t + 1])
                hashed[t + 1] = self._hash_behind(epi if panel_leaves else main, hs, states[t + 1], nodes[t + 1],
                                                  dig[t + 1], scratch, tree_only=tree_only)
            if progress is not None:
                progress(t + 1, T)

    def release(self, trace: GpuTrace) -> None:  # type: ignore[override]
        """The trace's pool goes back to the engine's arena (reused by the next challenge)."""
        if isinstance(trace, GpuTrace) and trace._owner is not None:
            if trace._owner is self._arena:
                self._arena_busy = False
            trace.states = trace.nodes = trace._owner = None

    def close(self) -> None:
        """Give the arena's device memory back to CUDA."""
        self._arena, self._arena_busy = None, False
        with cp.cuda.Device(self.device_id):
            cp.get_default_memory_pool().free_all_blocks()
