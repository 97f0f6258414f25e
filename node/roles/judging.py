"""Judging, as pure functions: what a validator concludes from what executors, miners and other
validators send it. No I/O and no clock of its own: every input (time included) is an argument,
so each rule is tested on its own (tests/unit/test_judging.py) and every attack in
docs/threat-model.md is a unit test before it is a harness run.

The rules, each against a claim a peer could make up:
- ``size_challenge``: an attestation's claims (engine, model, memory) are bound to each other and
  to a profile measured at the challenge's n; the pool fills the claimed memory; credit only where
  the timing can tell a GPU from a pretender (expected time several times the RTT margin).
- ``judge_busy``: a BUSY is excused only when the challenge it names is genuinely in flight.
- ``check_evidence``: another validator's evidence bans only when it proves fraud on its own:
  every part signed by who it must be, bound to one challenge, and a relation or path failing
  inside the executor's signed data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from node.pow.chain import sample_commit
from node.pow.engine import ChallengeParams, max_steps_for, pool_bytes
from node.pow.openings import ProofFormatError, decode_openings
from node.pow.verifier import verify
from node.roles import verdicts as R
from node.roles.params import ValidatorParams
from node.roles.profiles import ProfileBook
from node.wire import WireError, decode_envelope
from node.wire import constants as C
from node.wire.envelope import Envelope
from node.wire.messages import Busy, Challenge, Commitment, ExecutorAttestation, Openings, ProofBundle

# A claim of less than this share of its model's memory is a different card, or a card that
# does not hold what the model promises: sized from the claim it would prove too little.
MIN_MEMORY_SHARE = 0.8
# Credit needs the expected time to be this many RTT margins: below it, the margin alone could
# hide a slower class (a CPU answering a tiny challenge "as" an H200 in 20 ns).
MIN_EXPECTED_OVER_MARGIN = 4.0
# Probation challenges (an id with no history) are this small at most.
PROBATION_MAX_STEPS = 32
PROBATION_MIN_SAMPLES = 8


def challenge_hash(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


@dataclass(frozen=True)
class Sizing:
    """A challenge's size and clock, and whether a pass earns credit (and why not)."""

    n: int
    T: int
    k: int
    expected_s: float
    commit_timeout_s: float
    no_credit: str = ""  # "" = creditable; else the detail of R.NO_CREDIT
    proven_bytes: int = 0  # the pool a pass proves held


@dataclass(frozen=True)
class Refusal:
    """A claim that cannot be judged as made: a failing verdict, no challenge sent."""

    reason: str


