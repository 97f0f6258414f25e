"""Admitted validators that attack the agreed scores (issue 18), built at the product's seams:
``Agreement.publish_reveal`` / ``round_validators`` / ``beacon`` (through ``NodeParts.agreement_class``),
``ValidatorService._finish`` / ``_round_validators`` / ``run`` and the public gossip and request APIs.

- ``GrindingAgreement`` + ``GrindingValidator`` (beacon-grinder): reveals honestly one round, so a
  commitment of its is on record, and in the next holds its reveal back, reads everyone else's,
  grinds a share that draws the most executors to itself, re-commits with a commit-only message
  for the round before, reveals the ground share, and fails whatever it then judges.
- ``VerdictEraser`` (verdict-eraser): publishes failing verdicts under other validators'
  challenge ids, read from the BUSYs of executors it challenges out of turn and from their verdicts.
  It judges nobody itself: once the network refuses its forgeries it is cut off, and what it would
  then say about the executors drawn for it is a liar's word, which colluders test.
- ``VerdictFlood`` (verdict-flood): every round, many failing verdicts under fresh ids of its own
  for every executor it knows, for made-up executors, and for rounds out of the window. Its verdicts
  for the executors the beacon gave it stay honest: lying there is what colluders test.
- ``colluding_validator`` (colluding-validators:N): N validators that report the opposite of what
  they saw, to sink honest executors and lift failing ones.
- ``EarlyRoundValidator`` (early-round): every round, just before the beacon is public, challenges
  every executor it knows for that round, cheaply, and never reveals: an executor that took one
  would still hold it at the drawn validator's challenge instant and answer it BUSY naming a
  challenge of the round, which is a miss. Executors must refuse ('beacon-unknown').
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable

import trio
import trio.lowlevel

from node.pow.chain import sample_commit
from node.roles import verdicts as R
from node.roles.agreed import new_challenge_id
from node.roles.agreement import Agreement
from node.roles.rounds import DOMAIN, Beacon, assign, secret_commit
from node.roles.validator import ChallengeOutcome, KnownExecutor, ValidatorService
from node.wire import WireError, decode_envelope
from node.wire import constants as C
from node.wire.envelope import Envelope
from node.wire.messages import (
    BeaconReveal,
    Busy,
    Challenge,
    Commitment,
    Reveal,
    Verdict,
)

log = logging.getLogger("gpow.adversary")

GRIND_TRIES = 2000  # shares tried per round (the attacker tried 86,707 in 0.84 s)


def beacon_of(r: int, shares: dict[str, bytes]) -> bytes:
    """The beacon as rounds.Beacon computes it from a round's counted shares."""
    h = hashlib.sha256(DOMAIN + r.to_bytes(8, "big"))
    for vid in sorted(shares):
        h.update(vid.encode() + b"\x00" + shares[vid])
    return h.digest()


def grind_share(
    r: int, others: dict[str, bytes], me: str, executors: list[str], tries: int = GRIND_TRIES
) -> tuple[bytes, bytes, int]:
    """(share, beacon, executors drawn to ``me``): the best of ``tries`` random shares."""
    validators = set(others) | {me}
    best: tuple[bytes, bytes, int] = (b"", b"", -1)
    for _ in range(tries):
        s = os.urandom(32)
        b = beacon_of(r, {**others, me: s})
        n = sum(assign(b, e, validators) == me for e in executors)
        if n > best[2]:
            best = (s, b, n)
    return best


def _verdict(cid: bytes, executor_id: str, miner_id: str, r: int, passed: bool = False) -> Verdict:
    return Verdict(
        challenge_id=cid,
        executor_id=executor_id,
        miner_id=miner_id,
        passed=passed,
        reasons=[R.PASSED] if passed else [R.SLOW_FOR_PROFILE],
        n=0,
        steps=0,
        commit_us=0,
        openings_us=0,
        verify_us=0,
        expected_us=0,
        score_ppm=1_000_000 if passed else 0,
        round=r,
    )


