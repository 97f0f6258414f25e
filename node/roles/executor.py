"""The executor: answers challenges with its engine, one at a time, and opens sampled rows.

Used two ways: inside a miner (one per local GPU, or one CPU executor) and as a remote
``executor`` node that registers with its miner. Either way the executor signs its own answers
with its own key, so a miner cannot answer for an executor it does not have.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from node.clock import now_ms
from node.identity import Identity
from node.pow.chain import sample_commit
from node.pow.engine import ChallengeParams, Engine, EngineCapacityError, Trace, pool_bytes
from node.pow.openings import build_openings, encode_openings
from node.roles import verdicts as R
from node.roles.admission import ValidatorSetBook
from node.roles.agreed import issued_by
from node.roles.answerer import Answerer
from node.roles.judging import challenge_hash
from node.wire import WireError, decode_envelope
from node.wire import constants as C
from node.wire.envelope import Envelope, Signer
from node.wire.messages import Busy, Challenge, Commitment, ExecutorAttestation, Openings, Reveal

log = logging.getLogger("gpow.executor")

ATTESTATION_TTL_MS = 10 * 60 * 1000


class ChallengeRefused(Exception):
    """A challenge or reveal this executor will not answer; the message goes back to the sender
    (as ``REFUSAL_PREFIX + "reason: detail"``, the host's error text for a raised exception)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


REFUSAL_PREFIX = "ChallengeRefused: "
_REASON = re.compile(r"[a-z][a-z0-9-]{0,39}")


def remote_refusal(remote_error: str | None) -> tuple[str, str] | None:
    """(reason, detail) of a remote executor's ChallengeRefused, from the error text its host sent
    back; None for anything else. The reason must look like one of ours (short, lowercase): the
    text comes from the executor, not from us."""
    if not remote_error or not remote_error.startswith(REFUSAL_PREFIX):
        return None
    reason, _, detail = remote_error[len(REFUSAL_PREFIX) :].partition(": ")
    if not _REASON.fullmatch(reason):
        return None
    return reason, detail[:200]


@dataclass
class GpuFacts:
    """What an executor claims about its hardware (signed in its attestation)."""

    engine: str
    gpu_model: str
    memory_bytes: int
    gpu_uuid: str
    pci_bus_id: str
    host_fingerprint: str


@dataclass
class _Active:
    challenge: Envelope
    body: Challenge
    params: ChallengeParams
    received_ms: int
    expires_ms: int
    trace: Trace | None = None
    reserved: int = 0
    opened: bool = False
    done: trio.Event = field(default_factory=trio.Event)


# A committed challenge whose reveal never came (its validator died, or the link was cut) is
# dropped this long after the validator itself would have given up, so the executor does not
# answer BUSY for a challenge nobody is waiting on (validators count such a BUSY as stale).
ABANDON_GRACE_MS = 1_000
# Clocks of validators and executors may differ this much without an honest challenge refused.
CLOCK_SKEW_S = 5


class PoolBudget:
    """The device memory an executor's pools may take: reserved before a chain starts, so two
    challenges never hold more than the executor declared (identities that share one engine
    share one budget, and co-scheduled challenges wait on it)."""

    def __init__(self, capacity_bytes: int):
        self.capacity = capacity_bytes
        self.used = 0
        self._changed = trio.Condition()

    async def reserve(self, nbytes: int) -> None:
        if nbytes > self.capacity:
            raise EngineCapacityError(nbytes, self.capacity, 0, what="the executor's declared memory")
        async with self._changed:
            while self.used + nbytes > self.capacity:
                await self._changed.wait()
            self.used += nbytes

    async def release(self, nbytes: int) -> None:
        async with self._changed:
            self.used = max(0, self.used - nbytes)
            self._changed.notify_all()


def host_fingerprint() -> str:
    """A stable, non-secret fingerprint of this host (machine id, else hostname)."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as f:
                return hashlib.sha256(f.read().strip().encode()).hexdigest()[:32]
        except OSError:
            continue
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:32]


class ExecutorService:
    """One executor identity backed by one engine."""

    def __init__(
        self,
        identity: Identity,
        miner_id: str,
        engine: Engine,
        facts: GpuFacts,
        *,
        admission: ValidatorSetBook | None = None,
        answerer: Answerer | None = None,
        wall_ms: Callable[[], int] | None = None,
        lock: trio.Lock | None = None,
        budget: PoolBudget | None = None,
        assignment: Callable[[str, str, int, int], bool | None] | None = None,
        signer: Signer | None = None,  # the node's own, when this executor is the node's identity
    ):
        self.identity = identity
        self.signer = signer or Signer(identity, wall_ms)
        self.miner_id = miner_id
        self.engine = engine
        self.facts = facts
        self.admission = admission or ValidatorSetBook()
        self.answerer = answerer or Answerer()
        self.wall_ms = wall_ms or now_ms
        # One engine runs one chain at a time: identities backed by one engine share this lock
        # (and its memory budget), which is exactly what co-scheduled challenges expose.
        self.lock = lock or trio.Lock()
        self.budget = budget or PoolBudget(facts.memory_bytes)
        # In rounds: does the round's beacon give this executor to that validator (None: unknown)?
        self.assignment = assignment
        self._active: dict[bytes, _Active] = {}
        self._seen: dict[bytes, int] = {}  # challenge id -> expiry (replay protection)
        self.stats = {"challenges": 0, "commitments": 0, "openings": 0, "busy": 0, "refused": 0}

    @property
    def executor_id(self) -> str:
        return self.identity.peer_id

    def attestation(self) -> bytes:
        body = ExecutorAttestation(
            miner_id=self.miner_id,
            engine=self.facts.engine,
            gpu_model=self.facts.gpu_model,
            memory_bytes=self.facts.memory_bytes,
            gpu_uuid=self.facts.gpu_uuid,
            pci_bus_id=self.facts.pci_bus_id,
            host_fingerprint=self.facts.host_fingerprint,
            expires_ms=self.wall_ms() + ATTESTATION_TTL_MS,
        )
        return self.answerer.sign(self.signer, self.answerer.attestation(body))

    def busy(self) -> bool:
        return any(not a.opened for a in self._active.values())

    async def _free(self, a: _Active) -> None:
        if a.trace is not None:
            self.answerer.release(self.engine, a.trace)
            a.trace = None
        if a.reserved:
            await self.budget.release(a.reserved)
            a.reserved = 0

    async def _expire(self, now_ms: int) -> None:
        for cid, a in list(self._active.items()):
            if a.opened or now_ms > a.expires_ms:
                await self._free(a)
                del self._active[cid]
        for cid, exp in list(self._seen.items()):
            if exp < now_ms - 3_600_000:
                del self._seen[cid]

    def addressed_to_me(self, body: Challenge) -> bool:
        return body.executor_id == self.executor_id

    def _check_challenge(self, raw: bytes) -> tuple[Envelope, Challenge]:
        try:
            env = decode_envelope(raw, expect=Challenge, now_ms=self.wall_ms())
        except WireError as exc:
            raise ChallengeRefused(exc.reason, exc.message) from None
        body: Challenge = env.body
        if not self.admission.is_admitted(env.sender, self.wall_ms()):
            self.admission.stats.refused += 1
            raise ChallengeRefused("unadmitted-validator", f"validator {env.sender} is not in the admitted set")
        if not issued_by(body.challenge_id, env.sender):
            # Challenge ids name their issuer, so one validator's id can never stand for another's
            # challenge (in a BUSY, or in verdicts keyed by it).
            raise ChallengeRefused("wrong-issuer", "the challenge id does not carry its sender's tag")
        if not self.addressed_to_me(body):
            raise ChallengeRefused("wrong-executor", f"challenge is addressed to {body.executor_id}, not {self.executor_id}")
        if body.round > 0 and self.assignment is not None:
            assigned = self.assignment(env.sender, self.executor_id, body.round, self.wall_ms())
            if assigned is False:
                raise ChallengeRefused("not-assigned", f"round {body.round}'s beacon does not give this executor to {env.sender}")
            if assigned is None:
                # Taken now, it would keep this executor BUSY when the validator the beacon does
                # draw comes, and a BUSY naming a challenge of the round is a miss: an admitted
                # liar challenging before the draw is public could sink anyone. Not our turn to
                # guess; validators record no verdict for this answer.
                raise ChallengeRefused(
                    R.BEACON_UNKNOWN, f"round {body.round}'s beacon is not known here yet (or rounds are off on this node)"
                )
        if body.challenge_id in self._seen:
            raise ChallengeRefused("replay", f"challenge {body.challenge_id.hex()} was already received")
        now = self.wall_ms()
        if body.commit_deadline_ms <= now:
            raise ChallengeRefused("expired", "the commitment deadline has already passed")
        # Windows beyond the protocol's are refused, not taken: a cheap challenge with a deadline a
        # day away must not keep this executor BUSY (validators would rightly not excuse it).
        if (
            body.commit_deadline_ms - now > (C.MAX_COMMIT_WINDOW_S + CLOCK_SKEW_S) * 1000
            or body.openings_timeout_ms > C.MAX_OPENINGS_TIMEOUT_S * 1000
        ):
            raise ChallengeRefused(
                "deadline-too-far",
                f"commitment or openings window beyond the protocol's {C.MAX_COMMIT_WINDOW_S} s / {C.MAX_OPENINGS_TIMEOUT_S} s",
            )
        return env, body

    async def on_challenge(self, raw: bytes) -> bytes:
        """Prove a challenge and return the signed commitment (or a signed Busy)."""
        self.stats["challenges"] += 1
        try:
            env, body = self._check_challenge(raw)
        except ChallengeRefused:
            self.stats["refused"] += 1
            raise
        now = self.wall_ms()
        await self._expire(now)
        running = next((a for a in self._active.values() if not a.opened), None)
        if running is not None:
            self.stats["busy"] += 1
            return self.signer.seal(
                Busy(challenge_id=body.challenge_id, challenge_hash=challenge_hash(raw), busy_with=running.challenge.raw)
            )
        self._seen[body.challenge_id] = body.commit_deadline_ms
        params = ChallengeParams(
            seed=body.seed,
            validator=env.sender_key,
            executor=self.identity.public_key,
            n=body.n,
            T=body.steps,
            m=body.b_matrices,
        )
        # Kept no longer than the protocol's windows, whatever the challenge's deadlines say: a
        # cheap challenge with a deadline a day away must not keep this executor BUSY for a day.
        commit_by = min(body.commit_deadline_ms, now + C.MAX_COMMIT_WINDOW_S * 1000)
        open_within = min(body.openings_timeout_ms, C.MAX_OPENINGS_TIMEOUT_S * 1000)
        active = _Active(env, body, params, now, commit_by + open_within + ABANDON_GRACE_MS)
        self._active[body.challenge_id] = active
        t0 = time.perf_counter()
        try:
            need = pool_bytes(params.n, params.T)
            await self.budget.reserve(need)
            active.reserved = need
            async with self.lock:
                deadline_s = max(0.0, (commit_by - self.wall_ms()) / 1000)
                trace = await trio.to_thread.run_sync(self._prove, params, deadline_s, abandon_on_cancel=False)
        except EngineCapacityError as exc:
            await self._free(active)
            del self._active[body.challenge_id]
            self.stats["refused"] += 1
            raise ChallengeRefused("capacity", str(exc)) from None
        active.trace = trace
        root, d_final = self.answerer.commitment(trace)
        self.stats["commitments"] += 1
        commitment = Commitment(
            challenge_id=body.challenge_id,
            challenge_hash=challenge_hash(raw),
            root=root,
            d_final=d_final,
            prove_ms=int((time.perf_counter() - t0) * 1000),
        )
        log.info(
            "committed",
            extra={
                "fields": {"challenge": body.challenge_id.hex()[:12], "n": body.n, "T": body.steps, "ms": commitment.prove_ms}
            },
        )
        return self.answerer.sign(self.signer, commitment)

    def _prove(self, params: ChallengeParams, deadline_s: float) -> Trace:
        return self.answerer.prove(self.engine, params, deadline_s)

    async def on_reveal(self, raw: bytes) -> bytes:
        """Check the reveal against the challenge's sample commitment and return signed openings."""
        try:
            env = decode_envelope(raw, expect=Reveal, now_ms=self.wall_ms())
        except WireError as exc:
            raise ChallengeRefused(exc.reason, exc.message) from None
        body: Reveal = env.body
        active = self._active.get(body.challenge_id)
        if (active is None or active.opened) and body.challenge_id in self._seen:
            # Answered already: a validator reveals once, so a second reveal is a replay.
            raise ChallengeRefused("replay", f"challenge {body.challenge_id.hex()} was already opened")
        if active is None or active.trace is None:
            raise ChallengeRefused("unknown-challenge", f"no committed challenge {body.challenge_id.hex()}")
        if env.sender != active.challenge.sender:
            raise ChallengeRefused("wrong-validator", "the reveal is not signed by the challenge's validator")
        if sample_commit(body.secret) != active.body.sample_commit:
            raise ChallengeRefused("bad-reveal", "the reveal does not match the challenge's sample commitment")
        trace = active.trace
        try:
            openings = await trio.to_thread.run_sync(build_openings, trace, body.secret, active.body.samples)
            blob = self.answerer.openings(trace, encode_openings(openings), body.secret, active.body.samples)
        finally:
            # Answered or not, this challenge is over: never report Busy for it afterwards.
            active.opened = True
            await self._free(active)
        self.stats["openings"] += 1
        return self.answerer.sign(self.signer, Openings(challenge_id=body.challenge_id, blob=blob))
