"""Verdict reasons (one place for each string) and the validator's record of one challenge.

A reason is a short kebab-case string; some carry a detail after a colon
(``false-proof:row-merkle``, ``missing-commitment:capacity``). Code that classifies reasons
compares the part before the colon, so the constants below are the whole vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

PASSED = "passed"
# The answer was wrong: a relation, a Merkle path or the format did not hold (fraud, banned).
FALSE_PROOF = "false-proof"
# No signed commitment before the deadline, or none at all.
LATE_COMMITMENT = "late-commitment"
MISSING_COMMITMENT = "missing-commitment"
# No signed openings before their deadline (counted from the reveal), or none at all.
LATE_OPENINGS = "late-openings"
MISSING_OPENINGS = "missing-openings"
# Late while challenged together with executors that could share its hardware.
CO_SCHEDULED_TIMEOUT = "co-scheduled-timeout"
# Signed by another known executor / by a key that is no known executor.
WRONG_EXECUTOR = "wrong-executor"
WRONG_SIGNER = "wrong-signer"
# The commitment is bound to another challenge.
REPLAY = "replay"
BAD_SIGNATURE = "bad-signature"
# Correct, but slower than its GPU profile allows.
SLOW_FOR_PROFILE = "slow-for-profile"
# The claimed model has no profile measured at the challenge's n: the clock could not tell it
# from any other class, so it is not challenged (a failing verdict, sent before any work).
UNKNOWN_PROFILE = "unknown-profile"
# The attestation's claims do not fit each other: a CPU engine claiming a GPU model, or memory
# well below what the claimed model has. Not challenged.
CLAIM_MISMATCH = "claim-mismatch"
# Passed, but earns nothing: probation (an id with no history here), a profile that was not
# measured, or a challenge whose expected time is too short for the clock to tell classes apart.
NO_CREDIT = "no-credit"
# Its GPU UUID is also reported by another live executor, or it answered BUSY with a challenge
# addressed to another executor id (two identities, one engine).
DUPLICATE_GPU = "duplicate-gpu"
# Listed by two miners' rosters at once (each entry signed by the executor itself): one GPU, two earners.
DUPLICATE_ROSTER = "duplicate-roster"
# An executor's refusal of a round's challenge while it cannot tell whose turn it is (that round's
# beacon is not known to it yet): the challenge ends without a verdict, neither failed nor credited.
BEACON_UNKNOWN = "beacon-unknown"
# The validator stopped (crash, kill) while this challenge was in flight; closed at restart.
# Not the executor's fault, so it is recorded but never scored.
TIMED_OUT_AT_RESTART = "timed-out-at-restart"

# Reasons that say nothing about the executor; verdicts carrying one are left out of its score.
UNSCORED_REASONS = frozenset({TIMED_OUT_AT_RESTART, NO_CREDIT})


def reason_kind(reason: str) -> str:
    """The reason without its detail: ``false-proof:row-merkle`` -> ``false-proof``."""
    return reason.split(":", 1)[0]


def is_scored(reasons: list[str]) -> bool:
    return not any(reason_kind(r) in UNSCORED_REASONS for r in reasons)


@dataclass
class VerdictRecord:
    """What a validator stores about one challenge it ran (built at issue, filled in as it goes)."""

    challenge_id: str  # hex
    validator_id: str
    executor_id: str
    miner_id: str
    passed: bool
    reasons: list[str]
    n: int
    T: int
    m: int
    k: int
    commit_seconds: float | None  # challenge sent -> signed commitment received
    openings_seconds: float | None  # reveal sent -> signed openings received
    verify_seconds: float | None  # CPU time of the verification
    expected_seconds: float | None  # from the GPU profile; None: unknown model
    performance_factor: float  # 0..1, see node.roles.profiles.performance_factor
    created_ms: int  # when the challenge was issued (validator wall clock)

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict, keys in field order."""
        return {f.name: (list(getattr(self, f.name)) if f.name == "reasons" else getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VerdictRecord:
        """Inverse of to_dict; a missing or unknown key is a ValueError naming it."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in d]
        unknown = sorted(set(d) - set(names))
        if missing or unknown:
            raise ValueError(f"verdict record: missing keys {missing}, unknown keys {unknown}")
        rec = cls(**{n: d[n] for n in names})
        rec.reasons = [str(r) for r in rec.reasons]
        rec.passed = bool(rec.passed)
        return rec
