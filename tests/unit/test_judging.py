"""The judging core (node/roles/judging.py), one attack of issue 17 per test: pure functions fed
real signed messages and real proofs (CPU engine, n = 64, T = 8), no trio, no sockets."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from node.identity import Identity
from node.pow.chain import sample_commit
from node.pow.cpu_engine import CpuEngine
from node.pow.engine import ChallengeParams
from node.pow.openings import build_openings, encode_openings
from node.roles import verdicts as R
from node.roles.judging import (
    MIN_EXPECTED_OVER_MARGIN,
    PROBATION_MAX_STEPS,
    STALE_BUSY_GRACE_MS,
    BusyRules,
    Refusal,
    Sizing,
    challenge_hash,
    check_evidence,
    judge_busy,
    judge_time,
    size_challenge,
)
from node.roles.params import ValidatorParams
from node.roles.profiles import Profile, ProfileBook
from node.wire import constants as C
from node.wire import decode_envelope
from node.wire.envelope import Signer
from node.wire.messages import Busy, Challenge, Commitment, ExecutorAttestation, Openings, ProofBundle

H200 = "NVIDIA H200"
H200_MEM = 150_754_820_096
H100 = "NVIDIA H100 80GB HBM3"
H100_MEM = 85_520_809_984
GiB = 1024**3


def book(*extra: Profile) -> ProfileBook:
    return ProfileBook(
        [
            Profile(H200, H200_MEM, 4096, 0.0002027, True, "test"),
            Profile(H200, H200_MEM, 8192, 0.0011311, True, "test"),
            Profile(H100, H100_MEM, 4096, 0.0002264, True, "test"),
            Profile("cpu-reference", 0, 128, 0.02, True, "test"),
            Profile("cpu-estimate", 0, 128, 0.02, False, "test"),
            *extra,
        ]
    )


def att(engine: str = "gpu", model: str = H200, memory: int = H200_MEM, miner: str = "m") -> ExecutorAttestation:
    return ExecutorAttestation(
        miner_id=miner,
        engine=engine,
        gpu_model=model,
        memory_bytes=memory,
        gpu_uuid="GPU-x",
        pci_bus_id="",
        host_fingerprint="h",
        expires_ms=1,
    )


PARAMS = ValidatorParams(n_gpu=4096, n_cpu=128, probation_challenges=2, rtt_margin_s=0.25)


def sized(
    a: ExecutorAttestation, history: int = 10, profiles: ProfileBook | None = None, params: ValidatorParams = PARAMS
) -> Sizing | Refusal:
    return size_challenge(a, history=history, profiles=profiles or book(), params=params)


# ---- size_challenge ---------------------------------------------------------------------------------


def test_a_cpu_engine_claiming_a_gpu_model_is_a_claim_mismatch():
    # At n_cpu there is no H200 profile: the mismatch must still be what refuses it.
    r = sized(att(engine="cpu"))
    assert isinstance(r, Refusal) and r.reason.startswith(R.CLAIM_MISMATCH), r


def test_a_gpu_engine_claiming_a_cpu_class_is_a_claim_mismatch():
    r = sized(att(engine="gpu", model="cpu-reference", memory=GiB), params=dataclasses.replace(PARAMS, n_gpu=128))
    assert isinstance(r, Refusal) and r.reason.startswith(R.CLAIM_MISMATCH), r


def test_an_unknown_engine_is_a_claim_mismatch():
    r = sized(att(engine="fpga"))
    assert isinstance(r, Refusal) and r.reason == f"{R.CLAIM_MISMATCH}:engine"


@pytest.mark.parametrize("memory", [12 * GiB, int(0.79 * H200_MEM)])
def test_a_gpu_claim_with_less_than_80_percent_of_the_models_memory_is_refused(memory: int):
    r = sized(att(memory=memory))
    assert isinstance(r, Refusal) and r.reason == f"{R.CLAIM_MISMATCH}:memory", r


def test_a_claim_with_80_percent_of_the_models_memory_is_sized():
    assert isinstance(sized(att(memory=int(0.81 * H200_MEM))), Sizing)


def test_an_unknown_model_is_refused_not_challenged():
    r = sized(att(model="NVIDIA GeForce RTX 4090", memory=24 * GiB))
    assert isinstance(r, Refusal) and r.reason.startswith(R.UNKNOWN_PROFILE), r


def test_a_known_model_without_a_profile_at_the_challenges_n_is_refused_never_cube_scaled():
    # H100 is profiled at 4096 only: at n_gpu = 8192 the old code scaled it by (n/4096)^3.
    r = sized(att(model=H100, memory=H100_MEM), params=dataclasses.replace(PARAMS, n_gpu=8192))
    assert isinstance(r, Refusal) and r.reason == f"{R.UNKNOWN_PROFILE}:{H100}@8192", r


def test_an_unmeasured_profile_gives_no_credit():
    r = sized(att(engine="cpu", model="cpu-estimate", memory=16 * 1024 * 1024))
    assert isinstance(r, Sizing) and r.no_credit == "unmeasured-profile" and r.proven_bytes == 0


def test_probation_follows_the_ids_history():
    new = sized(att(), history=0)
    assert isinstance(new, Sizing) and new.no_credit == "probation"
    assert new.T <= PROBATION_MAX_STEPS and new.proven_bytes == 0
    still = sized(att(), history=PARAMS.probation_challenges - 1)
    assert isinstance(still, Sizing) and still.no_credit == "probation"
    # An id with history (however often it left a roster and came back) is sized in full.
    known = sized(att(), history=PARAMS.probation_challenges)
    assert isinstance(known, Sizing) and known.no_credit == "" and known.T > PROBATION_MAX_STEPS
    assert known.k == PARAMS.samples and known.proven_bytes > 0


def test_gpu_T_comes_from_the_claimed_memory_never_capped_by_max_steps():
    small = sized(att(model=H100, memory=H100_MEM))
    big = sized(att(model=H200, memory=141 * 10**9))
    assert isinstance(small, Sizing) and isinstance(big, Sizing)
    assert small.T > PARAMS.max_steps and big.T > small.T  # an 80 GB and a 141 GB card differ
    # One model, two claims above 80 %: T follows the claim.
    a, b = sized(att(memory=int(0.85 * H200_MEM))), sized(att(memory=H200_MEM))
    assert isinstance(a, Sizing) and isinstance(b, Sizing) and b.T > a.T
    assert b.proven_bytes > a.proven_bytes


def test_cpu_classes_may_be_capped_by_max_steps():
    r = sized(att(engine="cpu", model="cpu-reference", memory=GiB), params=dataclasses.replace(PARAMS, max_steps=100))
    assert isinstance(r, Sizing) and r.T == 100


def test_an_expected_time_below_four_rtt_margins_gives_no_credit():
    fast = Profile("cpu-fast", 0, 128, 1e-6, True, "test")
    r = sized(att(engine="cpu", model="cpu-fast", memory=16 * 1024 * 1024), profiles=book(fast))
    assert isinstance(r, Sizing) and r.expected_s < MIN_EXPECTED_OVER_MARGIN * PARAMS.rtt_margin_s
    assert r.no_credit == "below-timing-resolution"
    ok = sized(att(), history=10)
    assert isinstance(ok, Sizing) and ok.expected_s >= MIN_EXPECTED_OVER_MARGIN * PARAMS.rtt_margin_s and not ok.no_credit


def test_commit_timeout_is_the_expected_time_with_tolerance_margin_and_slack():
    r = sized(att())
    assert isinstance(r, Sizing)
    assert r.commit_timeout_s == pytest.approx(r.expected_s * PARAMS.tolerance + PARAMS.rtt_margin_s + PARAMS.commit_slack_s)


def test_judge_time_nets_the_rtt_margin():
    assert judge_time(1.0, 1.5 + PARAMS.rtt_margin_s, PARAMS) == (True, pytest.approx(1.5))
    in_time, measured = judge_time(1.0, 1.6 + PARAMS.rtt_margin_s, PARAMS)
    assert not in_time and measured == pytest.approx(1.6)


# ---- judge_busy ---------------------------------------------------------------------------------

NOW = 1_800_000_000_000


class Net:
    """Real identities and signers, a fixed wall clock."""

    def __init__(self) -> None:
        self.v1, self.v2, self.ex, self.other_ex, self.outsider = (Identity.generate() for _ in range(5))
        self.admitted = {self.v1.peer_id, self.v2.peer_id}

    def signer(self, ident: Identity, at_ms: int = NOW) -> Signer:
        return Signer(ident, lambda: at_ms)

    def challenge(
        self,
        issuer: Identity,
        executor: Identity,
        *,
        at_ms: int = NOW,
        window_ms: int = 5_000,
        openings_ms: int = 10_000,
        secret: bytes = b"\x01" * 32,
        n: int = 64,
        T: int = 8,
        k: int = 8,
        round_no: int = 0,
    ) -> bytes:
        body = Challenge(
            challenge_id=os.urandom(16),
            executor_id=executor.peer_id,
            seed=os.urandom(32),
            n=n,
            steps=T,
            b_matrices=4,
            samples=k,
            commit_deadline_ms=at_ms + window_ms,
            openings_timeout_ms=openings_ms,
            sample_commit=sample_commit(secret),
            round=round_no,
        )
        return self.signer(issuer, at_ms).seal(body)

    def busy(self, ours: bytes, busy_with: bytes, *, signer: Identity | None = None) -> object:
        body = decode_envelope(ours).body
        raw = self.signer(signer or self.ex).seal(
            Busy(challenge_id=body.challenge_id, challenge_hash=challenge_hash(ours), busy_with=busy_with)
        )
        return decode_envelope(raw)


RULES = BusyRules(round=0, max_commit_s=120, max_openings_s=30, max_busy_s=40.0)


def judge(
    net: Net, busy_env, ours: bytes, *, now_ms: int = NOW + 1_000, busy_for_s: float = 0.0, rules: BusyRules = RULES
) -> str | None:
    return judge_busy(
        busy_env,
        ours,
        net.ex.peer_id,
        now_ms=now_ms,
        admitted=lambda peer, now: peer in net.admitted,
        busy_for_s=busy_for_s,
        rules=rules,
    )


def test_a_genuine_busy_is_excused():
    net = Net()
    theirs = net.challenge(net.v2, net.ex, at_ms=NOW - 1_000)
    ours = net.challenge(net.v1, net.ex)
    assert judge(net, net.busy(ours, theirs), ours) is None


def test_a_busy_for_another_of_our_challenges_is_a_miss():
    net = Net()
    theirs = net.challenge(net.v2, net.ex, at_ms=NOW - 1_000)
    ours, another = net.challenge(net.v1, net.ex), net.challenge(net.v1, net.ex)
    assert judge(net, net.busy(another, theirs), ours) == f"{R.MISSING_COMMITMENT}:busy-for-another-challenge"


@pytest.mark.parametrize("junk", [b"junk", b"", b"\x87" * 40])
def test_a_busy_naming_no_signed_challenge_is_a_miss(junk: bytes):
    net = Net()
    ours = net.challenge(net.v1, net.ex)
    assert judge(net, net.busy(ours, junk), ours) == f"{R.MISSING_COMMITMENT}:bad-busy"


def test_a_busy_naming_a_tampered_challenge_is_a_miss():
    net = Net()
    theirs = bytearray(net.challenge(net.v2, net.ex, at_ms=NOW - 1_000))
    theirs[-40] ^= 1
    ours = net.challenge(net.v1, net.ex)
    assert judge(net, net.busy(ours, bytes(theirs)), ours) == f"{R.MISSING_COMMITMENT}:bad-busy"


def test_a_busy_running_another_executors_challenge_is_a_duplicate_gpu():
    net = Net()
    theirs = net.challenge(net.v2, net.other_ex, at_ms=NOW - 1_000)
    ours = net.challenge(net.v1, net.ex)
    assert judge(net, net.busy(ours, theirs), ours) == R.DUPLICATE_GPU


def test_in_rounds_a_busy_naming_this_rounds_challenge_is_a_miss():
    """One challenge per executor per round: BUSY with another validator's challenge of the same
    round means the executor took a challenge the beacon did not give it."""
    net = Net()
    theirs = net.challenge(net.v2, net.ex, at_ms=NOW - 1_000, round_no=7)
    ours = net.challenge(net.v1, net.ex, round_no=7)
    rules = dataclasses.replace(RULES, round=7)
    assert judge(net, net.busy(ours, theirs), ours, rules=rules) == f"{R.MISSING_COMMITMENT}:busy-in-round"


def test_in_rounds_a_busy_naming_an_overrun_of_the_last_round_is_judged_like_any_other():
    """A challenge of round 6 still running when round 7's comes is the schedule's overrun, not the
    executor's doing: excused when genuine, a miss when not."""
    net = Net()
    theirs = net.challenge(net.v2, net.ex, at_ms=NOW - 1_000, round_no=6)
    ours = net.challenge(net.v1, net.ex, round_no=7)
    rules = dataclasses.replace(RULES, round=7)
    assert judge(net, net.busy(ours, theirs), ours, rules=rules) is None
    made_up = net.challenge(Identity.generate(), net.ex, at_ms=NOW - 1_000, round_no=6)
    assert judge(net, net.busy(ours, made_up), ours, rules=rules) == f"{R.MISSING_COMMITMENT}:busy-unadmitted-issuer"


