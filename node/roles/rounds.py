"""Challenge rounds: a schedule every node computes, and a beacon the validators build together.

Round ``r`` covers wall-clock time ``[genesis + r*L, genesis + (r+1)*L)``. At the start of round
``r`` each admitted validator gossips a ``BeaconReveal``: the secret it committed to one round
earlier and the commitment to its secret for ``r+1``. When the reveal window closes the beacon is

    beacon_r = sha256(DOMAIN || r || for each contributing validator, sorted by id: id || secret)

and from it every node derives the same two facts: the instant of the round's challenges
(``start + window + offset``, offset uniform in ``[0, jitter)``), and which validator challenges
which executor (rendezvous hashing over the validators that revealed). Before the window closes
nobody, executors included, can compute either as long as one contributing validator is honest.

Known limit, as for any commit-reveal beacon: the last validator to reveal can withhold its secret
and so choose between two beacons (one bit of bias per colluding validator). Its missing reveal is
visible and counted.

Pure code: callers pass the wall clock in milliseconds.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from node.wire.messages import BeaconReveal

DOMAIN = b"gpow.beacon.v1\x00"
KEEP_ROUNDS = 8  # bounded memory: commitments and reveals older than this are dropped


def secret_commit(secret: bytes) -> bytes:
    return hashlib.sha256(DOMAIN + b"commit" + secret).digest()


@dataclass(frozen=True)
class RoundSchedule:
    round_ms: int
    window_ms: int  # reveals are counted until start + window
    jitter_ms: int  # the challenge instant falls in [start + window, start + window + jitter)
    genesis_ms: int = 0

    def __post_init__(self) -> None:
        if self.round_ms <= 0 or self.window_ms < 0 or self.jitter_ms < 0:
            raise ValueError("round length must be positive, window and jitter non-negative")
        if self.window_ms + self.jitter_ms >= self.round_ms:
            raise ValueError(
                f"reveal window ({self.window_ms} ms) plus jitter ({self.jitter_ms} ms) must leave time for the "
                f"challenge inside the round ({self.round_ms} ms)"
            )

    def round_at(self, wall_ms: int) -> int:
        return max(0, (wall_ms - self.genesis_ms) // self.round_ms)

    def start_ms(self, r: int) -> int:
        return self.genesis_ms + r * self.round_ms

    def window_closes_ms(self, r: int) -> int:
        return self.start_ms(r) + self.window_ms

    def challenge_ms(self, r: int, beacon: bytes) -> int:
        offset = int.from_bytes(hashlib.sha256(DOMAIN + b"offset" + beacon).digest()[:8], "big") % max(1, self.jitter_ms)
        return self.window_closes_ms(r) + (offset if self.jitter_ms else 0)


def assign(beacon: bytes, executor_id: str, validators: list[str] | set[str] | frozenset[str]) -> str | None:
    """The validator that challenges ``executor_id`` this round (rendezvous hashing)."""
    if not validators:
        return None
    return max(sorted(validators), key=lambda v: hashlib.sha256(DOMAIN + beacon + executor_id.encode() + b"\x00" + v.encode()).digest())


@dataclass
class BeaconStats:
    reveals_counted: int = 0
    reveals_late: int = 0
    reveals_bad: int = 0  # secret does not match the commitment on record
    empty_beacons: int = 0  # rounds with no contribution: the beacon is predictable then


@dataclass
class Beacon:
    """Tracks commitments and reveals of admitted validators and computes each round's beacon."""

    schedule: RoundSchedule
    my_id: str
    _my_secrets: dict[int, bytes] = field(default_factory=dict)
    _commits: dict[tuple[str, int], bytes] = field(default_factory=dict)  # (validator, round) -> commit
    _reveals: dict[int, dict[str, bytes]] = field(default_factory=dict)  # round -> validator -> secret
    _values: dict[int, bytes] = field(default_factory=dict)
    stats: BeaconStats = field(default_factory=BeaconStats)

    def _secret(self, r: int) -> bytes:
        if r not in self._my_secrets:
            self._my_secrets[r] = os.urandom(32)
        return self._my_secrets[r]

    def make_reveal(self, r: int) -> BeaconReveal:
        """Our reveal for round ``r`` (empty secret if we never committed to one) and commit for r+1."""
        secret = self._my_secrets.get(r, b"") if (self.my_id, r) in self._commits else b""
        msg = BeaconReveal(round=r, secret=secret, next_commit=secret_commit(self._secret(r + 1)))
        self.on_reveal(self.my_id, msg, self.schedule.start_ms(r))  # gossip never delivers our own message back
        return msg

    def on_reveal(self, validator_id: str, msg: BeaconReveal, received_ms: int) -> str:
        """Record a reveal (already checked: signed by an admitted validator). Returns
        'counted', 'late', 'bad', 'off-schedule', 'unverifiable' or 'commit-only'."""
        if abs(msg.round - self.schedule.round_at(received_ms)) > 1:
            # Far-off rounds would let one message evict everything else from the bounded tables.
            self.stats.reveals_bad += 1
            return "off-schedule"
        self._commits[(validator_id, msg.round + 1)] = msg.next_commit
        self._prune(msg.round)
        if not msg.secret:
            return "commit-only"
        expected = self._commits.get((validator_id, msg.round))
        if expected is None:
            return "unverifiable"  # we joined after its commitment went out: nothing to hold it to
        if secret_commit(msg.secret) != expected:
            self.stats.reveals_bad += 1
            return "bad"
        if received_ms > self.schedule.window_closes_ms(msg.round) or msg.round in self._values:
            self.stats.reveals_late += 1
            return "late"
        self._reveals.setdefault(msg.round, {})[validator_id] = msg.secret
        self.stats.reveals_counted += 1
        return "counted"

    def contributors(self, r: int) -> frozenset[str]:
        return frozenset(self._reveals.get(r, {}))

    def value(self, r: int, now_ms: int) -> bytes | None:
        """The beacon of round ``r`` once its reveal window has closed, else None. Fixed once computed."""
        if r in self._values:
            return self._values[r]
        if now_ms < self.schedule.window_closes_ms(r):
            return None
        h = hashlib.sha256(DOMAIN + r.to_bytes(8, "big"))
        reveals = self._reveals.get(r, {})
        if not reveals:
            self.stats.empty_beacons += 1
        for vid in sorted(reveals):
            h.update(vid.encode() + b"\x00" + reveals[vid])
        self._values[r] = h.digest()
        return self._values[r]

    def _prune(self, r: int) -> None:
        low = r - KEEP_ROUNDS
        for key in [k for k in self._commits if k[1] < low]:
            del self._commits[key]
        for d in (self._reveals, self._values, self._my_secrets):
            for key in [k for k in d if k < low]:
                del d[key]
