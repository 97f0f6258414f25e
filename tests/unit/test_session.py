"""The validator's challenge session, driven without sockets or trio: real signed messages, real
CPU-engine proofs at n = 64, and times passed in as numbers."""

from __future__ import annotations

import hashlib

import pytest

from node.identity import Identity
from node.pow.chain import sample_commit
from node.pow.cpu_engine import CpuEngine
from node.pow.engine import ChallengeParams
from node.pow.openings import build_openings, encode_openings
from node.pow.verifier import verify
from node.roles import verdicts as R
from node.roles.judging import Sizing, challenge_hash
from node.roles.params import ValidatorParams
from node.roles.session import BusyAnswer, ChallengeSession, Phase, SessionError, VerifyJob
from node.roles.verdicts import VerdictRecord
from node.wire.envelope import Signer
from node.wire.messages import Busy, Challenge, Commitment, Openings

N, T, M, K = 64, 8, 2, 8
PARAMS = ValidatorParams(rtt_margin_s=0.05, tolerance=1.5)


class World:
    def __init__(self, expected_s: float = 1.0, no_credit: str = "", co_scheduled: bool = False):
        self.validator, self.executor = Identity.generate(), Identity.generate()
        self.vsign, self.xsign = Signer(self.validator), Signer(self.executor)
        self.secret = hashlib.sha256(b"secret").digest()
        self.body = Challenge(
            challenge_id=bytes(range(16)),
            executor_id=self.executor.peer_id,
            seed=hashlib.sha256(b"seed").digest(),
            n=N,
            steps=T,
            b_matrices=M,
            samples=K,
            commit_deadline_ms=10**13,
            openings_timeout_ms=5_000,
            sample_commit=sample_commit(self.secret),
        )
        self.raw = self.vsign.seal(self.body)
        self.params = ChallengeParams(self.body.seed, self.validator.public_key, self.executor.public_key, N, T, M)
        rec = VerdictRecord(
            challenge_id=self.body.challenge_id.hex(),
            validator_id=self.validator.peer_id,
            executor_id=self.executor.peer_id,
            miner_id="m",
            passed=False,
            reasons=[],
            n=N,
            T=T,
            m=M,
            k=K,
            commit_seconds=None,
            openings_seconds=None,
            verify_seconds=None,
            expected_seconds=expected_s,
            performance_factor=0.0,
            created_ms=0,
        )
        self.session = ChallengeSession(
            self.executor.peer_id,
            self.body,
            self.raw,
            self.secret,
            self.params,
            rec,
            commit_timeout=5.0,
            co_scheduled=co_scheduled,
            sizing=Sizing(N, T, K, expected_s, 5.0, no_credit),
        )
        self.trace = CpuEngine(memory_budget_bytes=1 << 26).prove(self.params)

    def commitment(self, *, signer: Signer | None = None, raw: bytes | None = None, cid: bytes | None = None) -> bytes:
        return (signer or self.xsign).seal(
            Commitment(
                challenge_id=cid or self.body.challenge_id,
                challenge_hash=challenge_hash(raw or self.raw),
                root=self.trace.root,
                d_final=self.trace.digests[-1],
                prove_ms=1,
            )
        )

    def openings(self, *, signer: Signer | None = None, cid: bytes | None = None, blob: bytes | None = None) -> bytes:
        blob = blob if blob is not None else encode_openings(build_openings(self.trace, self.secret, K))
        return (signer or self.xsign).seal(Openings(challenge_id=cid or self.body.challenge_id, blob=blob))


def known_none(peer: str) -> bool:
    return False


def run_to_verdict(w: World, *, commit_at: float = 0.5, openings: bytes | None = None):
    s = w.session
    s.sent(10.0)
    assert s.on_commit_response(w.commitment(), 10.0 + commit_at, known_none) is None
    assert s.phase is Phase.COMMITTED
    s.reveal(w.vsign, 11.0)
    step = s.on_openings(openings or w.openings(), 11.2, known_none, w.vsign)
    if not isinstance(step, VerifyJob):
        return step
    return s.on_verified(verify(*s.verify_args(step)), 0.01, step, PARAMS, duplicate_gpu=False, listed_twice=False)


