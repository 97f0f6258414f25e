"""One challenge, from the validator's side, as a sans-IO state machine.

The validator's trio code sends what the session gives it and feeds back what came (bytes, or the
network's failure) with the time it came; the session decides, with the pure rules of
``judging.py``. No I/O, no clock, no ledger: tests drive it with signed messages and numbers
(tests/unit/test_session.py).

    ISSUED --sent--> SENT --commitment--> COMMITTED --reveal--> REVEALED --openings--> VERIFYING --verified--> DONE
       \\                \\--busy / failure--> DONE        \\--failure--> DONE
        \\--refused (claim cannot be judged)--> DONE

Each ``on_*`` returns the outcome when the challenge is over (``DONE``), else None; a BUSY
answer comes back as ``BusyAnswer`` for the validator to judge with what it knows of the issuer
(admission, how long this executor has been BUSY).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from node.pow.engine import ChallengeParams
from node.pow.openings import Openings as OpeningsProof
from node.pow.openings import ProofFormatError, decode_openings
from node.pow.verifier import VerifyResult
from node.roles import verdicts as R
from node.roles.judging import Sizing, challenge_hash, judge_time
from node.roles.params import ValidatorParams
from node.roles.profiles import performance_factor
from node.roles.verdicts import VerdictRecord
from node.wire import WireError, decode_envelope
from node.wire.envelope import Envelope, Signer
from node.wire.messages import Busy, Challenge, Commitment, Openings, ProofBundle, Reveal


class Phase(enum.Enum):
    ISSUED = "issued"
    SENT = "sent"
    COMMITTED = "committed"
    REVEALED = "revealed"
    VERIFYING = "verifying"
    DONE = "done"


class SessionError(Exception):
    """A session driven out of order: our bug, never a peer's."""


# ChallengeOutcome.unjudged when our own event loop's stall decided the time (not a verdict reason:
# nothing about the executor is recorded or gossiped).
STALLED = "stalled"


@dataclass
class ChallengeOutcome:
    record: VerdictRecord
    bundle: bytes = b""  # the signed proof bundle (evidence), once the openings came
    busy: bool = False  # ended by an excused BUSY: no verdict
    # Ended without a verdict for a reason that says nothing about the executor: "stalled" (our
    # event loop's stall decides the time, node.roles.stalls) or "beacon-unknown" (it could not
    # yet tell whose turn the round is, so it refused rather than guess).
    unjudged: str = ""


@dataclass(frozen=True)
class BusyAnswer:
    """The executor answered BUSY; the validator judges it (judging.judge_busy) and ends the session."""

    envelope: Envelope


@dataclass(frozen=True)
class VerifyJob:
    """Openings to verify (CPU-bound: the driver runs ``verify`` in a worker thread)."""

    openings: OpeningsProof
    bundle: bytes


def signer_problem(env: Envelope, executor_id: str, is_known_executor: Callable[[str], bool]) -> str | None:
    """None when the executor itself signed; else whether another known executor or a stranger did."""
    if env.sender == executor_id:
        return None
    return R.WRONG_EXECUTOR if is_known_executor(env.sender) else R.WRONG_SIGNER