def test_a_busy_naming_a_self_made_challenge_is_a_miss():
    # The forged-busy cheat: a challenge signed by a throwaway key, addressed to itself.
    net = Net()
    theirs = net.challenge(net.outsider, net.ex, at_ms=NOW - 1_000)
    ours = net.challenge(net.v1, net.ex)
    assert judge(net, net.busy(ours, theirs), ours) == f"{R.MISSING_COMMITMENT}:busy-unadmitted-issuer"


def test_a_busy_naming_a_challenge_issued_in_the_future_is_a_miss():
    net = Net()
    theirs = net.challenge(net.v2, net.ex, at_ms=NOW + 60_000)
    ours = net.challenge(net.v1, net.ex)
    assert judge(net, net.busy(ours, theirs), ours) == f"{R.MISSING_COMMITMENT}:busy-not-issued-earlier"


@pytest.mark.parametrize("window_ms,openings_ms", [(86_400_000, 10_000), (5_000, 3_600_000), (121_000, 10_000)])
def test_a_busy_naming_windows_beyond_the_cap_is_a_miss(window_ms: int, openings_ms: int):
    # The busy-lock cheat, seen from the judge: an executor holding such a challenge is not excused.
    net = Net()
    theirs = net.challenge(net.v2, net.ex, at_ms=NOW - 1_000, window_ms=window_ms, openings_ms=openings_ms)
    ours = net.challenge(net.v1, net.ex)
    assert judge(net, net.busy(ours, theirs), ours) == f"{R.MISSING_COMMITMENT}:busy-deadline-beyond-cap"