class GroundBeacon(Beacon):
    """Its own view of the beacon: the ground value for the rounds it ground."""

    ground: dict[int, bytes]

    def value(self, r: int, now_ms: int) -> bytes | None:
        if r in self.ground:
            return self.ground[r]
        return super().value(r, now_ms)


class GrindingAgreement(Agreement):
    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.me = self.host.identity.peer_id
        self.beacon: GroundBeacon = GroundBeacon(self.schedule, self.me, since_ms=self.wall_ms())
        self.beacon.ground = {}
        self.ground_validators: dict[int, frozenset[str]] = {}
        self.heard: dict[int, dict[str, bytes]] = {}  # round -> validator -> share heard on gossip
        self.joined: set[int] = set()  # rounds it revealed honestly in
        self.targets: Callable[[], list[str]] = list  # executor ids it knows (set by its validator)
        self.attempts: list[dict] = []
        self._send, self._recv = trio.open_memory_channel[int](16)
        self.gossip.subscribe(C.TOPIC_BEACON, self._hear)

    def _hear(self, env: Envelope) -> None:
        body = env.body
        if (
            isinstance(body, BeaconReveal)
            and body.secret
            and env.sender != self.me
            and self.book.is_admitted(env.sender, self.wall_ms())
        ):
            self.heard.setdefault(body.round, {})[env.sender] = body.secret
            for old in [k for k in self.heard if k < body.round - 4]:
                del self.heard[old]

    def publish_reveal(self, r: int) -> None:
        if r - 1 in self.joined:
            self._send.send_nowait(r)  # its commitment for r is on record: grind r
        else:
            super().publish_reveal(r)
            self.joined.add(r)

    def round_validators(self, r: int) -> frozenset[str]:
        return self.ground_validators.get(r) or super().round_validators(r)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(super().run)
            nursery.start_soon(self._grind_loop)
            task_status.started()

    async def _grind_loop(self) -> None:
        async for r in self._recv:
            at = self.schedule.window_closes_ms(r) - int(self.schedule.window_ms * 0.35)
            await trio.sleep(max(0.0, (at - self.wall_ms()) / 1000))
            others = dict(self.heard.get(r, {}))
            executors = sorted(self.targets())
            if not others or not executors:
                continue
            share, value, n = grind_share(r, others, self.me, executors)
            # One round late, a fresh commitment for r; then the share that matches it.
            self.gossip.publish(C.TOPIC_BEACON, BeaconReveal(round=r - 1, secret=b"", next_commit=secret_commit(share)))
            self.gossip.publish(C.TOPIC_BEACON, BeaconReveal(round=r, secret=share, next_commit=secret_commit(os.urandom(32))))
            self.beacon.ground[r] = value
            self.ground_validators[r] = frozenset(others) | {self.me}
            self.attempts.append({"round": r, "executors_drawn": n, "of": len(executors), "shares_read": len(others)})
            log.warning("ground the beacon", extra={"fields": {"round": r, "drawn": n, "of": len(executors)}})

    def status(self) -> dict:
        out = super().status()
        out["grinder"] = {"attempts": self.attempts[-20:], "rounds_ground": len(self.attempts)}
        return out


