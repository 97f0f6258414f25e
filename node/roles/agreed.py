"""Agreed scores: what the network as a whole thinks of an executor.

Every node keeps the verdicts gossiped by admitted validators, each under its own validator: a
verdict is keyed by (validator, executor, round) in rounds mode, by (validator, challenge id)
otherwise, so nobody's verdict can take the place of another's. Challenge ids end with a tag
derived from the issuing validator's id (``new_challenge_id``; random bytes first, so logs that
print an id's head still tell challenges apart); a verdict whose id does not carry its signer's
tag is refused, so a challenge id leaked in a BUSY is of no use to another validator.

In rounds mode a verdict counts only if the round's beacon assigned that executor to that
validator (the caller says whom it was assigned to), and only the first one per (validator,
executor, round): a validator judges each executor at most once a round and only when it was
drawn for it, so neither challenging out of turn nor flooding adds weight.

An executor's agreed score over the last ``window_rounds`` rounds is the median, over the
admitted validators that covered it, of each one's pass rate for it; a validator that did not
cover it is missing, not a zero or a one. The score exists only when at least ``min_validators``
validators covered it. Liars tolerated: when fewer than half of the validators that covered an
executor lie, the median lies within the range of the honest ones' pass rates, so with
``min_validators = 2f + 1`` any f liars are tolerated (an agreed score either does not exist or
is bracketed by honest rates). With honest validators' rates all equal it is exactly theirs.

Memory is bounded per validator (``MAX_VERDICTS_PER_VALIDATOR``, its own oldest first), so one
validator's flood evicts only its own verdicts. Pure code: callers pass the round.
"""

from __future__ import annotations

import hashlib
import os
import statistics
from collections import OrderedDict
from dataclasses import dataclass, field

from node.wire import constants as C

CHALLENGE_ID_DOMAIN = b"gpow.challenge-id.v1\x00"
CHALLENGE_ID_TAG_BYTES = 8  # of C.CHALLENGE_ID_BYTES; the rest is random (2**-64 collisions per pair)
MAX_VERDICTS_PER_VALIDATOR = 10_000  # bounded memory, per validator: its oldest verdicts are forgotten first

# Outcomes of AgreedScores.add
COUNTED, DUPLICATE, UNASSIGNED, UNVERIFIABLE, FOREIGN_ID, STALE, EARLY = (
    "counted",
    "duplicate",
    "unassigned",
    "unverifiable",
    "foreign-id",
    "stale",
    "early",
)


def challenge_id_tag(validator_id: str) -> bytes:
    return hashlib.sha256(CHALLENGE_ID_DOMAIN + validator_id.encode()).digest()[:CHALLENGE_ID_TAG_BYTES]


def new_challenge_id(validator_id: str) -> bytes:
    """A fresh challenge id that names its issuer: random bytes, then the issuer's tag."""
    return os.urandom(C.CHALLENGE_ID_BYTES - CHALLENGE_ID_TAG_BYTES) + challenge_id_tag(validator_id)


def issued_by(challenge_id: bytes, validator_id: str) -> bool:
    return len(challenge_id) == C.CHALLENGE_ID_BYTES and challenge_id.endswith(challenge_id_tag(validator_id))


@dataclass(frozen=True)
class VerdictView:
    validator_id: str
    executor_id: str
    round: int
    passed: bool
    challenge_id: str  # hex
    reasons: tuple[str, ...] = ()


@dataclass
class AgreedScore:
    executor_id: str
    value: float | None  # None: fewer than min_validators covered it in the window
    per_validator: dict[str, float] = field(default_factory=dict)
    verdicts: int = 0
    missing: int = 0  # admitted validators with no counted verdict for it in the window