def test_a_stale_busy_is_a_miss_and_within_the_grace_it_is_not():
    net = Net()
    theirs = net.challenge(net.v2, net.ex, at_ms=NOW - 20_000, window_ms=5_000, openings_ms=10_000)
    ours = net.challenge(net.v1, net.ex)
    over = NOW - 20_000 + 5_000 + 10_000
    assert judge(net, net.busy(ours, theirs), ours, now_ms=over + STALE_BUSY_GRACE_MS + 1) == f"{R.MISSING_COMMITMENT}:stale-busy"
    assert judge(net, net.busy(ours, theirs), ours, now_ms=over + STALE_BUSY_GRACE_MS - 1) is None


def test_busy_on_every_attempt_for_longer_than_the_cap_is_a_miss():
    # Genuine excuses fed back to back by a colluder must not turn every miss into an abort.
    net = Net()
    theirs = net.challenge(net.v2, net.ex, at_ms=NOW - 1_000)
    ours = net.challenge(net.v1, net.ex)
    assert judge(net, net.busy(ours, theirs), ours, busy_for_s=RULES.max_busy_s) is None
    assert judge(net, net.busy(ours, theirs), ours, busy_for_s=RULES.max_busy_s + 1) == f"{R.MISSING_COMMITMENT}:busy-too-long"