def test_an_honest_answer_in_time_passes_and_carries_its_evidence():
    w = World()
    out = run_to_verdict(w)
    assert out.record.passed and out.record.reasons == [R.PASSED]
    assert out.record.commit_seconds == pytest.approx(0.5) and out.record.openings_seconds == pytest.approx(0.2)
    assert out.bundle and w.session.phase is Phase.DONE


def test_slow_for_the_profile_fails_and_no_credit_passes_without_score():
    assert run_to_verdict(World(expected_s=0.1), commit_at=0.5).record.reasons == [R.SLOW_FOR_PROFILE]
    out = run_to_verdict(World(no_credit="probation"))
    assert out.record.passed and out.record.reasons == [f"{R.NO_CREDIT}:probation"] and out.record.performance_factor == 0.0


def test_a_false_proof_fails_with_the_bundle_as_evidence():
    w = World()
    import dataclasses

    good = build_openings(w.trace, w.secret, K)
    key = next(iter(good.rows))
    rows = dict(good.rows)
    rows[key] = dataclasses.replace(rows[key], row=bytes(N))  # a row the chain never produced
    out = run_to_verdict(w, openings=w.openings(blob=encode_openings(dataclasses.replace(good, rows=rows))))
    assert not out.record.passed and out.record.reasons[0].startswith(R.FALSE_PROOF) and out.bundle


def test_malformed_openings_are_a_false_proof_of_format():
    w = World()
    out = run_to_verdict(w, openings=w.openings(blob=b"\x00garbage"))
    assert out.record.reasons == [f"{R.FALSE_PROOF}:format"] and out.bundle


@pytest.mark.parametrize(
    "case, reason",
    [
        ("another-challenge", R.REPLAY),
        ("another-challenge-id", R.REPLAY),
        ("stranger", R.WRONG_SIGNER),
        ("other-executor", R.WRONG_EXECUTOR),
        ("junk", R.MISSING_COMMITMENT),
    ],
)
def test_commitments_that_do_not_answer_this_challenge(case, reason):
    w = World()
    other = Identity.generate()
    raw = {
        "another-challenge": lambda: w.commitment(raw=b"another challenge"),
        "another-challenge-id": lambda: w.commitment(cid=bytes(16)),
        "stranger": lambda: w.commitment(signer=Signer(other)),
        "other-executor": lambda: w.commitment(signer=Signer(other)),
        "junk": lambda: b"\x93junk",
    }[case]()
    w.session.sent(1.0)
    out = w.session.on_commit_response(raw, 1.5, lambda peer: case == "other-executor" and peer == other.peer_id)
    assert out.record.reasons[0].split(":")[0] == reason and not out.record.passed


def test_openings_of_another_challenge_are_a_replay():
    w = World()
    assert run_to_verdict(w, openings=w.openings(cid=bytes(16))).record.reasons == [R.REPLAY]


def test_late_and_co_scheduled_late():
    w = World()
    w.session.sent(1.0)
    assert w.session.on_commit_failure(R.LATE_COMMITMENT, 7.0).record.reasons == [R.LATE_COMMITMENT]
    assert w.session.rec.commit_seconds == pytest.approx(6.0)
    w = World(co_scheduled=True)
    w.session.sent(1.0)
    assert w.session.on_commit_failure(R.LATE_COMMITMENT, 7.0).record.reasons == [R.CO_SCHEDULED_TIMEOUT]


