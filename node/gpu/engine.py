"""The GPU engine: the chain of spec pow-v1 on one CUDA device, pool held in device memory.

Per step, with no host round trip: ``step_prep`` derives the 256 references from ``d_{t-1}``
(SHA-256 on the device) and the row salts (Philox); the product and the epilogue write ``X_{t+1}``
into the pool; ``row_nodes`` hashes the 1 KiB leaves and each row's subtree, and ``merkle_reduce``
folds the row nodes to ``d_{t+1}``. Only the ``T+1`` digests come back at the end; openings read
rows from the pool.

Two paths for the product and epilogue, bit-identical (both checked against the numpy reference
engine and the spec vectors):
- ``cutlass``: kernels/cutlass_step.cu, CUTLASS's Hopper int8 GEMM (TMA, warp-specialised persistent
  mainloop) with the step epilogue applied from the accumulators (node/gpu/cutlass_step.py). Loaded
  on Hopper and checked at start against cuBLAS and the epilogue kernel, bit for bit on random
  input; used at the sizes where its chain measured faster, as ``CUTLASS_PLANS`` says;
- ``cublas``: cuBLAS int8 GEMM (int32 out, cublasGemmEx), then the epilogue kernel. Every other GPU
  and size, and the fallback where the CUTLASS library is missing (one log line says why).
Hashing runs on a second, low-priority stream: the whole digest from ``OVERLAP_MIN_N`` up, below it
only the tree over the row nodes (the leaves in line), as measured (BENCHMARKS.md, "GPU engine").
The bench-only variants (hand-written mma.sync and wgmma steps, row panels, epilogue fused with
the leaf hashing, other hashing schedules) live in node/gpu/experimental.py.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cupy as cp
import numpy as np

from node.gpu.cutlass_step import CutlassStep, CutlassUnavailable, load_cutlass
from node.gpu.kernels import PowKernels, pow_kernels
from node.pow import merkle, philox
from node.pow.engine import ChallengeParams, EngineCapacityError, pool_bytes

__all__ = ["CUTLASS_PLANS", "DEFAULT_RESERVE_BYTES", "VARIANTS", "Chain", "CublasInt8", "CutlassPlan", "GpuEngine", "GpuTrace"]

log = logging.getLogger("gpow.gpu")

VARIANTS = ("cutlass", "cublas")
# Left free beside the budget: CUDA context, cuBLAS workspace, NVRTC. The validator fills 90% of
# the declared budget with the pool, so the working buffers of a step fit in the other 10%.
DEFAULT_RESERVE_BYTES = 1 << 30


@dataclass(frozen=True)
class CutlassPlan:
    """How the CUTLASS path runs a chain at one size: the library's tile configuration (index into
    node.gpu.cutlass_step.VARIANT_NAMES), its persistent scheduler's tile order (swizzle, raster),
    how many SMs its grid leaves to the hashing stream, and the hashing schedule (see overlap_for)."""

    variant: int
    swizzle: int = 1
    raster: int = 0
    sms_left: int = 0
    overlap: bool | str = True


# Measured on the lent H200 (BENCHMARKS.md, "GPU engine"). CUTLASS_PLANS: the sizes at which the
# CUTLASS chain beat cuBLAS + epilogue, and how it ran there (n = 4096: 197.2 us against 204.6 for
# cublas-tree; at 8192 cuBLAS's chain was faster, 1011.8 against 1113.3 us). OVERLAP_MIN_N: the
# smallest n at which hashing the whole state on the second stream beat hashing its leaves in line.
CUTLASS_PLANS: dict[int, CutlassPlan] = {4096: CutlassPlan(variant=0, swizzle=8, raster=1, sms_left=8, overlap=True)}
OVERLAP_MIN_N = 8192
SMALL_OVERLAP: bool | str = "tree"  # below OVERLAP_MIN_N: only the tree on the second stream

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
            self._handle,
            self.OP_T,
            self.OP_N,
            n,
            n,
            n,
            self._one.ctypes.data,
            Bt.data.ptr,
            self.CUDA_R_8I,
            n,
            X.data.ptr,
            self.CUDA_R_8I,
            n,
            self._zero.ctypes.data,
            C.data.ptr,
            self.CUDA_R_32I,
            n,
            self.COMPUTE_32I,
            self.GEMM_DEFAULT,
        )

    def rows(self, x_ptr: int, rows: int, bt_ptr: int, c_ptr: int, n: int) -> None:
        """``C[rows] = X[rows] . B`` for a panel of ``rows`` consecutive rows (raw device pointers
        to the panel's first row of X and of C; B is n x n). Column-major: C^T (n x rows) = B^T X^T."""
        self._cublas.gemmEx(
            self._handle,
            self.OP_T,
            self.OP_N,
            n,
            rows,
            n,
            self._one.ctypes.data,
            bt_ptr,
            self.CUDA_R_8I,
            n,
            x_ptr,
            self.CUDA_R_8I,
            n,
            self._zero.ctypes.data,
            c_ptr,
            self.CUDA_R_32I,
            n,
            self.COMPUTE_32I,
            self.GEMM_DEFAULT,
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


@dataclass(eq=False)
class Chain:
    """The device buffers of one chain being proved, handed to ``GpuEngine._chain``."""

    params: ChallengeParams
    variant: str
    key: tuple[int, int]
    states: Any  # (T+1, n, n) int8: the pool
    nodes: Any  # (T+1, n, 32) uint8: row nodes
    dig: Any  # (T+1, 32) uint8: digests
    Bts: Any  # (m, n, n) int8: B_r transposed
    A: Any  # (n, n) int32 product, or None where the path needs none
    refs: Any
    salt: Any
    scratch: Any
    hashed: list[Any]  # per state: the event marking its digest on the hashing stream, or None
    progress: Callable[[int, int], None] | None
    state_hook: Callable[[int, Any], None] | None


class GpuEngine:
    """Engine protocol implementation on one CUDA device (see node.pow.engine.Engine)."""

    kind = "gpu"

    def __init__(
        self,
        device_id: int = 0,
        memory_budget_bytes: int | None = None,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        preallocate: bool = True,
    ) -> None:
        if cp.cuda.runtime.getDeviceCount() <= device_id:
            raise RuntimeError(f"no CUDA device {device_id} (this host has {cp.cuda.runtime.getDeviceCount()})")
        self.device_id = device_id
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
            self._gemm = CublasInt8()
            self.sm_count = int(cp.cuda.runtime.getDeviceProperties(device_id)["multiProcessorCount"])
            self.cutlass: CutlassStep | None = self._load_cutlass()
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

    # ---- the CUTLASS path -----------------------------------------------------------------------

    def _load_cutlass(self) -> CutlassStep | None:
        """The CUTLASS step library if it loads here and computes what cuBLAS and the epilogue
        kernel compute, bit for bit, on random input; else None, said in one log line."""
        arch = str(cp.cuda.Device(self.device_id).compute_capability)
        try:
            lib = load_cutlass(arch)
        except CutlassUnavailable as exc:
            log.info("GPU %d: CUTLASS fused step unavailable, using cuBLAS + epilogue: %s", self.device_id, exc)
            return None
        bad = ""
        for variant in sorted({plan.variant for plan in CUTLASS_PLANS.values()}):
            try:
                bad = bad or self._cutlass_mismatch(lib, variant, 512)
            except RuntimeError as exc:
                bad = str(exc)
        if bad:
            log.warning("GPU %d: CUTLASS fused step disagrees with cuBLAS (%s), using cuBLAS + epilogue", self.device_id, bad)
            return None
        return lib

    def _cutlass_mismatch(self, lib: CutlassStep, variant: int, n: int) -> str:
        """Empty if library variant ``variant`` gives cuBLAS's product and the epilogue kernel's
        step on random int8 input of size ``n``; else what differed."""
        if not lib.fits(variant, n):
            return f"tile {lib.tiles[variant]} does not divide n={n}"
        rng = np.random.default_rng(11)
        with cp.cuda.Device(self.device_id), self._stream:
            X = cp.asarray(rng.integers(-128, 128, (n, n), dtype=np.int8))
            Bt = cp.asarray(rng.integers(-128, 128, (n, n), dtype=np.int8))
            pool = cp.asarray(rng.integers(-128, 128, (3, n, n), dtype=np.int8))
            refs = cp.asarray(np.stack([rng.integers(0, 3, _G * _RF), rng.integers(0, n, _G * _RF)], 1).ravel(), dtype=cp.uint32)
            salt = cp.asarray(rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32))
            ref = cp.empty((n, n), dtype=cp.int32)
            self._gemm(X, Bt, ref)
            got = cp.full((n, n), 0x7F7F7F7F, dtype=cp.int32)
            lib.step(variant, X, Bt, None, None, None, None, got, self.sm_count, self._stream)
            if not bool(cp.array_equal(got, ref)):
                return "product"
            want = cp.empty((n, n), dtype=cp.int8)
            self._epilogue(ref, pool, refs, salt, want)
            out = cp.full((n, n), 0x55, dtype=cp.int8)
            lib.step(variant, X, Bt, pool, refs, salt, out, None, self.sm_count, self._stream)
            if not bool(cp.array_equal(out, want)):
                return "step"
        return ""

    def step_cutlass(
        self,
        X: cp.ndarray,
        Bt: cp.ndarray,
        pool: cp.ndarray,
        refs: cp.ndarray,
        salt: cp.ndarray,
        out: cp.ndarray,
        plan: CutlassPlan,
    ) -> None:
        """One fused step into ``out`` on the current stream, run as ``plan`` says."""
        assert self.cutlass is not None
        self.cutlass.step(
            plan.variant,
            X,
            Bt,
            pool,
            refs,
            salt,
            out,
            None,
            self.sm_count - plan.sms_left,
            cp.cuda.get_current_stream(),
            plan.swizzle,
            plan.raster,
        )

    def cutlass_plan(self, n: int) -> CutlassPlan | None:
        """How the CUTLASS path runs at size ``n``, or None where it is not used (not loaded, not
        measured faster at this n, or its tiles do not divide n)."""
        plan = CUTLASS_PLANS.get(n)
        if self.cutlass is None or plan is None or not self.cutlass.fits(plan.variant, n):
            return None
        return plan

    def variant_for(self, n: int) -> str:
        """The path used at size ``n``: "cutlass" where it has a plan, else "cublas"."""
        return "cutlass" if self.cutlass_plan(n) is not None else "cublas"

    def overlap_for(self, n: int) -> bool | str:
        """Hashing schedule at size ``n``: True = the whole digest on the hashing stream, "tree" =
        the leaves in line and the tree there, False = all in line."""
        plan = self.cutlass_plan(n)
        if plan is not None:
            return plan.overlap
        return True if n >= OVERLAP_MIN_N else SMALL_OVERLAP

    @staticmethod
    def needs_product(variant: str) -> bool:
        """Whether the path writes the int32 product to memory (the n x n int32 buffer)."""
        return variant == "cublas"

    # ---- sizing ---------------------------------------------------------------------------------

    def memory_budget_bytes(self) -> int:
        return self._budget

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
                needed,
                self._budget,
                self.largest_T(params.n, params.m),
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

    def _hash_behind(
        self, after: Any, hs: Any, X: cp.ndarray, nodes: cp.ndarray, digest: cp.ndarray, scratch: cp.ndarray, *, tree_only: bool
    ) -> Any:
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
        self._k.row_nodes(
            ((nleaves + threads - 1) // threads,),
            (threads,),
            (X, nodes, _u32(nleaves), _u32(cs), _u32(per_row)),
            shared_mem=threads * 32,
        )

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
            return [own[o : o + sz] for o, sz in zip(offs, sizes)], own
        if self._arena is None or self._arena.size < total:
            self._arena = None
            cp.get_default_memory_pool().free_all_blocks()
            self._arena = cp.empty(total, dtype=cp.uint8)
        self._arena_busy = True
        return [self._arena[o : o + sz] for o, sz in zip(offs, sizes)], self._arena

    def prove(
        self,
        params: ChallengeParams,
        progress: Callable[[int, int], None] | None = None,
        state_hook: Callable[[int, Any], None] | None = None,
    ) -> GpuTrace:
        """Run the chain. ``state_hook(t+1, X_{t+1})`` (a seam for tests and the harness) may change
        a new state on the device before it is hashed."""
        self.check_fits(params)
        n, T, m = params.n, params.T, params.m
        key = params.philox_key()
        variant = self.variant_for(n)
        n2 = n * n
        t_start = time.perf_counter()
        try:
            with cp.cuda.Device(self.device_id), self._stream:
                main = self._stream
                product = self.needs_product(variant)
                bufs, owner = self._carve(
                    [
                        (T + 1) * n2,
                        (T + 1) * n * 32,
                        (T + 1) * 32,
                        m * n2,
                        n2,
                        4 * n2 if product else 0,
                        _G * _RF * 8,
                        4 * n,
                        2 * max(1, n // 512) * 32,
                    ]
                )
                states = bufs[0].view(cp.int8).reshape(T + 1, n, n)
                nodes = bufs[1].reshape(T + 1, n, 32)
                dig = bufs[2].reshape(T + 1, 32)
                Bts = bufs[3].view(cp.int8).reshape(m, n, n)
                tmp = bufs[4].view(cp.int8).reshape(n, n)
                A = bufs[5].view(cp.int32).reshape(n, n) if product else None
                scratch = bufs[8].reshape(2, max(1, n // 512), 32)
                for r in range(m):
                    self._philox_matrix(tmp, key, philox.TAG_B, r)
                    self._transpose(tmp, Bts[r])
                self._philox_matrix(states[0], key, philox.TAG_STATE, 0)
                self.hash_state(states[0], nodes[0], dig[0], scratch)
                chain = Chain(
                    params,
                    variant,
                    key,
                    states,
                    nodes,
                    dig,
                    Bts,
                    A,
                    bufs[6].view(cp.uint32),
                    bufs[7].view(cp.uint32),
                    scratch,
                    [None] * (T + 1),
                    progress,
                    state_hook,
                )
                ev0, ev1 = cp.cuda.Event(), cp.cuda.Event()
                ev0.record(main)
                self._chain(chain)
                if chain.hashed[T] is not None:
                    main.wait_event(chain.hashed[T])
                ev1.record(main)
                digest_bytes = cp.asnumpy(dig, stream=main)
                main.synchronize()
                steps_s = cp.cuda.get_elapsed_time(ev0, ev1) / 1e3
        except cp.cuda.memory.OutOfMemoryError as exc:
            if not self._arena_busy:  # else a live trace still reads the arena: keep it
                self._arena = None
            cp.get_default_memory_pool().free_all_blocks()
            raise EngineCapacityError(
                pool_bytes(n, T) + self.working_bytes(params),
                self._budget,
                self.largest_T(n, m),
                what=f"GPU {self.device_id} at allocation ({exc})",
            ) from exc
        digests = [digest_bytes[s].tobytes() for s in range(T + 1)]
        total_s = time.perf_counter() - t_start
        timing = {"steps_s": steps_s, "step_s": steps_s / T, "total_s": total_s}
        return GpuTrace(params, self.device_id, states, nodes, digests, merkle.trace_root(digests), timing, variant, _owner=owner)

    def _chain(self, c: Chain) -> None:
        """Enqueue the T steps on the chain stream. The digest of ``X_{t+1}`` is computed on the
        hashing stream while the chain stream runs step ``t+1``: only step ``t+2`` needs
        ``d_{t+1}`` (for its references), so the hashing has a whole step to hide in. With
        ``overlap_for(n) == "tree"`` the leaves are hashed in line and only the latency-bound tree
        (few blocks) goes to the hashing stream."""
        n, T, m = c.params.n, c.params.T, c.params.m
        states, nodes, dig = c.states, c.nodes, c.dig
        overlap = self.overlap_for(n)
        plan = self.cutlass_plan(n) if c.variant == "cutlass" else None
        main = self._stream
        hs = self._hash_stream_low if overlap else main
        for t in range(T):
            if c.variant == "cublas":
                self._gemm(states[t], c.Bts[t % m], c.A)
            if t >= 2 and c.hashed[t - 1] is not None:
                main.wait_event(c.hashed[t - 1])  # d_{t-1} for the references
            self.step_prep(dig[t - 1] if t else dig[0], t, n, c.key, c.refs, c.salt)
            if plan is not None:
                self.step_cutlass(states[t], c.Bts[t % m], states, c.refs, c.salt, states[t + 1], plan)
            else:
                self._epilogue(c.A, states, c.refs, c.salt, states[t + 1])
            if c.state_hook is not None:
                c.state_hook(t + 1, states[t + 1])
            if hs is main:
                self.hash_state(states[t + 1], nodes[t + 1], dig[t + 1], c.scratch)
            else:
                if overlap == "tree":
                    self.hash_rows(states[t + 1], nodes[t + 1])
                c.hashed[t + 1] = self._hash_behind(
                    main, hs, states[t + 1], nodes[t + 1], dig[t + 1], c.scratch, tree_only=overlap == "tree"
                )
            if c.progress is not None:
                c.progress(t + 1, T)  # enqueued; the device may still be running it

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