# ---- check_evidence -----------------------------------------------------------------------------------

N, T, K = 64, 8, 8


@dataclasses.dataclass
class Answered:
    """One challenge answered by a real engine: every signed part, and the secret."""

    net: Net
    challenge: bytes
    commitment: bytes
    openings: bytes
    secret: bytes

    def bundle(self, *, signer: Identity | None = None, **parts: bytes) -> bytes:
        fields = {
            "challenge": self.challenge,
            "commitment": self.commitment,
            "reveal": self.secret,
            "openings": self.openings,
            **parts,
        }
        return self.net.signer(signer or self.net.v1).seal(ProofBundle(**fields))


def answer(net: Net, *, issuer: Identity | None = None, corrupt: float = 0.0) -> Answered:
    issuer = issuer or net.v1
    secret = os.urandom(32)
    raw = net.challenge(issuer, net.ex, secret=secret, n=N, T=T, k=K)
    ch: Challenge = decode_envelope(raw).body
    params = ChallengeParams(seed=ch.seed, validator=issuer.public_key, executor=net.ex.public_key, n=N, T=T, m=4)
    hook = None
    if corrupt:
        rng = np.random.default_rng(3)

        def hook(s: int, state: np.ndarray) -> None:  # corrupt-rows: some rows of every state wrong
            rows = rng.random(state.shape[0]) < corrupt
            state[rows] = rng.integers(-128, 128, size=(int(rows.sum()), state.shape[1]), dtype=np.int8)

    trace = CpuEngine(64 * 1024 * 1024, state_hook=hook).prove(params)
    ex = net.signer(net.ex)
    cm = ex.seal(
        Commitment(
            challenge_id=ch.challenge_id,
            challenge_hash=challenge_hash(raw),
            root=trace.root,
            d_final=trace.digests[-1],
            prove_ms=1,
        )
    )
    op = ex.seal(Openings(challenge_id=ch.challenge_id, blob=encode_openings(build_openings(trace, secret, K))))
    return Answered(net, raw, cm, op, secret)


