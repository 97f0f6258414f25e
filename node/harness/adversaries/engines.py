"""Answerers that prove with a different engine: wrong rows, zero states, or a partial pool.

Each is built from node.pow's own primitives, so it differs from the honest engine in exactly one
way (CPU engine only: they rewrite its states).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from node.pow import merkle, philox
from node.pow.chain import gather_refs, step, step_refs
from node.pow.cpu_engine import CpuEngine
from node.pow.engine import ChallengeParams, Engine, EngineCapacityError, Trace, pool_bytes
from node.roles.answerer import Answerer


class CorruptRows(Answerer):
    """Gets a fraction of the rows of every state wrong (skipping their work), then commits to
    the wrong states consistently, so only the step relation can catch it: each sample does with
    probability ``fraction``, a challenge with ``1 - (1 - fraction)^k``."""

    def __init__(self, fraction: str | float = 0.2, seed: int = 1):
        self.fraction = float(fraction)
        if not 0 < self.fraction <= 1:
            raise ValueError(f"corrupt-rows fraction must be in (0, 1], got {fraction}")
        self._rng = np.random.default_rng(seed)

    def prove(self, engine: Engine, params: ChallengeParams, deadline_s: float | None = None) -> Trace:
        rng = self._rng
        frac = self.fraction

        def hook(s: int, state: np.ndarray) -> None:
            rows = rng.random(state.shape[0]) < frac
            state[rows] = rng.integers(-128, 128, size=(int(rows.sum()), state.shape[1]), dtype=np.int8)

        return CpuEngine(engine.memory_budget_bytes(), state_hook=hook).prove(params)


class ZeroChain(Answerer):
    """Commits to a chain of all-zero states after X_0, as if zero rows were a fixed point of the
    step. The per-row salt makes mix(0 + 0 + sigma) non-zero, so every relation fails."""

    def prove(self, engine: Engine, params: ChallengeParams, deadline_s: float | None = None) -> Trace:
        def hook(s: int, state: np.ndarray) -> None:
            state[:] = 0

        return CpuEngine(engine.memory_budget_bytes(), state_hook=hook).prove(params)


class GaveUp(EngineCapacityError):
    def __init__(self, seconds: float):
        Exception.__init__(self, f"gave up recomputing dropped states after {seconds:.1f} s")


class PartialPoolTrace:
    """A trace that keeps every ``stride``-th state and recomputes the others on demand."""

    def __init__(self, params: ChallengeParams, rebuild: Callable[[int], np.ndarray], nodes: np.ndarray, digests: list[bytes]):
        self.params = params
        self._rebuild = rebuild
        self.nodes = nodes
        self.digests = digests
        self.root = merkle.trace_root(digests)

    def row(self, s: int, i: int) -> bytes:
        return self._rebuild(s)[i].tobytes()

    def row_nodes(self, s: int) -> np.ndarray:
        return self.nodes[s]


class PartialPool(Answerer):
    """Claims the memory for the whole pool but keeps only a fraction of the states, recomputing
    the rest whenever a step's references (or an opening) need them. The references are chosen
    by the digests, so the recomputation branches and its cost climbs steeply as memory shrinks:
    the commitment misses the claimed GPU's profile."""

    def __init__(self, keep: str | float = 0.34, cache_states: int = 8):
        self.keep = float(keep)
        if not 0 < self.keep < 1:
            raise ValueError(f"partial-pool keep must be in (0, 1), got {keep}")
        self.stride = max(2, round(1 / self.keep))
        self.cache_states = cache_states
        self.recomputed_steps = 0

    def prove(self, engine: Engine, params: ChallengeParams, deadline_s: float | None = None) -> Trace:
        n, T, m = params.n, params.T, params.m
        have = int(engine.memory_budget_bytes() * self.keep)
        if pool_bytes(n, (T + 1) // self.stride) > have:
            raise EngineCapacityError(pool_bytes(n, (T + 1) // self.stride), have, 0, what="even the partial pool")
        started = time.monotonic()
        give_up = started + (deadline_s if deadline_s is not None else 60.0)
        key = params.philox_key()
        Bs = [philox.b_matrix(key, r, n).astype(np.float32) for r in range(m)]
        kept: dict[int, np.ndarray] = {0: philox.x0_matrix(key, n)}
        cache: OrderedDict[int, np.ndarray] = OrderedDict()
        digests: list[bytes] = []
        nodes = np.empty((T + 1, n, merkle.HASH_BYTES), dtype=np.uint8)
        stride = self.stride

        def compute_next(t: int, X_t: np.ndarray) -> np.ndarray:
            if time.monotonic() > give_up:
                raise GaveUp(time.monotonic() - started)
            self.recomputed_steps += 1
            refs = step_refs(digests[t - 1] if t else None, t, n)
            ref_sum = gather_refs(Pool(), refs, n)
            return self.replay(t + 1, step(X_t, Bs[t % m], ref_sum, philox.salt(key, t, n)))

        def state(s: int) -> np.ndarray:
            if s in kept:
                return kept[s]
            if s in cache:
                cache.move_to_end(s)
                return cache[s]
            base = s - s % stride
            X = kept[base]
            for t in range(base, s):
                X = compute_next(t, X)
            cache[s] = X
            if len(cache) > self.cache_states:
                cache.popitem(last=False)
            return X

        class Pool:
            def __getitem__(self, j: int) -> np.ndarray:
                return state(int(j))

        X = kept[0]
        nodes[0] = merkle.row_nodes(X)
        digests.append(merkle.pow2_root(nodes[0]))
        for t in range(T):
            X = compute_next(t, X)
            s = t + 1
            X = self.adjust(s, X, lambda j: j in kept or j in cache or j % stride == 0)
            if s % stride == 0:
                kept[s] = X
            else:
                cache[s] = X
                if len(cache) > self.cache_states:
                    cache.popitem(last=False)
            nodes[s] = merkle.row_nodes(X)
            digests.append(merkle.pow2_root(nodes[s]))
        give_up = float("inf")  # openings may recompute at leisure; the deadline that counted has passed
        return PartialPoolTrace(params, state, nodes, digests)

    def adjust(self, s: int, X: np.ndarray, available: Callable[[int], bool]) -> np.ndarray:
        """Subclasses may tamper with a fresh state (once, as it is first computed)."""
        return X

    def replay(self, s: int, X: np.ndarray) -> np.ndarray:
        """Re-apply to a recomputed state whatever ``adjust`` did to it the first time."""
        return X


class GrindRefs(PartialPool):
    """A partial pool that tries to make its gaps harmless: after each step it rewrites one row
    up to ``tries`` times, keeping the version whose digest points the next step's references
    at states it still holds. Each try re-rolls all 256 references, so steering fails, the cheat
    is left with partial-pool's recomputation (late), and its rewritten rows break the step
    relation wherever a sample lands on one (false proof)."""

    def __init__(self, keep: str | float = 0.34, tries: int = 16):
        super().__init__(keep)
        self.tries = int(tries)
        self._rng = np.random.default_rng(7)
        self._rows: dict[int, np.ndarray] = {}

    def adjust(self, s: int, X: np.ndarray, available: Callable[[int], bool]) -> np.ndarray:
        n = X.shape[0]
        best, best_hits = X, -1
        for _ in range(self.tries):
            Y = X.copy()
            Y[0] = self._rng.integers(-128, 128, n, dtype=np.int8)
            d = merkle.pow2_root(merkle.row_nodes(Y))
            hits = sum(available(int(j)) for j in step_refs(d, s + 1, n)[:, :, 0].ravel())  # d_s steers step s+1
            if hits > best_hits:
                best, best_hits = Y, hits
        self._rows[s] = best[0].copy()
        return best

    def replay(self, s: int, X: np.ndarray) -> np.ndarray:
        row = self._rows.get(s)
        if row is not None:
            X = X.copy()
            X[0] = row
        return X
