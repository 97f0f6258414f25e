"""The numpy reference engine: runs the chain on the CPU, holds the pool in RAM.

It is the executable form of the spec that every other engine is compared with, and the engine
of CPU-only executors in tests and the harness. It refuses up front (EngineCapacityError) a
challenge whose pool and working buffers would not fit its memory budget.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from node.pow import merkle, philox
from node.pow.chain import gather_refs, step, step_refs
from node.pow.engine import ChallengeParams, EngineCapacityError, Trace, pool_bytes

__all__ = ["CpuTrace", "CpuEngine", "available_ram_bytes", "DEFAULT_BUDGET_FRACTION"]

DEFAULT_BUDGET_FRACTION = 0.5

# Called after step t with (t+1, X_{t+1}) before the new state is hashed; it may change the state in
# place. A seam for code outside the product (tests, the harness's adversaries) that needs states
# other than the spec's; ``gpow run`` never sets one.
StateHook = Callable[[int, np.ndarray], None]


def available_ram_bytes() -> int:
    """MemAvailable from /proc/meminfo (falls back to physical pages where that file is absent)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@dataclass(eq=False)
class CpuTrace:
    """A trace whose pool is a (T+1, n, n) int8 array in RAM, with its row nodes kept beside it."""

    params: ChallengeParams
    states: np.ndarray  # (T+1, n, n) int8
    nodes: np.ndarray  # (T+1, n, 32) uint8
    digests: list[bytes]
    root: bytes
    _top_levels: list[list[bytes]] | None = field(default=None, repr=False)

    @classmethod
    def from_states(cls, params: ChallengeParams, states: np.ndarray) -> CpuTrace:
        """Commit to the given states (row nodes, digests, root): for engines built from parts."""
        nodes = np.stack([merkle.row_nodes(states[s]) for s in range(states.shape[0])])
        digests = [merkle.pow2_root(nodes[s]) for s in range(states.shape[0])]
        return cls(params, states, nodes, digests, merkle.trace_root(digests))

    def row(self, s: int, i: int) -> bytes:
        return self.states[s, i].tobytes()

    def row_nodes(self, s: int) -> np.ndarray:
        return self.nodes[s]

    def top_levels(self) -> list[list[bytes]]:
        if self._top_levels is None:
            self._top_levels = merkle.build_levels(merkle.top_leaves(self.digests))
        return self._top_levels


class CpuEngine:
    """Engine protocol implementation in numpy (see node.pow.engine.Engine)."""

    kind = "cpu"

    def __init__(
        self,
        memory_budget_bytes: int | None = None,
        budget_fraction: float = DEFAULT_BUDGET_FRACTION,
        state_hook: StateHook | None = None,
    ) -> None:
        if memory_budget_bytes is not None and memory_budget_bytes <= 0:
            raise ValueError(f"memory_budget_bytes must be positive, got {memory_budget_bytes}")
        if not 0 < budget_fraction <= 1:
            raise ValueError(f"budget_fraction must be in (0, 1], got {budget_fraction}")
        self._budget = memory_budget_bytes
        self._fraction = budget_fraction
        self._hook = state_hook

    def memory_budget_bytes(self) -> int:
        if self._budget is not None:
            return self._budget
        return int(available_ram_bytes() * self._fraction)

    @staticmethod
    def working_bytes(params: ChallengeParams) -> int:
        """Buffers beside the pool: the m B matrices in float32, and about six n*n*4 temporaries
        of a step (float32 X_t, the product, the reference sum, the mixed sum)."""
        n2 = params.n * params.n
        return params.m * n2 * 4 + 6 * n2 * 4

    def check_fits(self, params: ChallengeParams) -> None:
        budget = self.memory_budget_bytes()
        overhead = self.working_bytes(params)
        needed = pool_bytes(params.n, params.T) + overhead
        if needed > budget:
            per_state = params.n * params.n + params.n * 32
            largest = max(0, (budget - overhead) // per_state - 1)
            raise EngineCapacityError(needed, budget, largest, what="the CPU engine's memory budget")

    def prove(self, params: ChallengeParams, progress: Callable[[int, int], None] | None = None) -> CpuTrace:
        self.check_fits(params)
        n, T, m = params.n, params.T, params.m
        key = params.philox_key()
        states = np.empty((T + 1, n, n), dtype=np.int8)
        nodes = np.empty((T + 1, n, merkle.HASH_BYTES), dtype=np.uint8)
        states[0] = philox.x0_matrix(key, n)
        nodes[0] = merkle.row_nodes(states[0])
        digests = [merkle.pow2_root(nodes[0])]
        Bs = [philox.b_matrix(key, r, n).astype(np.float32) for r in range(m)]
        for t in range(T):
            refs = step_refs(digests[t - 1] if t else None, t, n)
            ref_sum = gather_refs(states, refs, n)
            states[t + 1] = step(states[t], Bs[t % m], ref_sum, philox.salt(key, t, n))
            if self._hook is not None:
                self._hook(t + 1, states[t + 1])
            nodes[t + 1] = merkle.row_nodes(states[t + 1])
            digests.append(merkle.pow2_root(nodes[t + 1]))
            if progress is not None:
                progress(t + 1, T)
        return CpuTrace(params, states, nodes, digests, merkle.trace_root(digests))

    def release(self, trace: Trace) -> None:
        # Drop the big arrays now rather than whenever the last reference to the trace goes.
        if isinstance(trace, CpuTrace):
            trace.states = np.empty((0, 0, 0), dtype=np.int8)
            trace.nodes = np.empty((0, 0, merkle.HASH_BYTES), dtype=np.uint8)