@pytest.fixture(scope="module")
def honest() -> Answered:
    return answer(Net())


def check(a: Answered, bundle: bytes, *, sender: Identity | None = None, passed: bool = False):
    return check_evidence(
        bundle, verdict_sender=(sender or a.net.v1).peer_id, executor_id=a.net.ex.peer_id, verdict_passed=passed
    )


@pytest.mark.parametrize("junk", [b"junk", b"", os.urandom(300)])
def test_junk_bytes_are_no_fraud(honest: Answered, junk: bytes):
    res = check(honest, junk)
    assert not res.fraud and not res.agrees and res.detail[0].startswith("bad-bundle")


def test_a_bundle_signed_by_someone_else_is_no_fraud(honest: Answered):
    res = check(honest, honest.bundle(signer=honest.net.v2))
    assert not res.fraud and res.detail[0].startswith("bad-bundle")


def test_a_challenge_not_signed_by_the_verdicts_sender_is_no_fraud(honest: Answered):
    # v2 wraps v1's challenge in a bundle of its own and claims the answers are false.
    res = check(honest, honest.bundle(signer=honest.net.v2), sender=honest.net.v2)
    assert not res.fraud and res.detail == ["bad-bundle:challenge-not-issued-by-the-sender"]


def test_a_wrong_reveal_is_no_fraud(honest: Answered):
    res = check(honest, honest.bundle(reveal=os.urandom(32)))
    assert not res.fraud and res.detail == ["bad-reveal"]