class AgreedScores:
    def __init__(
        self,
        window_rounds: int = 10,
        min_validators: int = 3,
        *,
        rounds: bool = True,
        per_validator: int = MAX_VERDICTS_PER_VALIDATOR,
    ) -> None:
        if window_rounds < 1 or min_validators < 1 or per_validator < 1:
            raise ValueError("window_rounds, min_validators and per_validator must be at least 1")
        self.window_rounds = window_rounds
        self.min_validators = min_validators
        self.rounds = rounds
        self.per_validator = per_validator
        # validator -> key -> verdict, oldest first; key is (executor, round) or the challenge id
        self._by_validator: dict[str, OrderedDict[object, VerdictView]] = {}
        self._by_executor: dict[str, dict[tuple[str, object], VerdictView]] = {}
        self.refused: dict[str, dict[str, int]] = {}  # validator -> outcome -> count (everything but counted)

    def _key(self, v: VerdictView) -> object:
        return (v.executor_id, v.round) if self.rounds else v.challenge_id

    def add(self, v: VerdictView, assignee: str | None, current_round: int) -> str:
        """Keep one verdict; returns COUNTED or why not. ``assignee``: the validator the round's
        beacon drew for this executor (None when the beacon is unknown here); ignored without rounds."""
        outcome = self._check(v, assignee, current_round)
        if outcome != COUNTED:
            slot = self.refused.setdefault(v.validator_id, {})
            slot[outcome] = slot.get(outcome, 0) + 1
            return outcome
        mine = self._by_validator.setdefault(v.validator_id, OrderedDict())
        key = self._key(v)
        mine[key] = v
        self._by_executor.setdefault(v.executor_id, {})[(v.validator_id, key)] = v
        low = current_round - self.window_rounds
        while mine and (len(mine) > self.per_validator or (self.rounds and next(iter(mine.values())).round <= low)):
            old_key, old = mine.popitem(last=False)
            by_e = self._by_executor.get(old.executor_id, {})
            by_e.pop((old.validator_id, old_key), None)
            if not by_e:
                self._by_executor.pop(old.executor_id, None)
        return COUNTED

    def _check(self, v: VerdictView, assignee: str | None, current_round: int) -> str:
        try:
            cid = bytes.fromhex(v.challenge_id)
        except ValueError:
            return FOREIGN_ID
        if not issued_by(cid, v.validator_id):
            return FOREIGN_ID
        if self.rounds:
            if v.round <= current_round - self.window_rounds:
                return STALE
            if v.round > current_round:
                return EARLY  # a round whose beacon nobody can know yet
            if assignee is None:
                return UNVERIFIABLE
            if assignee != v.validator_id:
                return UNASSIGNED
        if self._key(v) in self._by_validator.get(v.validator_id, ()):
            return DUPLICATE
        return COUNTED

    def score(self, executor_id: str, current_round: int, admitted: frozenset[str] | None = None) -> AgreedScore:
        """The median over ``admitted`` validators (all, when None) of their pass rates for it."""
        low = current_round - self.window_rounds
        per: dict[str, list[bool]] = {}
        n = 0
        for v in self._by_executor.get(executor_id, {}).values():
            if low < v.round <= current_round and (admitted is None or v.validator_id in admitted):
                per.setdefault(v.validator_id, []).append(v.passed)
                n += 1
        rates = {vid: sum(p) / len(p) for vid, p in per.items()}
        value = statistics.median(rates.values()) if len(rates) >= self.min_validators else None
        missing = len(admitted - set(rates)) if admitted is not None else 0
        return AgreedScore(executor_id, value, rates, n, missing)

    def validators(self) -> list[str]:
        """Every validator with a verdict held or refused here."""
        return sorted(self._by_validator.keys() | self.refused.keys())

    def stored(self, validator_id: str) -> int:
        return len(self._by_validator.get(validator_id, ()))

    def executors(self) -> list[str]:
        return sorted(self._by_executor)

    def table(self, current_round: int, admitted: frozenset[str] | None = None) -> list[AgreedScore]:
        return [self.score(e, current_round, admitted) for e in self.executors()]
