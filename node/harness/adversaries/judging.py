"""The attacks on judging of issue 17, one adversary each, built from outside the product through
the seams ``Node`` accepts (answerers, executor classes, a miner's local executors, role classes).

Each names what should stop it (``caught_as`` in the registry, or the report's neutralisation
check for validator and executor kinds):

- claims that do not fit each other or any measured profile (``cpu-claims-gpu``,
  ``small-memory-claim``): refused before any work, ``claim-mismatch``;
- a BUSY excuse it made up (``forged-busy``): a miss, ``missing-commitment:busy-*``;
- probation forever by leaving and re-joining a roster (``probation-reset``): probation follows
  the id's history in the ledger, so the full challenge finds the memory missing;
- a validator locking executors with far deadlines (``busy-lock``): executors refuse;
- a validator gossiping evidence that proves nothing (``junk-evidence``): no ban, the liar pays;
- an outsider registering with an honest miner to get it banned (``frame-miner``): refused;
- a copied GPU UUID (``uuid-copy``): the copier fails, the first registrant keeps it;
- one engine behind several ids (``slow-sybil``): co-scheduled, they cannot all answer.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import trio

from node.app.node import Node, cpu_facts, make_cpu_engine
from node.gossip.router import Validation
from node.identity import Identity, load_or_create_key_file
from node.pow.engine import pool_bytes
from node.roles.answerer import Answerer
from node.roles.executor import ChallengeRefused, ExecutorService, PoolBudget, host_fingerprint
from node.roles.judging import PROBATION_MAX_STEPS, challenge_hash
from node.roles.miner import MinerService
from node.roles.validator import ChallengeOutcome, KnownExecutor, ValidatorService
from node.wire import WireError, decode_envelope
from node.wire import constants as C
from node.wire.envelope import Envelope, Signer
from node.wire.messages import Busy, Challenge, ExecutorAttestation, ProofBundle, Roster

log = logging.getLogger("gpow.adversary")

H200 = "NVIDIA H200"
H200_MEMORY = 150_754_820_096  # configs/gpu_profiles.toml


# ---- claims ---------------------------------------------------------------------------------------


class CpuClaimsGpu(Answerer):
    """A CPU engine that signs an attestation saying it is an H200 (engine "cpu")."""

    def attestation(self, body: ExecutorAttestation) -> ExecutorAttestation:
        return dataclasses.replace(body, engine="cpu", gpu_model=H200, memory_bytes=H200_MEMORY)


class SmallMemoryClaim(Answerer):
    """Claims an H200 on the GPU engine with 12 GB: sized from its claim it would prove 12 GB,
    paid as an H200 (a 24 GB RTX 4090 passing as one)."""

    def attestation(self, body: ExecutorAttestation) -> ExecutorAttestation:
        return dataclasses.replace(body, engine="gpu", gpu_model=H200, memory_bytes=12 * 1024**3)


# ---- BUSY ------------------------------------------------------------------------------------------


class ForgedBusy(ExecutorService):
    """Never works: answers every challenge with a signed BUSY naming a challenge it made itself
    (signed by a throwaway key, addressed to itself, issued a second earlier)."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self._forger = Identity.generate()

    async def on_challenge(self, raw: bytes) -> bytes:
        self.stats["challenges"] += 1
        env, body = self._check_challenge(raw)
        now = self.wall_ms()
        made_up = Challenge(
            challenge_id=os.urandom(C.CHALLENGE_ID_BYTES),
            executor_id=self.executor_id,
            seed=os.urandom(32),
            n=body.n,
            steps=body.steps,
            b_matrices=body.b_matrices,
            samples=body.samples,
            commit_deadline_ms=now + 30_000,
            openings_timeout_ms=body.openings_timeout_ms,
            sample_commit=os.urandom(32),
            round=body.round,
        )
        busy_with = Signer(self._forger, lambda: now - 1_000).seal(made_up)
        self.stats["busy"] += 1
        return self.signer.seal(Busy(challenge_id=body.challenge_id, challenge_hash=challenge_hash(raw), busy_with=busy_with))


# ---- probation ------------------------------------------------------------------------------------


class ProbationSized(ExecutorService):
    """Claims its configured memory but holds only what probation's small challenges need
    (T <= PROBATION_MAX_STEPS): a full challenge finds the memory missing."""

    async def on_challenge(self, raw: bytes) -> bytes:
        env, body = self._check_challenge(raw)
        held = pool_bytes(body.n, PROBATION_MAX_STEPS)
        if pool_bytes(body.n, body.steps) > held:
            self.stats["challenges"] += 1
            self.stats["refused"] += 1
            raise ChallengeRefused(
                "capacity",
                f"pool of {pool_bytes(body.n, body.steps)} bytes; it holds {held} of the {self.facts.memory_bytes} it claims",
            )
        return await super().on_challenge(raw)