def size_challenge(att: ExecutorAttestation, *, history: int, profiles: ProfileBook, params: ValidatorParams) -> Sizing | Refusal:
    """(n, T, k, clock) for an executor from its signed attestation and its history here.

    ``history`` is how many challenges this validator has issued to this executor id, ever (the
    ledger's count: leaving and re-joining a roster does not reset it)."""
    if att.engine not in ("cpu", "gpu"):
        return Refusal(f"{R.CLAIM_MISMATCH}:engine")
    # The model is a GPU model whatever n the engine's claim picks: checked before the profile at
    # that n, or a CPU engine claiming an H200 would be sized at n_cpu, where no H200 profile
    # exists, and be refused as an unknown profile instead of as the mismatch it is.
    model_memory = profiles.model_memory(att.gpu_model)
    is_gpu_model = model_memory > 0
    if is_gpu_model and att.engine != "gpu":
        return Refusal(f"{R.CLAIM_MISMATCH}:cpu-engine-claims-gpu")
    n = params.n_cpu if att.engine == "cpu" else params.n_gpu
    profile = profiles.get(att.gpu_model, n)
    if profile is None:
        # No measured step time at this n: the clock could not tell this model from any other.
        return Refusal(f"{R.UNKNOWN_PROFILE}:{att.gpu_model[:40]}@{n}")
    if not is_gpu_model and att.engine == "gpu":
        return Refusal(f"{R.CLAIM_MISMATCH}:gpu-engine-claims-cpu-class")
    if is_gpu_model and att.memory_bytes < MIN_MEMORY_SHARE * model_memory:
        return Refusal(f"{R.CLAIM_MISMATCH}:memory")
    if att.memory_bytes <= 0:
        return Refusal(f"{R.CLAIM_MISMATCH}:memory")
    steps = max(1, max_steps_for(n, int(att.memory_bytes * params.memory_fill)))
    if not is_gpu_model:
        # CPU classes (development, the harness) may be capped; a GPU claim never is, or an
        # 80 GB and a 141 GB card would get the same challenge.
        steps = min(params.max_steps, steps)
    k = params.samples
    no_credit = ""
    if history < params.probation_challenges:
        steps, k = min(steps, PROBATION_MAX_STEPS), max(min(k, PROBATION_MIN_SAMPLES), k // 4)
        no_credit = "probation"
    expected = profile.step_seconds * steps
    # Executors refuse a commitment window beyond the protocol's (MAX_COMMIT_WINDOW_S): a
    # challenge sized past it would only be refused ('deadline-too-far') and its refusal charged
    # to us. A CPU class gets fewer steps; a GPU model with a measured profile needs seconds for
    # its whole memory, so a claim that does not fit is far beyond any card of that model.
    fit = int((C.MAX_COMMIT_WINDOW_S - params.rtt_margin_s - params.commit_slack_s) / (profile.step_seconds * params.tolerance))
    if steps > fit:
        if is_gpu_model:
            return Refusal(f"{R.CLAIM_MISMATCH}:memory-beyond-commit-window")
        if fit < 1:
            return Refusal(f"{R.UNKNOWN_PROFILE}:{att.gpu_model[:40]}@{n}:step-beyond-commit-window")
        steps = fit
        expected = profile.step_seconds * steps
    if not no_credit and not profile.measured:
        no_credit = "unmeasured-profile"
    if not no_credit and expected < MIN_EXPECTED_OVER_MARGIN * params.rtt_margin_s:
        no_credit = "below-timing-resolution"
    timeout = expected * params.tolerance + params.rtt_margin_s + params.commit_slack_s
    return Sizing(n, steps, k, expected, timeout, no_credit, 0 if no_credit else pool_bytes(n, steps))


def judge_time(expected_s: float, commit_s: float, params: ValidatorParams, stalled_s: float = 0.0) -> tuple[bool | None, float]:
    """(in time, measured seconds net of the RTT margin) for a commitment timed from its send.

    ``stalled_s``: how long our own event loop was stalled while the commitment was awaited
    (node.roles.stalls), so the answer arrived somewhere in ``[measured - stalled_s, measured]``.
    In time when even the latest is; late when even the earliest is; otherwise None: our stall, not
    the executor, decides it, so it is left unjudged."""
    measured = max(0.0, commit_s - params.rtt_margin_s)
    limit = expected_s * params.tolerance
    if measured <= limit:
        return True, measured
    if measured - stalled_s > limit:
        return False, measured
    return None, measured


# ---- BUSY ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BusyRules:
    # In rounds every executor is challenged once per round, at one instant: a BUSY naming a
    # challenge of this round (or a later one) is a miss. One naming an earlier round's challenge
    # that overran into this one is judged like any other (our schedule's fault, not the executor's).
    round: int  # the round of the challenge answered BUSY; 0 outside rounds
    max_commit_s: float  # the longest commitment window an honest executor accepts (ExecutorLimits)
    max_openings_s: float
    # An executor that answered this validator BUSY on every attempt for longer than this is
    # missing, whatever it names: honest validators that do not coordinate collide now and then,
    # but a challenge in flight ends within its windows; a colluder feeding an executor genuine
    # excuses back to back must not turn every miss into an abort. Set per challenge (twice our
    # own commitment and openings windows for it).
    max_busy_s: float = float("inf")


def judge_busy(
    busy_env: Envelope,
    our_raw: bytes,
    executor_id: str,
    *,
    now_ms: int,
    admitted: Callable[[str, int], bool],
    busy_for_s: float,
    rules: BusyRules,
) -> str | None:
    """None when the BUSY is excused (the challenge it names is genuinely in flight), else the
    failing reason. ``busy_env`` is the executor's signed BUSY (its signer already checked);
    ``busy_share`` the share of this executor's recent challenges that ended BUSY, this one included."""
    busy: Busy = busy_env.body
    if busy.challenge_hash != challenge_hash(our_raw):
        return f"{R.MISSING_COMMITMENT}:busy-for-another-challenge"
    try:
        other = decode_envelope(busy.busy_with, expect=Challenge)
    except WireError:
        return f"{R.MISSING_COMMITMENT}:bad-busy"
    body: Challenge = other.body
    if body.executor_id != executor_id:
        # It is running a challenge addressed to another identity: two ids, one engine.
        return R.DUPLICATE_GPU
    if rules.round > 0 and body.round >= rules.round:
        return f"{R.MISSING_COMMITMENT}:busy-in-round"
    if not admitted(other.sender, now_ms):
        return f"{R.MISSING_COMMITMENT}:busy-unadmitted-issuer"
    if other.timestamp_ms > now_ms:
        return f"{R.MISSING_COMMITMENT}:busy-not-issued-earlier"
    window_ms = body.commit_deadline_ms - other.timestamp_ms
    if window_ms > rules.max_commit_s * 1000 or body.openings_timeout_ms > rules.max_openings_s * 1000:
        return f"{R.MISSING_COMMITMENT}:busy-deadline-beyond-cap"
    if body.commit_deadline_ms + body.openings_timeout_ms + STALE_BUSY_GRACE_MS < now_ms:
        return f"{R.MISSING_COMMITMENT}:stale-busy"
    if busy_for_s > rules.max_busy_s:
        return f"{R.MISSING_COMMITMENT}:busy-too-long"
    return None


# A BUSY naming a challenge that its own validator has given up on is stale; this much later than
# the executor's own cut-off (ABANDON_GRACE_MS), so clock skew does not fail an honest executor.
STALE_BUSY_GRACE_MS = 5_000


# ---- evidence from other validators ----------------------------------------------------------------


@dataclass(frozen=True)
class EvidenceResult:
    """``fraud``: the bundle proves, by itself, that ``executor_id`` signed a false answer.
    ``agrees``: whether our re-check agrees with the verdict's pass/fail. ``detail`` says why."""

    fraud: bool
    agrees: bool
    detail: list[str]


def check_evidence(bundle_raw: bytes, *, verdict_sender: str, executor_id: str, verdict_passed: bool) -> EvidenceResult:
    """Re-check another validator's proof bundle from scratch. Pure and CPU-bound (run it in a
    thread). A bundle that does not hold together (undecodable, a wrong reveal, parts bound to
    other challenges or signed by others) proves nothing about the executor: no fraud, and the
    disagreement counts against the sender of the bundle, never against the executor."""
    try:
        bundle = decode_envelope(bundle_raw, expect=ProofBundle)
        if bundle.sender != verdict_sender:
            return EvidenceResult(False, False, ["bad-bundle:not-signed-by-the-verdict's-sender"])
        b: ProofBundle = bundle.body
        ch_env = decode_envelope(b.challenge, expect=Challenge)
        cm_env = decode_envelope(b.commitment, expect=Commitment)
        op_env = decode_envelope(b.openings, expect=Openings)
    except WireError as exc:
        return EvidenceResult(False, False, [f"bad-bundle:{exc.reason}"])
    ch: Challenge = ch_env.body
    cm: Commitment = cm_env.body
    op: Openings = op_env.body
    if ch_env.sender != verdict_sender:
        return EvidenceResult(False, False, ["bad-bundle:challenge-not-issued-by-the-sender"])
    if ch.executor_id != executor_id or cm_env.sender != executor_id or op_env.sender != executor_id:
        return EvidenceResult(False, False, ["bad-bundle:not-the-executor's-answers"])
    if (
        cm.challenge_id != ch.challenge_id
        or cm.challenge_hash != challenge_hash(b.challenge)
        or op.challenge_id != ch.challenge_id
    ):
        return EvidenceResult(False, False, ["bad-bundle:answers-bound-to-another-challenge"])
    if sample_commit(b.reveal) != ch.sample_commit:
        return EvidenceResult(False, False, ["bad-reveal"])
    params = ChallengeParams(
        seed=ch.seed, validator=ch_env.sender_key, executor=cm_env.sender_key, n=ch.n, T=ch.steps, m=ch.b_matrices
    )
    try:
        openings = decode_openings(op.blob)
    except ProofFormatError as exc:
        # Malformed openings the executor signed: a false answer of its own making.
        return EvidenceResult(True, not verdict_passed, [f"{R.FALSE_PROOF}:format:{exc}"[:120]])
    res = verify(params, ch.samples, cm.root, cm.d_final, b.reveal, openings)
    if res.ok:
        return EvidenceResult(False, verdict_passed, [R.PASSED])
    return EvidenceResult(True, not verdict_passed, [f"{R.FALSE_PROOF}:{f.check}" for f in res.failures][:8])