@dataclass(eq=False)
class ChallengeSession:
    executor_id: str
    body: Challenge
    raw: bytes  # the signed challenge as sent
    secret: bytes  # the reveal secret (its hash is body.sample_commit)
    params: ChallengeParams
    rec: VerdictRecord  # filled in as the session goes
    commit_timeout: float
    co_scheduled: bool
    sizing: Sizing | None  # None: refused at issue
    phase: Phase = Phase.ISSUED
    sent_at: float | None = None
    commitment: Envelope | None = None
    revealed_at: float | None = None
    outcome: ChallengeOutcome | None = None
    commit_stalled_s: float = 0.0  # our event loop's stalls while the commitment was awaited

    # ---- transitions ---------------------------------------------------------------------------

    def _expect(self, *phases: Phase) -> None:
        if self.phase not in phases:
            raise SessionError(
                f"challenge {self.body.challenge_id.hex()[:12]}: {self.phase.value}, expected {'/'.join(p.value for p in phases)}"
            )

    def _end(self, reasons: list[str], bundle: bytes = b"", *, busy: bool = False, unjudged: str = "") -> ChallengeOutcome:
        self.rec.reasons = reasons
        self.outcome = ChallengeOutcome(self.rec, bundle, busy, unjudged)
        self.phase = Phase.DONE
        return self.outcome

    def refuse(self, reason: str) -> ChallengeOutcome:
        """The claim cannot be judged as made: nothing is sent."""
        self._expect(Phase.ISSUED)
        return self._end([reason])

    def sent(self, now: float) -> None:
        """The challenge left (the commitment is timed from here, not from a wait for a slot)."""
        self._expect(Phase.ISSUED)
        self.sent_at = now
        self.phase = Phase.SENT

    def on_commit_failure(
        self, failure: str, now: float, stalled_s: float = 0.0, params: ValidatorParams | None = None
    ) -> ChallengeOutcome:
        """No commitment: the network's reason (late, refused, link lost). ``stalled_s``: how long
        our event loop had been stalled when the deadline was noticed; an answer that reached the
        socket in that span, early enough to have passed (judge_time with ``params``), was never
        read, so such a miss is left unjudged."""
        self._expect(Phase.ISSUED, Phase.SENT)
        self.rec.commit_seconds = now - self.sent_at if self.sent_at is not None else None
        if failure.startswith(f"{R.MISSING_COMMITMENT}:{R.BEACON_UNKNOWN}"):
            return self._end([], unjudged=R.BEACON_UNKNOWN)
        if failure == R.LATE_COMMITMENT and stalled_s > 0 and params is not None and self.sizing is not None:
            assert self.rec.commit_seconds is not None
            self.commit_stalled_s = stalled_s
            if judge_time(self.sizing.expected_s, self.rec.commit_seconds, params, stalled_s)[0] is None:
                return self._end([], unjudged=STALLED)
        late = failure == R.LATE_COMMITMENT or failure.startswith(R.MISSING_COMMITMENT + ":capacity")
        return self._end([R.CO_SCHEDULED_TIMEOUT if (self.co_scheduled and late) else failure])

    def on_commit_response(
        self, raw: bytes, now: float, is_known_executor: Callable[[str], bool], stalled_s: float = 0.0
    ) -> ChallengeOutcome | BusyAnswer | None:
        """The executor's signed answer to the challenge: None when it committed (reveal next).
        ``stalled_s``: our event loop's stalls between the send and now (judged with the time)."""
        self._expect(Phase.SENT)
        assert self.sent_at is not None
        self.rec.commit_seconds = now - self.sent_at
        self.commit_stalled_s = stalled_s
        try:
            env = decode_envelope(raw, expect=(Commitment, Busy))
        except WireError as exc:
            return self._end([f"{R.BAD_SIGNATURE if exc.reason == 'bad-signature' else R.MISSING_COMMITMENT}:{exc.reason}"])
        problem = signer_problem(env, self.executor_id, is_known_executor)
        if problem:
            return self._end([problem])
        if isinstance(env.body, Busy):
            return BusyAnswer(env)
        cm: Commitment = env.body
        if cm.challenge_id != self.body.challenge_id or cm.challenge_hash != challenge_hash(self.raw):
            return self._end([R.REPLAY])
        self.commitment = env
        self.phase = Phase.COMMITTED
        return None

    def busy_judged(self, reason: str | None) -> ChallengeOutcome:
        """The validator's judgement of a BUSY answer: None excuses it (no verdict), else a miss."""
        self._expect(Phase.SENT)
        return self._end([], busy=True) if reason is None else self._end([reason])

    def reveal(self, signer: Signer, now: float) -> bytes:
        """The signed reveal of the secret (after every commitment of the group is in)."""
        self._expect(Phase.COMMITTED)
        self.revealed_at = now
        self.phase = Phase.REVEALED
        return signer.seal(Reveal(challenge_id=self.body.challenge_id, secret=self.secret))

    def reveal_sent(self, now: float) -> None:
        """The reveal left (the openings are timed from here, not from a wait for a slot)."""
        self._expect(Phase.REVEALED)
        self.revealed_at = now

    def on_openings_failure(self, failure: str, now: float) -> ChallengeOutcome:
        self._expect(Phase.REVEALED)
        self.rec.openings_seconds = now - self.revealed_at if self.revealed_at is not None else None
        return self._end([failure])

    def on_openings(
        self, raw: bytes, now: float, is_known_executor: Callable[[str], bool], signer: Signer
    ) -> ChallengeOutcome | VerifyJob:
        """The executor's signed openings: a verify job (and the signed evidence bundle), or the end."""
        self._expect(Phase.REVEALED)
        assert self.revealed_at is not None and self.commitment is not None
        self.rec.openings_seconds = now - self.revealed_at
        try:
            env = decode_envelope(raw, expect=Openings)
        except WireError as exc:
            return self._end([f"{R.MISSING_OPENINGS}:{exc.reason}"])
        problem = signer_problem(env, self.executor_id, is_known_executor)
        if problem:
            return self._end([problem])
        if env.body.challenge_id != self.body.challenge_id:
            return self._end([R.REPLAY])
        bundle = signer.seal(
            ProofBundle(challenge=self.raw, commitment=self.commitment.raw, reveal=self.secret, openings=env.raw)
        )
        try:
            openings = decode_openings(env.body.blob)
        except ProofFormatError:
            return self._end([f"{R.FALSE_PROOF}:format"], bundle)
        self.phase = Phase.VERIFYING
        return VerifyJob(openings, bundle)

    def verify_args(self, job: VerifyJob) -> tuple:
        """The arguments of ``node.pow.verifier.verify`` for this session's openings."""
        assert self.commitment is not None
        cm: Commitment = self.commitment.body
        return (self.params, self.body.samples, cm.root, cm.d_final, self.secret, job.openings)

    def on_verified(
        self,
        result: VerifyResult,
        verify_seconds: float,
        job: VerifyJob,
        params: ValidatorParams,
        *,
        duplicate_gpu: bool,
        listed_twice: bool,
    ) -> ChallengeOutcome:
        """Judge a verified answer: proof first, then time against the profile, then duplicates."""
        self._expect(Phase.VERIFYING)
        self.rec.verify_seconds = verify_seconds
        if not result.ok:
            return self._end([f"{R.FALSE_PROOF}:{f.check}" for f in result.failures][:8], job.bundle)
        sizing, rec = self.sizing, self.rec
        assert sizing is not None and rec.commit_seconds is not None
        reasons = []
        in_time, measured = judge_time(sizing.expected_s, rec.commit_seconds, params, self.commit_stalled_s)
        if in_time is None:
            return self._end([], job.bundle, unjudged=STALLED)
        rec.performance_factor = performance_factor(sizing.expected_s, measured, params.tolerance)
        if not in_time:
            reasons.append(R.SLOW_FOR_PROFILE)
        if duplicate_gpu:
            reasons.append(R.DUPLICATE_GPU)
        if listed_twice:
            reasons.append(R.DUPLICATE_ROSTER)
        rec.passed = not reasons
        if rec.passed and sizing.no_credit:
            # Correct and in time, but it proves nothing the network pays for (left out of scores).
            reasons.append(f"{R.NO_CREDIT}:{sizing.no_credit}")
            rec.performance_factor = 0.0
        return self._end(reasons or [R.PASSED], job.bundle)
