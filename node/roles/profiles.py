"""GPU profiles: how long one chain step takes on a GPU model at a matrix size, and the
performance factor a measured time earns against it.

The file (``configs/gpu_profiles.toml``) is a list of ``[[profile]]`` tables:

    [[profile]]
    model = "NVIDIA H100 80GB HBM3"   # the name the GPU reports (NVML), matched without case
    memory_bytes = 85520809984        # the card's memory (informational)
    n = 8192                          # matrix size
    step_seconds = 0.00125            # one chain step: product, epilogue, state hash
    measured = true                   # false: an estimate
    source = "..."                    # where the figure comes from (command, date, or basis)

A model with no profile is still checked for correctness, but earns no performance credit.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from node import schema


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Profile:
    model: str
    memory_bytes: int
    n: int
    step_seconds: float
    measured: bool
    source: str


def _norm(model: str) -> str:
    # NVML names vary only in spacing and case between driver versions and tools.
    return " ".join(model.split()).casefold()


class ProfileBook:
    """Profiles by (model, n)."""

    def __init__(self, profiles: list[Profile] | None = None, origin: str = "<memory>"):
        self.origin = origin
        self._by_model: dict[str, dict[int, Profile]] = {}
        for p in profiles or []:
            slot = self._by_model.setdefault(_norm(p.model), {})
            if p.n in slot:
                raise ProfileError(f"{origin}: two profiles for model {p.model!r} at n = {p.n}")
            slot[p.n] = p

    @classmethod
    def load(cls, path: str | Path) -> ProfileBook:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ProfileError(f"{path}: GPU profile file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(f"{path}: cannot read GPU profile file: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(f"{path}: not valid TOML: {exc}") from None
        extra = sorted(set(data) - {"profile"})
        if extra:
            raise ProfileError(f"{path}: unknown top-level keys {extra} (only [[profile]] tables belong here)")
        entries = data.get("profile", [])
        if not isinstance(entries, list):
            raise ProfileError(f"{path}: 'profile' must be an array of tables ([[profile]])")
        return cls([_parse_entry(path, i, e) for i, e in enumerate(entries, 1)], origin=str(path))

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_model.values())

    def profiles(self) -> list[Profile]:
        return [p for slot in self._by_model.values() for p in sorted(slot.values(), key=lambda p: p.n)]

    def get(self, model: str, n: int) -> Profile | None:
        """The profile for exactly this model and n, or None."""
        return self._by_model.get(_norm(model), {}).get(n)

    def knows(self, model: str) -> bool:
        return _norm(model) in self._by_model

    def model_memory(self, model: str) -> int:
        """The memory a model's profiles give (the largest, at any n); 0 for a CPU class or an
        unknown model. What a model is does not depend on the n a challenge is sized at."""
        return max((p.memory_bytes for p in self._by_model.get(_norm(model), {}).values()), default=0)

    def expected_seconds(self, model: str, n: int, T: int) -> float | None:
        """Expected time for T steps at size n on this model: ``step_seconds * T`` with a profile
        measured at this exact n, else None. Never scaled from another n: at smaller n the
        epilogue, hashing and launch overheads (n^2 or fixed) take a larger share, so scaling
        would hand a slower class the time of a faster one."""
        if n <= 0 or T < 0:
            raise ValueError(f"expected_seconds needs n > 0 and T >= 0, got n = {n}, T = {T}")
        p = self.get(model, n)
        return None if p is None else p.step_seconds * T


def _parse_entry(path: Path, index: int, entry: object) -> Profile:
    where = f"{path}: profile #{index}"
    if not isinstance(entry, dict):
        raise ProfileError(f"{where}: expected a table, got {type(entry).__name__}")
    if isinstance(entry.get("model"), str):
        where += f" ({entry['model']!r})"
    values = dataclasses.asdict(schema.build(Profile, entry, where, ProfileError, required=True))
    if not values["model"].strip():
        raise ProfileError(f"{where}: model must not be empty")
    if not values["source"].strip():
        raise ProfileError(f"{where}: source must say where the figure comes from")
    n = values["n"]
    if n < 64 or n > 16384 or n & (n - 1):
        raise ProfileError(f"{where}: n must be a power of two in 64..16384, got {n}")
    if values["memory_bytes"] < 0:
        raise ProfileError(f"{where}: memory_bytes must be >= 0")
    if not (math.isfinite(values["step_seconds"]) and values["step_seconds"] > 0):
        raise ProfileError(f"{where}: step_seconds must be a positive number, got {values['step_seconds']}")
    return Profile(**values)


def performance_factor(expected: float, measured: float, tolerance: float) -> float:
    """Credit for a measured time against the profile: 1.0 up to the limit, then relative speed.

    With ``limit = expected * tolerance``::

        factor = 1.0                 if measured <= limit
        factor = limit / measured    otherwise

    Continuous at the limit and strictly decreasing beyond it, towards 0: an executor that takes
    twice the allowed time delivers half the allowed throughput and earns half.
    """
    if not (expected > 0 and math.isfinite(expected)):
        raise ValueError(f"expected must be a positive finite time, got {expected}")
    if not (tolerance > 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance must be positive and finite, got {tolerance}")
    if math.isnan(measured):
        raise ValueError("measured time is NaN")
    limit = expected * tolerance
    if measured <= limit:
        return 1.0
    return limit / measured  # measured = inf gives 0.0