def test_openings_of_another_challenge_are_no_fraud(honest: Answered):
    other = answer(honest.net)
    res = check(honest, honest.bundle(openings=other.openings))
    assert not res.fraud and res.detail == ["bad-bundle:answers-bound-to-another-challenge"]


def test_a_commitment_of_another_challenge_is_no_fraud(honest: Answered):
    other = answer(honest.net)
    res = check(honest, honest.bundle(commitment=other.commitment))
    assert not res.fraud and res.detail == ["bad-bundle:answers-bound-to-another-challenge"]


def test_answers_signed_by_another_executor_are_no_fraud(honest: Answered):
    res = check_evidence(
        honest.bundle(), verdict_sender=honest.net.v1.peer_id, executor_id=honest.net.other_ex.peer_id, verdict_passed=False
    )
    assert not res.fraud and res.detail == ["bad-bundle:not-the-executor's-answers"]


def test_a_genuine_corrupt_rows_proof_is_fraud():
    # Every row of every state wrong: each of the k samples fails its relation, whatever rows the
    # (random) reveal picks. With half the rows, k = 8 samples all missed them once in 256 runs.
    bad = answer(Net(), corrupt=1.0)
    res = check(bad, bad.bundle())
    assert res.fraud and res.agrees and all(d.startswith(R.FALSE_PROOF) for d in res.detail), res.detail
    # A verdict that calls it a pass is contradicted by its own evidence.
    assert not check(bad, bad.bundle(), passed=True).agrees


def test_malformed_openings_signed_by_the_executor_are_fraud(honest: Answered):
    ch: Challenge = decode_envelope(honest.challenge).body
    op = honest.net.signer(honest.net.ex).seal(Openings(challenge_id=ch.challenge_id, blob=b"\x00not openings"))
    res = check(honest, honest.bundle(openings=op))
    assert res.fraud and res.detail[0].startswith(f"{R.FALSE_PROOF}:format")


def test_an_honest_proof_with_a_failing_verdict_is_not_fraud(honest: Answered):
    res = check(honest, honest.bundle(), passed=False)
    assert not res.fraud and not res.agrees and res.detail == [R.PASSED]
    assert check(honest, honest.bundle(), passed=True).agrees


# ---- the commitment window every executor accepts -----------------------------------------------


def test_a_cpu_class_is_sized_to_fit_the_executors_commitment_window():
    # The harness scales its CPU profile by the machine's load: a full pool would need minutes,
    # and executors refuse a window beyond MAX_COMMIT_WINDOW_S ('deadline-too-far').
    slow = Profile("cpu-slow", 0, 128, 0.4, True, "test")
    r = sized(att(engine="cpu", model="cpu-slow", memory=64 * 1024 * 1024), profiles=book(slow))
    assert isinstance(r, Sizing) and 1 <= r.T < PARAMS.max_steps
    assert r.commit_timeout_s <= C.MAX_COMMIT_WINDOW_S
    assert r.commit_timeout_s + 0.4 * PARAMS.tolerance > C.MAX_COMMIT_WINDOW_S  # as many steps as fit


def test_a_gpu_claim_beyond_the_commitment_window_is_refused():
    # 2^50 bytes (the attestation's bound) "of" an H200: no card of that model could fill it in time.
    r = sized(att(memory=2**50))
    assert isinstance(r, Refusal) and r.reason.startswith(f"{R.CLAIM_MISMATCH}:memory"), r


def test_every_sizing_fits_the_commitment_window():
    for a in (att(), att(model=H100, memory=H100_MEM), att(engine="cpu", model="cpu-reference", memory=2**40)):
        r = sized(a)
        assert isinstance(r, Sizing) and r.commit_timeout_s <= C.MAX_COMMIT_WINDOW_S, (a, r)