def probation_reset_executors(node: Node) -> list[ExecutorService]:
    """One CPU executor that claims the configured memory and holds only a probation pool."""
    mp = node.cfg.miner
    ident = load_or_create_key_file(node.data_dir / "executor-0.key")
    facts = cpu_facts(mp.cpu_memory_bytes, ident.peer_id, mp.host_fingerprint or host_fingerprint())
    return [
        ProbationSized(
            ident,
            node.identity.peer_id,
            make_cpu_engine(mp.cpu_memory_bytes),
            facts,
            admission=node.admission,
            assignment=node.agreement.assigned,
        )
    ]


class RelistingMiner(MinerService):
    """Drops its executors from its roster and lists them again after each challenge they
    answered (and every roster interval otherwise), so each validator sees them leave and come
    back before the next one (which used to reset their probation)."""

    relists = 0
    # Validators ignore a miner's rosters closer together than ROSTER_MIN_GAP_S (0.5 s): the
    # re-listing waits a little longer, or it would be ignored and the executor stay gone.
    RELIST_AFTER_S = 0.7

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        answered = 0
        while True:
            self._publish_roster()
            with trio.move_on_after(self.roster_interval_s):
                while sum(e.stats["openings"] for e in self.local.values()) == answered:
                    await trio.sleep(0.05)
            now_answered = sum(e.stats["openings"] for e in self.local.values())
            if now_answered == answered:
                continue
            answered = now_answered
            self._roster_version += 1
            self.gossip.publish(C.TOPIC_ROSTER, Roster(version=self._roster_version, entries=[]))
            await trio.sleep(self.RELIST_AFTER_S)
            self.relists += 1

    def status(self) -> dict:
        return {**super().status(), "relists": self.relists}


# ---- validators ------------------------------------------------------------------------------------

BUSY_LOCK_WINDOWS = (
    ("commit", 86_400_000, 10_000),
    ("openings", 5_000, 3_600_000),
)  # (what, commit window, openings timeout) in ms


class BusyLockValidator(ValidatorService):
    """Sends cheap challenges (T = 1) whose commitment deadline is a day away, or whose openings
    window is an hour, and never reveals: an executor that took one would answer BUSY to everyone
    else until the deadline. Executors must refuse them ('deadline-too-far')."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.lock = {"sent": 0, "refused": 0, "taken": 0}

    def issue(self, e: KnownExecutor, *, co_scheduled: bool = False, round_no: int = 0) -> Any:
        ctx = super().issue(e, co_scheduled=co_scheduled, round_no=round_no)
        if ctx.outcome is not None:
            return ctx
        _, window, openings = BUSY_LOCK_WINDOWS[self.lock["sent"] % len(BUSY_LOCK_WINDOWS)]
        body = dataclasses.replace(
            ctx.body, steps=1, samples=1, commit_deadline_ms=self.wall_ms() + window, openings_timeout_ms=openings
        )
        ctx.body, ctx.raw = body, self.signer.seal(body)
        ctx.commit_timeout = min(ctx.commit_timeout, 10.0)  # its own wait: the lock is the executor's
        self.lock["sent"] += 1
        return ctx

    async def reveal_phase(self, *args: Any) -> None:
        # The executor took it: keep it waiting for a reveal that never comes.
        ctx = args[-1]  # the challenge's session (the validator's reveal_phase(e, session))
        self.lock["taken"] += 1
        ctx.rec.reasons = ["withheld-reveal"]
        ctx.outcome = ChallengeOutcome(ctx.rec)

    def _finish(self, e: KnownExecutor, out: ChallengeOutcome, round_no: int = 0) -> None:
        if any("deadline-too-far" in r for r in out.record.reasons):
            self.lock["refused"] += 1
        super()._finish(e, out, round_no)

    def status(self) -> dict:
        return {**super().status(), "busy_lock": dict(self.lock)}


class _OwnPenaltiesOff:
    """The liar's own gossip, minus the penalties its own lies would make it charge the miners
    (it keeps talking to the miners it lies about)."""

    def __init__(self, gossip: Any):
        self._gossip = gossip

    def penalize(self, peer_id: str, amount: float, reason: str) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gossip, name)


JUNK_VARIANTS = ("junk", "wrong-reveal", "other-openings", "other-commitment")


class JunkEvidenceValidator(ValidatorService):
    """An admitted validator that challenges honestly, then gossips a failing verdict
    (false-proof) about every executor, with evidence that proves nothing: junk bytes, the
    executor's genuine answers with a wrong reveal, or with the openings or the commitment of
    another of its challenges. No honest validator may ban on it; each penalises the sender."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.gossip = _OwnPenaltiesOff(self.gossip)
        self._last: dict[str, ProofBundle] = {}  # executor -> the genuine bundle of its previous challenge
        self.junk = {v: 0 for v in JUNK_VARIANTS}

    def _banned(self, e: KnownExecutor) -> bool:
        return False  # its own "false proof" verdicts must not stop it from lying again

    def _fake_evidence(self, e: KnownExecutor, bundle: bytes) -> tuple[str, bytes]:
        try:
            genuine: ProofBundle = decode_envelope(bundle, expect=ProofBundle).body
        except WireError:
            return "junk", b"junk"
        prev = self._last.get(e.executor_id)
        self._last[e.executor_id] = genuine
        variant = JUNK_VARIANTS[sum(self.junk.values()) % len(JUNK_VARIANTS)]
        if variant == "wrong-reveal":
            return variant, self.signer.seal(dataclasses.replace(genuine, reveal=os.urandom(32)))
        if variant == "other-openings" and prev is not None:
            return variant, self.signer.seal(dataclasses.replace(genuine, openings=prev.openings))
        if variant == "other-commitment" and prev is not None:
            return variant, self.signer.seal(dataclasses.replace(genuine, commitment=prev.commitment))
        return "junk", b"junk"

    def _finish(self, e: KnownExecutor, out: ChallengeOutcome, round_no: int = 0) -> None:
        variant, evidence = self._fake_evidence(e, out.bundle) if out.bundle else ("junk", b"junk")
        self.junk[variant] += 1
        rec = out.record
        rec.passed, rec.reasons = False, ["false-proof:relation"]
        super()._finish(e, ChallengeOutcome(rec, evidence), round_no)

    def status(self) -> dict:
        return {**super().status(), "junk": dict(self.junk)}


