"""Bench-only variants of the GPU engine: measured side by side with the shipped paths by ``gpow bench``
(node/gpu/bench.py) and tests/bench/gpu_all.py, never used by a node.

``ExperimentalGpuEngine`` extends the production ``GpuEngine`` (cutlass, cublas) with:
- ``fused``: kernels/step_mma.cu, hand-written int8 mma.sync with the epilogue from the accumulators;
- ``wgmma``: kernels/step_wgmma.cu, the same on Hopper's wgmma (sm_90a), enabled only after its
  product matched cuBLAS bit for bit on this device (``_calibrate_wgmma``);
- ``panels``: the cuBLAS path with each step's GEMM split into ``panels`` row panels on the chain
  stream; each panel's epilogue runs on a second stream as soon as its GEMM is done (events), so the
  memory-bound epilogue overlaps the next panel's compute-bound GEMM;
- ``fuse_leaves``: the cuBLAS epilogue fused with the leaf hashing (``epilogue_rows``);
- hashing schedules: ``overlap`` True / False / "tree" / "late" (the digest of ``X_{t+1}`` started
  only once the GEMM of step ``t+1`` is done), the hashing stream at the chain's priority;
- the CUTLASS path run as any ``CutlassPlan`` (``cutlass_override``): its tile configuration, tile
  order, and a persistent grid on fewer SMs, leaving the others to the hashing stream.
Each is bit-identical to the reference engine (tests/gpu, tests/bench/gpu_all.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cupy as cp
import numpy as np

from node.gpu.engine import CUTLASS_PLANS, DEFAULT_RESERVE_BYTES, VARIANTS, Chain, CutlassPlan, GpuEngine, _u32
from node.gpu.kernels import arch, load_module
from node.pow import merkle

__all__ = ["EXPERIMENTAL_VARIANTS", "FUSED_TILE", "WGMMA_TILE_N", "ExperimentalGpuEngine"]

EXPERIMENTAL_VARIANTS = VARIANTS + ("fused", "wgmma", "panels")
# Must match kernels/step_mma.cu: STAGES * (BM + BN) * PITCH bytes of dynamic shared memory.
FUSED_TILE = 128
FUSED_SMEM_BYTES = 4 * (128 + 128) * 80
# kernels/step_wgmma.cu: 128 x 256 tiles, STAGES * (BM + BN) * BK bytes; its core-matrix strides.
WGMMA_TILE_M, WGMMA_TILE_N, WGMMA_BK = 128, 256, 128
WGMMA_SMEM_BYTES = 4 * (128 + 256) * 128
WGMMA_LBO, WGMMA_SBO = 128, (128 // 16) * 128


class ExperimentalGpuEngine(GpuEngine):
    """``GpuEngine`` with every measured variant selectable by attribute (see the module docstring).
    ``variant="auto"`` and ``overlap=None`` mean the production engine's choice."""

    def __init__(
        self,
        device_id: int = 0,
        variant: str = "auto",
        memory_budget_bytes: int | None = None,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        overlap: bool | str | None = None,
        preallocate: bool = True,
        hash_low_priority: bool = True,
        fuse_leaves: bool = False,
        panels: int = 4,
        epilogue_low_priority: bool = False,
        panel_epilogue_inline: bool = False,
    ) -> None:
        if variant not in EXPERIMENTAL_VARIANTS + ("auto",):
            raise ValueError(f"variant must be one of {EXPERIMENTAL_VARIANTS + ('auto',)}, got {variant!r}")
        super().__init__(
            device_id=device_id, memory_budget_bytes=memory_budget_bytes, reserve_bytes=reserve_bytes, preallocate=preallocate
        )
        self.variant = variant
        self.cutlass_override: CutlassPlan | None = None  # variant "cutlass": run as this plan
        self.overlap = overlap
        self.hash_low_priority = hash_low_priority
        self.fuse_leaves = fuse_leaves
        # Variant "panels": row panels per step (a power of two), and the epilogue stream's priority.
        self.panels = panels
        self.epilogue_low_priority = epilogue_low_priority
        # Variant "panels" with each panel's epilogue on the chain stream (no overlap): measures the
        # split GEMM alone (cuBLAS picked a faster kernel for 4096 x 8192 x 8192 than for 8192^3).
        self.panel_epilogue_inline = panel_epilogue_inline
        with cp.cuda.Device(device_id):
            self._hash_stream_same = cp.cuda.Stream(non_blocking=True, priority=-8)
            self._epi_stream = cp.cuda.Stream(non_blocking=True, priority=-8)
            self._epi_stream_low = cp.cuda.Stream(non_blocking=True, priority=0)
            pow_mod = load_module("pow", device_id)
            self._epilogue_panel_k = pow_mod.get_function("epilogue_panel")
            self._epilogue_rows_k = pow_mod.get_function("epilogue_rows")
            cc = arch(device_id)
            self._step_mma: Any = None
            if int(cc) >= 80:
                self._step_mma = load_module("step_mma", device_id).get_function("step_mma")
                self._step_mma.max_dynamic_shared_size_bytes = FUSED_SMEM_BYTES
            self._step_wgmma: Any = None
            if cc == "90":
                try:
                    self._step_wgmma = load_module("step_wgmma", device_id, ("-arch=sm_90a",)).get_function("step_wgmma")
                    self._step_wgmma.max_dynamic_shared_size_bytes = WGMMA_SMEM_BYTES
                except cp.cuda.compiler.CompileException:  # an NVRTC without sm_90a: the other variants remain
                    self._step_wgmma = None
            self.wgmma_desc: tuple[int, int] | None = self._calibrate_wgmma()

    def set_defaults(self) -> None:
        """Back to the production engine's choices."""
        self.variant, self.overlap, self.fuse_leaves, self.hash_low_priority = "auto", None, False, True
        self.panels, self.epilogue_low_priority, self.panel_epilogue_inline = 4, False, False
        self.cutlass_override = None

    def _calibrate_wgmma(self) -> tuple[int, int] | None:
        """The (lbo, sbo) descriptor strides under which the wgmma kernel's bare product equals
        cuBLAS's on random int8 input, or None (then the variant falls back)."""
        if self._step_wgmma is None:
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
        v = self.variant
        if v == "auto":
            return super().variant_for(n)
        if v == "cutlass":
            return "cutlass" if self.cutlass_plan(n) is not None else "cublas"  # no library, or n does not fit
        if v == "wgmma" and (self.wgmma_desc is None or n < WGMMA_TILE_N):
            v = "fused"
        if v == "fused" and (self._step_mma is None or n < FUSED_TILE):
            return "cublas"  # the 128 x 128 tile needs n >= 128 and an sm_80+ device
        return v

    def overlap_for(self, n: int) -> bool | str:
        return super().overlap_for(n) if self.overlap is None else self.overlap

    def cutlass_plan(self, n: int) -> CutlassPlan | None:
        """Variant "cutlass": ``cutlass_override``, else the production plan for n, else
        configuration 0 in CUTLASS's default order; "auto": the production engine's choice."""
        if self.variant == "auto":
            return super().cutlass_plan(n)
        if self.variant != "cutlass" or self.cutlass is None:
            return None
        plan = self.cutlass_override or CUTLASS_PLANS.get(n) or CutlassPlan(variant=0)
        return plan if self.cutlass.fits(plan.variant, n) else None

    @staticmethod
    def needs_product(variant: str) -> bool:
        return variant in ("cublas", "panels")

    def _epilogue_rows(
        self, A: cp.ndarray, pool: cp.ndarray, refs: cp.ndarray, salt: cp.ndarray, out: cp.ndarray, nodes: cp.ndarray
    ) -> None:
        """The epilogue fused with the leaf hashing: writes X_next and its row nodes."""
        n = A.shape[0]
        cs = merkle.chunk_size(n)
        nleaves = n * n // cs
        threads = 128
        self._epilogue_rows_k(
            ((nleaves + threads - 1) // threads,),
            (threads,),
            (A, pool, refs, salt, out, nodes, _u32(n), _u32(cs), _u32(n // cs)),
            shared_mem=threads * 32,
        )

    def step_fused(
        self,
        X: cp.ndarray,
        Bt: cp.ndarray,
        pool: cp.ndarray,
        refs: cp.ndarray,
        salt: cp.ndarray,
        out: cp.ndarray,
        out32: cp.ndarray | None = None,
    ) -> None:
        n = X.shape[0]
        grid = (n // FUSED_TILE, n // FUSED_TILE)
        o32 = out32 if out32 is not None else np.uint64(0)
        self._step_mma(grid, (256,), (X, Bt, pool, refs, salt, out, o32, _u32(n)), shared_mem=FUSED_SMEM_BYTES)

    def _wgmma(
        self,
        X: cp.ndarray,
        Bt: cp.ndarray,
        pool: cp.ndarray,
        refs: cp.ndarray,
        salt: cp.ndarray,
        out: cp.ndarray,
        out32: cp.ndarray | None,
        desc: tuple[int, int],
    ) -> None:
        n = X.shape[0]
        grid = ((n // WGMMA_TILE_N) * (n // WGMMA_TILE_M),)
        o32 = out32 if out32 is not None else np.uint64(0)
        self._step_wgmma(
            grid, (256,), (X, Bt, pool, refs, salt, out, o32, _u32(n), _u32(desc[0]), _u32(desc[1])), shared_mem=WGMMA_SMEM_BYTES
        )

    def step_wgmma(
        self,
        X: cp.ndarray,
        Bt: cp.ndarray,
        pool: cp.ndarray,
        refs: cp.ndarray,
        salt: cp.ndarray,
        out: cp.ndarray,
        out32: cp.ndarray | None = None,
    ) -> None:
        assert self.wgmma_desc is not None
        self._wgmma(X, Bt, pool, refs, salt, out, out32, self.wgmma_desc)

    def _chain(self, c: Chain) -> None:
        """Every variant and hashing schedule of the module docstring (the production engine's
        ``_chain`` is the cutlass/cublas subset of this loop)."""
        n, T, m = c.params.n, c.params.T, c.params.m
        states, nodes, dig, Bts, A, refs, salt, scratch = c.states, c.nodes, c.dig, c.Bts, c.A, c.refs, c.salt, c.scratch
        key, hashed, progress, state_hook, variant = c.key, c.hashed, c.progress, c.state_hook, c.variant
        overlap = self.overlap_for(n)
        hash_stream = self._hash_stream_low if self.hash_low_priority else self._hash_stream_same
        main, hs = self._stream, (hash_stream if overlap else self._stream)
        if variant == "panels":
            self._chain_panels(states, nodes, dig, Bts, A, refs, salt, scratch, key, overlap, hs, hashed, progress, state_hook)
            return
        plan = self.cutlass_plan(n) if variant == "cutlass" else None
        fl = bool(self.fuse_leaves) and variant == "cublas" and state_hook is None
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

        for t in range(T):
            if variant == "cublas":
                self._gemm(states[t], Bts[t % m], A)
                if late and t >= 1:
                    enqueue_hash(t)  # X_t's digest, started once GEMM_t is done
            if t >= 2 and hashed[t - 1] is not None:
                main.wait_event(hashed[t - 1])  # d_{t-1} for the references
            self.step_prep(dig[t - 1] if t else dig[0], t, n, key, refs, salt)
            if plan is not None:
                self.step_cutlass(states[t], Bts[t % m], states, refs, salt, states[t + 1], plan)
            elif variant == "fused":
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
                hashed[t + 1] = self._hash_behind(
                    main, hs, states[t + 1], nodes[t + 1], dig[t + 1], scratch, tree_only=overlap == "tree" or fl
                )
            if progress is not None:
                progress(t + 1, T)  # enqueued; the device may still be running it

    def _epilogue_panel(
        self, A: cp.ndarray, pool: cp.ndarray, refs: cp.ndarray, salt: cp.ndarray, out: cp.ndarray, row0: int, rows: int
    ) -> None:
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
        self._k.row_nodes(
            ((nleaves + threads - 1) // threads,),
            (threads,),
            (X[row0 : row0 + rows], nodes[row0 : row0 + rows], _u32(nleaves), _u32(cs), _u32(per_row)),
            shared_mem=threads * 32,
        )

    def _chain_panels(
        self,
        states: cp.ndarray,
        nodes: cp.ndarray,
        dig: cp.ndarray,
        Bts: cp.ndarray,
        A: cp.ndarray,
        refs: cp.ndarray,
        salt: cp.ndarray,
        scratch: cp.ndarray,
        key: tuple[int, int],
        overlap: bool | str,
        hs: Any,
        hashed: list[Any],
        progress: Callable[[int, int], None] | None,
        state_hook: Callable[[int, Any], None] | None,
    ) -> None:
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
                hashed[t + 1] = self._hash_behind(
                    epi if panel_leaves else main, hs, states[t + 1], nodes[t + 1], dig[t + 1], scratch, tree_only=tree_only
                )
            if progress is not None:
                progress(t + 1, T)