class GrindingValidator(ValidatorService):
    """Challenges only in the rounds it ground, and fails everything it judges there."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        if isinstance(self.agreement, GrindingAgreement):
            self.agreement.targets = lambda: list(self.executors)

    def _round_validators(self, r: int) -> frozenset[str]:
        ag = self.agreement
        if isinstance(ag, GrindingAgreement) and r in ag.ground_validators:
            return ag.ground_validators[r]
        return frozenset()  # in its honest rounds it stays quiet

    def _finish(self, e: KnownExecutor, out: ChallengeOutcome, round_no: int = 0) -> None:
        out.record.passed, out.record.reasons = False, [R.SLOW_FOR_PROFILE]
        super()._finish(e, out, round_no)


class VerdictEraser(ValidatorService):
    """Publishes failing verdicts under others' challenge ids; judges nobody itself."""

    ERASE_DELAY_MS = 300  # after the round's challenge instant: the honest challenges are running

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.erasures = {"from_busy": 0, "from_verdicts": 0, "busy_seen": 0, "probes": 0}
        if self.agreement is not None:
            self.agreement.verdict_listeners.append(self._contradict)

    def _round_validators(self, r: int) -> frozenset[str]:
        return frozenset()

    def _erase(self, cid: bytes, executor_id: str, miner_id: str, r: int, passed: bool) -> None:
        self.gossip.publish(C.TOPIC_VERDICT, _verdict(cid, executor_id, miner_id, r, passed))

    def _contradict(self, env: Envelope) -> None:
        v: Verdict = env.body
        if env.sender != self.host.identity.peer_id:
            self.erasures["from_verdicts"] += 1
            self._erase(v.challenge_id, v.executor_id, v.miner_id, v.round, not v.passed)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(super().run)
            if self.agreement is not None and self.agreement.params.enabled:
                nursery.start_soon(self._probe_loop)
            task_status.started()

    async def _probe_loop(self) -> None:
        ag = self.agreement
        assert ag is not None
        me = self.host.identity.peer_id
        r = ag.schedule.round_at(self.wall_ms()) + 1
        while True:
            await self._sleep_until_ms(ag.schedule.window_closes_ms(r) + 1)
            beacon = ag.beacon.value(r, self.wall_ms())
            if beacon is not None:
                await self._sleep_until_ms(ag.schedule.challenge_ms(r, beacon) + self.ERASE_DELAY_MS)
                async with trio.open_nursery() as n:
                    for e in list(self.executors.values()):
                        if ag.assigned(me, e.executor_id, r) is False and self.host.reachable(e.miner_id):
                            n.start_soon(self._probe, e, r)
            r = max(r + 1, ag.schedule.round_at(self.wall_ms()) + 1)

    async def _probe(self, e: KnownExecutor, r: int) -> None:
        """Challenge out of turn: a busy executor names the challenge it runs, id and all."""
        from node.net.errors import NetError

        self.erasures["probes"] += 1
        now, secret = self.wall_ms(), os.urandom(32)
        body = Challenge(
            challenge_id=new_challenge_id(self.host.identity.peer_id),
            executor_id=e.executor_id,
            seed=os.urandom(32),
            n=self.params.n_cpu,
            steps=8,
            b_matrices=self.params.b_matrices,
            samples=8,
            commit_deadline_ms=now + 5_000,
            openings_timeout_ms=5_000,
            sample_commit=sample_commit(secret),
            round=r,
        )
        try:
            resp = await self.host.request(e.miner_id, C.PROTO_CHALLENGE, self.signer.seal(body), timeout=5.0)
            env = decode_envelope(resp, expect=(Commitment, Busy))
            if not isinstance(env.body, Busy):
                # It was free (and the beacon gave it to us after all): finish, so it is free again.
                await self.host.request(
                    e.miner_id,
                    C.PROTO_REVEAL,
                    self.signer.seal(Reveal(challenge_id=body.challenge_id, secret=secret)),
                    timeout=5.0,
                )
                return
            self.erasures["busy_seen"] += 1
            other = decode_envelope(env.body.busy_with, expect=Challenge)
        except (NetError, WireError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        self.erasures["from_busy"] += 1
        self._erase(other.body.challenge_id, e.executor_id, e.miner_id, r, False)

    def status(self) -> dict:
        out = super().status()
        out["eraser"] = dict(self.erasures)
        return out


class VerdictFlood(ValidatorService):
    """Honest on its own assignments; floods verdicts everywhere else."""

    PER_EXECUTOR = 3  # verdicts per known executor and round
    FAKE_EXECUTORS = 20  # made-up executor ids per round, two verdicts each
    OUT_OF_WINDOW = 10  # verdicts per round for rounds far in the past and in the future

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.flooded = 0

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(super().run)
            if self.agreement is not None and self.agreement.params.enabled:
                nursery.start_soon(self._flood_loop)
            task_status.started()

    async def _flood_loop(self) -> None:
        ag = self.agreement
        assert ag is not None
        me = self.host.identity.peer_id
        r = ag.schedule.round_at(self.wall_ms()) + 1
        while True:
            await self._sleep_until_ms(ag.schedule.window_closes_ms(r) + 200)
            out: list[Verdict] = []
            for e in list(self.executors.values()):
                if ag.assigned(me, e.executor_id, r) is False:  # not those the beacon gave it (or may have)
                    out += [_verdict(new_challenge_id(me), e.executor_id, e.miner_id, r) for _ in range(self.PER_EXECUTOR)]
            for _ in range(self.FAKE_EXECUTORS):
                fake = "fake-" + os.urandom(12).hex()
                out += [_verdict(new_challenge_id(me), fake, fake, r) for _ in range(2)]
            for i in range(self.OUT_OF_WINDOW):
                out.append(
                    _verdict(new_challenge_id(me), "fake-" + os.urandom(12).hex(), "m", r + 3 if i % 2 else max(0, r - 10_000))
                )
            for v in out:
                self.gossip.publish(C.TOPIC_VERDICT, v)
                self.flooded += 1
                await trio.lowlevel.checkpoint()
            r = max(r + 1, ag.schedule.round_at(self.wall_ms()) + 1)

    def status(self) -> dict:
        out = super().status()
        out["flood"] = {"published": self.flooded}
        return out


def colluding_validator() -> type[ValidatorService]:
    """Says the opposite of what it saw: fails honest executors, passes failing ones."""

    class ColludingValidator(ValidatorService):
        def _finish(self, e: KnownExecutor, out: ChallengeOutcome, round_no: int = 0) -> None:
            rec = out.record
            rec.passed, rec.reasons = (False, [R.SLOW_FOR_PROFILE]) if rec.passed else (True, [R.PASSED])
            super()._finish(e, out, round_no)

    return ColludingValidator


class EarlyRoundValidator(ValidatorService):
    """Challenges every executor it knows for round r just before r's reveal window closes (no one
    can know r's draw yet), cheaply, with the longest windows executors accept, and never reveals."""

    LEAD_MS = 800  # before the window closes: the beacon is not public anywhere yet

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.early = {"sent": 0, "taken": 0, "refused_beacon_unknown": 0, "refused_other": 0}

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(super().run)
            if self.agreement is not None and self.agreement.params.enabled:
                nursery.start_soon(self._early_loop)
            task_status.started()

    async def _early_loop(self) -> None:
        ag = self.agreement
        assert ag is not None
        r = ag.schedule.round_at(self.wall_ms()) + 1
        while True:
            await self._sleep_until_ms(ag.schedule.window_closes_ms(r) - self.LEAD_MS)
            async with trio.open_nursery() as n:
                for e in list(self.executors.values()):
                    if self.host.reachable(e.miner_id):
                        n.start_soon(self._early, e, r)
            r = max(r + 1, ag.schedule.round_at(self.wall_ms()) + 1)

    async def _early(self, e: KnownExecutor, r: int) -> None:
        from node.net.errors import NetError, RequestFailed

        now = self.wall_ms()
        body = Challenge(
            challenge_id=new_challenge_id(self.host.identity.peer_id),
            executor_id=e.executor_id,
            seed=os.urandom(32),
            n=self.params.n_cpu,
            steps=4,
            b_matrices=self.params.b_matrices,
            samples=4,
            commit_deadline_ms=now + C.MAX_COMMIT_WINDOW_S * 1000 - 1000,
            openings_timeout_ms=C.MAX_OPENINGS_TIMEOUT_S * 1000,
            sample_commit=sample_commit(os.urandom(32)),  # its secret is thrown away: no reveal ever
            round=r,
        )
        self.early["sent"] += 1
        try:
            resp = await self.host.request(e.miner_id, C.PROTO_CHALLENGE, self.signer.seal(body), timeout=10.0)
            decode_envelope(resp, expect=(Commitment, Busy))
            self.early["taken"] += 1
        except RequestFailed as exc:
            key = "refused_beacon_unknown" if R.BEACON_UNKNOWN in (exc.remote_error or str(exc)) else "refused_other"
            self.early[key] += 1
        except (NetError, WireError, trio.BrokenResourceError, trio.ClosedResourceError):
            self.early["refused_other"] += 1

    def status(self) -> dict:
        return {**super().status(), "early_round": dict(self.early)}