def test_a_busy_answer_is_handed_to_the_validator_and_its_judgement_ends_the_session():
    w = World()
    busy = w.xsign.seal(Busy(challenge_id=w.body.challenge_id, challenge_hash=challenge_hash(w.raw), busy_with=b"x"))
    w.session.sent(1.0)
    step = w.session.on_commit_response(busy, 1.1, known_none)
    assert isinstance(step, BusyAnswer)
    out = w.session.busy_judged(None)
    assert out.busy and w.session.phase is Phase.DONE
    w2 = World()
    busy2 = w2.xsign.seal(Busy(challenge_id=w2.body.challenge_id, challenge_hash=challenge_hash(w2.raw), busy_with=b"x"))
    w2.session.sent(1.0)
    assert isinstance(w2.session.on_commit_response(busy2, 1.1, known_none), BusyAnswer)
    assert w2.session.busy_judged("missing-commitment:busy-in-round").record.reasons == ["missing-commitment:busy-in-round"]


def test_a_refused_claim_sends_nothing_and_out_of_order_driving_is_our_error():
    w = World()
    assert w.session.refuse("claim-mismatch:memory").record.reasons == ["claim-mismatch:memory"]
    with pytest.raises(SessionError):
        w.session.sent(1.0)
    w = World()
    with pytest.raises(SessionError):
        w.session.reveal(w.vsign, 1.0)  # nothing committed yet


# ---- our own stalls (issue 19, item 3) ----------------------------------------------------------


def test_a_commitment_read_after_our_stall_is_left_unjudged_not_failed():
    w = World(expected_s=1.0)
    s = w.session
    s.sent(10.0)
    # read 2.0 s after the send, past 1.5 x 1.0 + margin, but the loop had been stalled for 0.8 s:
    # the answer may have arrived at 1.2 s, in time. Nobody can tell: no verdict.
    assert s.on_commit_response(w.commitment(), 12.0, known_none, stalled_s=0.8) is None
    s.reveal(w.vsign, 12.1)
    step = s.on_openings(w.openings(), 12.2, known_none, w.vsign)
    assert isinstance(step, VerifyJob)
    out = s.on_verified(verify(*s.verify_args(step)), 0.01, step, PARAMS, duplicate_gpu=False, listed_twice=False)
    assert out.unjudged == "stalled" and not out.busy and out.record.reasons == []


def test_a_stall_too_short_to_matter_changes_nothing():
    w = World(expected_s=1.0)
    s = w.session
    s.sent(10.0)
    assert s.on_commit_response(w.commitment(), 13.0, known_none, stalled_s=0.2) is None
    s.reveal(w.vsign, 13.1)
    step = s.on_openings(w.openings(), 13.2, known_none, w.vsign)
    out = s.on_verified(verify(*s.verify_args(step)), 0.01, step, PARAMS, duplicate_gpu=False, listed_twice=False)
    assert not out.unjudged and out.record.reasons == [R.SLOW_FOR_PROFILE]


def test_a_deadline_noticed_after_our_stall_is_unjudged_only_if_the_answer_could_have_passed():
    w = World(expected_s=1.0)
    w.session.sent(10.0)
    # the deadline (5 s) was noticed at 15.1 s after a 4 s stall: an answer at 11.1 s would have passed
    out = w.session.on_commit_failure(R.LATE_COMMITMENT, 15.1, stalled_s=4.0, params=PARAMS)
    assert out.unjudged == "stalled" and out.record.reasons == []
    w2 = World(expected_s=1.0)
    w2.session.sent(10.0)
    # a 1 s stall: the earliest the answer could have come is 14.1 s, late in any case
    out2 = w2.session.on_commit_failure(R.LATE_COMMITMENT, 15.1, stalled_s=1.0, params=PARAMS)
    assert not out2.unjudged and out2.record.reasons == [R.LATE_COMMITMENT]
    w3 = World(expected_s=1.0)
    w3.session.sent(10.0)
    # a refusal is the executor's answer, not a timing: a stall does not excuse it
    out3 = w3.session.on_commit_failure(R.MISSING_COMMITMENT + ":capacity", 15.1, stalled_s=4.0, params=PARAMS)
    assert not out3.unjudged