# ---- an outsider framing a miner ---------------------------------------------------------------------


class FrameMiner(Answerer):
    """A remote executor nobody asked for: registers with an honest miner and answers falsely
    (re-proves under other keys), so a validator would ban the miner that listed it."""

    def __init__(self) -> None:
        self._v, self._x = Identity.generate(), Identity.generate()

    def prove(self, engine, params, deadline_s=None):
        return engine.prove(dataclasses.replace(params, validator=self._v.public_key, executor=self._x.public_key))


# ---- a copied GPU UUID -------------------------------------------------------------------------------


def uuid_copy_miner(victim_miner: str) -> type[MinerService]:
    """A miner whose executor attests the GPU UUID of a victim's executor, read from the victim's
    gossiped roster (a UUID is public: every roster carries it). ``victim_miner``: the miner
    whose executor to copy; empty: the first other miner whose roster it sees."""

    class UuidCopyMiner(MinerService):
        def __init__(self, *args: Any, **kw: Any):
            super().__init__(*args, **kw)
            self.copied: dict[str, str] = {}
            self.gossip.subscribe(C.TOPIC_ROSTER, self._spy, lambda env: Validation.ACCEPT)

        def _spy(self, env: Envelope) -> None:
            me = self.host.identity.peer_id
            if (
                self.copied
                or env.sender == me
                or not isinstance(env.body, Roster)
                or (victim_miner and env.sender != victim_miner)
            ):
                return
            for raw in env.body.entries:
                try:
                    att = decode_envelope(raw, expect=ExecutorAttestation)
                except WireError:
                    continue
                if att.body.gpu_uuid and att.body.miner_id == env.sender:
                    ex = next(iter(self.local.values()))
                    ex.facts.gpu_uuid = att.body.gpu_uuid
                    self.copied = {"victim": att.sender, "uuid": att.body.gpu_uuid}
                    log.info("copied a victim's GPU UUID", extra={"fields": self.copied})
                    self._changed()
                    return

        def status(self) -> dict:
            return {**super().status(), "copied": dict(self.copied)}

    return UuidCopyMiner


# ---- several ids, one engine ---------------------------------------------------------------------------

SLOW_SYBIL_IDS = 4


class SybilExecutor(ExecutorService):
    """One of several ids on one engine: while a sibling runs a challenge, it answers BUSY naming
    that challenge (the only excuse it has); otherwise it queues on the shared engine."""

    siblings: list[SybilExecutor] = []

    async def on_challenge(self, raw: bytes) -> bytes:
        running = next((a for s in self.siblings if s is not self for a in s._active.values() if not a.opened), None)
        if running is None:
            return await super().on_challenge(raw)
        self.stats["challenges"] += 1
        env, body = self._check_challenge(raw)
        self.stats["busy"] += 1
        return self.signer.seal(
            Busy(challenge_id=body.challenge_id, challenge_hash=challenge_hash(raw), busy_with=running.challenge.raw)
        )


def slow_sybil_executors(node: Node) -> list[ExecutorService]:
    """SLOW_SYBIL_IDS executor ids on one CPU engine, one lock and one memory budget, each
    claiming the whole memory."""
    mp = node.cfg.miner
    host_fp = mp.host_fingerprint or host_fingerprint()
    engine, lock, budget = make_cpu_engine(mp.cpu_memory_bytes), trio.Lock(), PoolBudget(mp.cpu_memory_bytes)
    out: list[SybilExecutor] = []
    for i in range(SLOW_SYBIL_IDS):
        ident = load_or_create_key_file(node.data_dir / f"executor-sybil-{i}.key")
        out.append(
            SybilExecutor(
                ident,
                node.identity.peer_id,
                engine,
                cpu_facts(mp.cpu_memory_bytes, ident.peer_id, host_fp),
                admission=node.admission,
                assignment=node.agreement.assigned,
                lock=lock,
                budget=budget,
            )
        )
    for ex in out:
        ex.siblings = list(out)
    return list(out)
