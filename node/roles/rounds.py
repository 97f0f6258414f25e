"""Challenge rounds: a schedule every node computes, and a beacon the validators build together.

Round ``r`` covers wall-clock time ``[genesis + r*L, genesis + (r+1)*L)``. At the start of round
``r`` each admitted validator gossips a ``BeaconReveal``: the secret it committed to one round
earlier and the commitment to its secret for ``r+1``. When the reveal window closes the beacon is

    beacon_r = sha256(DOMAIN || r || for each contributing validator, sorted by id: id || secret)

and from it every node derives the same two facts: the instant of the round's challenges
(``start + window + offset``, offset uniform in ``[0, jitter)``), and which validator challenges
which executor (rendezvous hashing over the validators that revealed). Before the window closes
nobody, executors included, can compute either as long as one contributing validator is honest.

Commitments are fixed a round ahead: a validator's commitment for ``r+1`` rides on its message
for ``r`` and is taken only if that message arrives inside round ``r``'s reveal window, before
anyone's secret for ``r+1`` is out. One message per (validator, round) counts; a second, different
one is equivocation: it is penalised and drops the validator from the beacon (and so from the
assignment) for ``EXCLUDE_ROUNDS`` rounds. A message without a secret ("commit-only", how a
validator joins) is refused for a round whose commitment is on record: that is a withheld reveal.

Bias bound: by the time any secret of round ``r`` is revealed, every commitment for ``r`` is
fixed, so k colluding admitted validators choose only which of their own shares to reveal: at
most ``2**k`` beacons per round, each withheld share visible, counted, and costing its validator
rounds ``r`` and ``r+1`` (its next commitment rode on the withheld message). An outcome of the
beacon that has probability p is theirs with probability at most ``1 - (1 - p)**(2**k)``.

Pure code: callers pass the wall clock in milliseconds.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from node.wire import constants as C
from node.wire.messages import BeaconReveal

DOMAIN = C.SIG_DOMAIN_BEACON
KEEP_ROUNDS = 8  # bounded memory: commitments and reveals older than this are dropped
EXCLUDE_ROUNDS = 16  # an equivocating validator is out of the beacon for this many rounds


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
    return max(
        sorted(validators), key=lambda v: hashlib.sha256(DOMAIN + beacon + executor_id.encode() + b"\x00" + v.encode()).digest()
    )


@dataclass
class BeaconStats:
    reveals_counted: int = 0
    reveals_late: int = 0
    reveals_bad: int = 0  # secret does not match the commitment on record, or a far-off round
    reveals_withheld: int = 0  # a commit-only message for a round whose commitment is on record
    equivocations: int = 0  # a second, different message for a (validator, round)
    excluded_messages: int = 0  # messages from a validator dropped from the beacon
    empty_beacons: int = 0  # rounds with no contribution: the beacon is predictable then


# Outcomes of Beacon.on_reveal that are the sender's fault (the caller penalises them).
FORGED = frozenset({"bad", "equivocation"})
REFUSED = frozenset({"off-schedule", "withheld"})


@dataclass
class Beacon:
    """Tracks commitments and reveals of admitted validators and computes each round's beacon."""

    schedule: RoundSchedule
    my_id: str
    _my_secrets: dict[int, bytes] = field(default_factory=dict)
    _commits: dict[tuple[str, int], bytes] = field(default_factory=dict)  # (validator, round) -> commit
    _first: dict[tuple[str, int], tuple[bytes, bytes]] = field(
        default_factory=dict
    )  # (validator, round) -> (secret, next_commit) first seen
    _reveals: dict[int, dict[str, bytes]] = field(default_factory=dict)  # round -> validator -> secret
    _values: dict[int, bytes] = field(default_factory=dict)
    _excluded: dict[str, tuple[int, int]] = field(
        default_factory=dict
    )  # validator -> (first, last) round it is out of the beacon
    stats: BeaconStats = field(default_factory=BeaconStats)
    since_ms: int = 0  # when this node began to listen: before that it heard no commitments
    _pruned_at: int = -1

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

    def trusted(self, r: int) -> bool:
        """Whether our beacon of round r is everyone's: only if we listened through round r-1,
        when the commitments for r went out (a node that just started counts no share of r,
        and would draw a beacon nobody else has)."""
        return r >= self.schedule.round_at(self.since_ms) + 2

    def excluded(self, validator_id: str, r: int) -> bool:
        span = self._excluded.get(validator_id)
        return span is not None and span[0] <= r <= span[1]

    def excluded_now(self, r: int) -> list[str]:
        return sorted(v for v in self._excluded if self.excluded(v, r))

    def on_reveal(self, validator_id: str, msg: BeaconReveal, received_ms: int) -> str:
        """Record a reveal (already checked: signed by an admitted validator). Returns 'counted',
        'late', 'duplicate', 'unverifiable' or 'commit-only' (nobody's fault), or 'bad',
        'equivocation' (see FORGED), 'off-schedule', 'withheld' (see REFUSED) or 'excluded'."""
        r = msg.round
        if abs(r - self.schedule.round_at(received_ms)) > 1:
            # Far-off rounds would let one message evict everything else from the bounded tables.
            self.stats.reveals_bad += 1
            return "off-schedule"
        self._prune(self.schedule.round_at(received_ms))
        if self.excluded(validator_id, r):
            self.stats.excluded_messages += 1
            return "excluded"
        first = self._first.get((validator_id, r))
        if first is not None:
            if first == (msg.secret, msg.next_commit):
                return "duplicate"  # the same content again (a re-signed copy): harmless
            self._equivocated(validator_id, r)
            return "equivocation"
        self._first[(validator_id, r)] = (msg.secret, msg.next_commit)
        on_time = received_ms <= self.schedule.window_closes_ms(r) and r not in self._values
        expected = self._commits.get((validator_id, r))
        if not msg.secret:
            if expected is not None:
                # It committed to a secret for this round and now will not show it: a withheld
                # reveal. Taking the new commitment would let it re-draw its next share.
                self.stats.reveals_withheld += 1
                return "withheld"
            outcome = "commit-only"
        elif expected is None:
            outcome = "unverifiable"  # we joined after its commitment went out: nothing to hold it to
        elif secret_commit(msg.secret) != expected:
            self.stats.reveals_bad += 1
            self._exclude(validator_id, r)
            return "bad"
        elif not on_time:
            self.stats.reveals_late += 1
            return "late"
        else:
            self._reveals.setdefault(r, {})[validator_id] = msg.secret
            self.stats.reveals_counted += 1
            outcome = "counted"
        if on_time:
            # The commitment for r+1 is fixed now, a round before any secret of r+1 is out.
            self._commits[(validator_id, r + 1)] = msg.next_commit
        return outcome

    def _equivocated(self, validator_id: str, r: int) -> None:
        self.stats.equivocations += 1
        self._exclude(validator_id, r)

    def _exclude(self, validator_id: str, r: int) -> None:
        """Drop a validator from every beacon not yet fixed, from round r on, for EXCLUDE_ROUNDS."""
        self._excluded[validator_id] = (r, r + EXCLUDE_ROUNDS)
        for rr, reveals in self._reveals.items():
            if rr >= r and rr not in self._values:
                reveals.pop(validator_id, None)
        for key in [k for k in self._commits if k[0] == validator_id and k[1] >= r]:
            del self._commits[key]

    def contributors(self, r: int) -> frozenset[str]:
        return frozenset(v for v in self._reveals.get(r, {}) if not self.excluded(v, r))

    def value(self, r: int, now_ms: int) -> bytes | None:
        """The beacon of round ``r`` once its reveal window has closed, else None. Fixed once computed."""
        if r in self._values:
            return self._values[r]
        if now_ms < self.schedule.window_closes_ms(r) or r < self._pruned_at - KEEP_ROUNDS:
            return None  # not yet known, or forgotten (recomputing it without its reveals would be wrong)
        h = hashlib.sha256(DOMAIN + r.to_bytes(8, "big"))
        reveals = {v: s for v, s in self._reveals.get(r, {}).items() if not self.excluded(v, r)}
        if not reveals:
            self.stats.empty_beacons += 1
        for vid in sorted(reveals):
            h.update(vid.encode() + b"\x00" + reveals[vid])
        self._values[r] = h.digest()
        return self._values[r]

    def _prune(self, r: int) -> None:
        if r <= self._pruned_at:
            return
        self._pruned_at = r
        low = r - KEEP_ROUNDS
        for table in (self._commits, self._first):
            for pair in [k for k in table if k[1] < low]:
                del table[pair]  # both keyed (validator, round)
        for d in (self._reveals, self._values, self._my_secrets):
            for r_old in [k for k in d if k < low]:
                del d[r_old]
        for vid in [v for v, (_, last) in self._excluded.items() if last < low]:
            del self._excluded[vid]
