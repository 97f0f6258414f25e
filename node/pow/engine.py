"""The engine interface shared by the CPU reference engine and the GPU engine.

An *engine* runs the chain of spec pow-v1 section 2 for one challenge and returns a *trace*: every
state ``X_0 .. X_T`` kept in its memory (the pool), the state digests ``d_0 .. d_T`` and the trace
root ``R``. Openings (spec section 4) are then built generically from any trace by
``node.pow.openings.build_openings``, so an engine only has to supply rows and row nodes.

Engines refuse up front, with :class:`EngineCapacityError`, a challenge whose pool would not fit:
the whole point of the proof is that the pool is held, so silently spilling is never an option.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "KEY_BYTES",
    "MIN_N",
    "MAX_N",
    "MAX_M",
    "ChallengeParams",
    "Trace",
    "Engine",
    "EngineCapacityError",
    "pool_bytes",
    "max_steps_for",
]

KEY_BYTES = 32
MIN_N = 64
MAX_N = 16384
MAX_M = 64
PHILOX_KEY_DOMAIN = b"gpow.philox-key.v1"


@dataclass(frozen=True)
class ChallengeParams:
    """The parameters that define one chain (spec: seed, validator, executor, n, T, m).

    ``k`` (rows checked) is not part of the chain: it only matters for sampling and verification,
    so it is passed separately where needed.
    """

    seed: bytes
    validator: bytes
    executor: bytes
    n: int
    T: int
    m: int

    def __post_init__(self) -> None:
        for name in ("seed", "validator", "executor"):
            v = getattr(self, name)
            if not isinstance(v, (bytes, bytearray)):
                raise ValueError(f"{name} must be bytes, got {type(v).__name__}")
            if len(v) != KEY_BYTES:
                raise ValueError(f"{name} must be exactly {KEY_BYTES} bytes, got {len(v)}")
        for name in ("n", "T", "m"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name} must be an int, got {type(v).__name__}")
        n = self.n
        if n < MIN_N or n > MAX_N or n & (n - 1):
            raise ValueError(f"n must be a power of two in {MIN_N}..{MAX_N}, got {n}")
        if self.T < 1:
            raise ValueError(f"T (steps) must be >= 1, got {self.T}")
        if self.T > 0xFFFFFFFF - 1:
            raise ValueError(f"T (steps) must fit u32 with T+1 leaves, got {self.T}")
        if not 1 <= self.m <= MAX_M:
            raise ValueError(f"m (B matrices) must be in 1..{MAX_M}, got {self.m}")

    def philox_key(self) -> tuple[int, int]:
        """Spec section 1: the Philox key bound to seed, both identities and the shape."""
        h = hashlib.sha256(
            PHILOX_KEY_DOMAIN
            + bytes(self.seed)
            + bytes(self.validator)
            + bytes(self.executor)
            + struct.pack("<III", self.n, self.T, self.m)
        ).digest()
        k0, k1 = struct.unpack("<II", h[0:8])
        return k0, k1


@runtime_checkable
class Trace(Protocol):
    """What an engine hands back after proving: enough to commit and to build any opening."""

    params: ChallengeParams
    digests: list[bytes]  # d_0 .. d_T, 32 bytes each
    root: bytes  # R, the trace root over the top leaves

    def row(self, s: int, i: int) -> bytes:
        """Row ``i`` of state ``X_s`` as ``n`` raw bytes (int8 two's complement)."""
        ...

    def row_nodes(self, s: int) -> np.ndarray:
        """The ``n`` row nodes of state ``X_s``: shape ``(n, 32)``, dtype uint8."""
        ...


class EngineCapacityError(Exception):
    """The challenge's pool does not fit the engine's memory budget; raised before any work."""

    def __init__(self, needed: int, available: int, largest_T: int, what: str = "memory") -> None:
        self.needed = needed
        self.available = available
        self.largest_T = largest_T
        super().__init__(
            f"pool does not fit {what}: needs {needed} bytes ({needed / 2**30:.2f} GiB), "
            f"{available} bytes ({available / 2**30:.2f} GiB) available; "
            f"the largest T that would fit is {largest_T}"
        )


@runtime_checkable
class Engine(Protocol):
    """A prover. ``kind`` is ``"cpu"`` or ``"gpu"``."""

    kind: str

    def memory_budget_bytes(self) -> int:
        """Bytes this engine may use for the pool (and its working buffers)."""
        ...

    def check_fits(self, params: ChallengeParams) -> None:
        """Raise :class:`EngineCapacityError` if ``params`` would not fit; otherwise return."""
        ...

    def prove(self, params: ChallengeParams, progress: Callable[[int, int], None] | None = None) -> Trace:
        """Run the chain; call ``progress(steps_done, T)`` along the way; return the trace."""
        ...

    def release(self, trace: Trace) -> None:
        """Free the trace's pool (after the openings are sent)."""
        ...


def pool_bytes(n: int, T: int) -> int:
    """Bytes of the pool the spec requires to be held: all ``T+1`` states plus their row nodes.

    The row nodes (32 bytes per row) are kept so row paths can be built without rehashing.
    Engine-specific working buffers (B matrices, the int32 product) are not included; each engine
    adds its own overhead in ``check_fits``.
    """
    if n < 1 or T < 0:
        raise ValueError(f"bad pool shape n={n} T={T}")
    return (T + 1) * (n * n + n * 32)


def max_steps_for(n: int, budget_bytes: int) -> int:
    """The largest ``T`` whose pool fits ``budget_bytes`` (0 if not even ``T = 1`` fits)."""
    per_state = n * n + n * 32
    states = budget_bytes // per_state
    return max(0, states - 1)
