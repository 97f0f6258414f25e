"""The validator: learns executors from rosters, challenges them, verifies, and gossips verdicts.

One challenge, step by step (each step is one ledger transaction, so a crash loses nothing):
issue (fresh id, seed and secret, sized from the claimed memory and the GPU profile) -> send on
the request stream and time the signed commitment -> reveal the secret -> fetch the signed
openings -> verify on the CPU in a worker thread -> store and gossip a signed verdict.
Executors that could share one GPU (one miner's, same host, same GPU UUID) are challenged at the
same instant, so one engine behind two identities must hold two pools at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from node.clock import now_ms
from node.gossip.router import Validation
from node.pow.chain import sample_commit
from node.pow.engine import ChallengeParams
from node.pow.verifier import verify
from node.roles import penalties as P
from node.roles import verdicts as R
from node.roles.agreed import new_challenge_id
from node.roles.agreement import Agreement
from node.roles.executor import REFUSAL_PREFIX
from node.roles.gpu_identity import GpuIdentityRegistry
from node.roles.judging import BusyRules, Refusal, Sizing, check_evidence, judge_busy, size_challenge
from node.roles.ledger import Ledger
from node.roles.params import ValidatorParams
from node.roles.profiles import ProfileBook
from node.roles.rounds import assign
from node.roles.session import BusyAnswer, ChallengeOutcome, ChallengeSession, VerifyJob
from node.roles.stalls import StallLog, StallMonitor
from node.roles.verdicts import VerdictRecord
from node.wire import WireError, decode_envelope
from node.wire import constants as C
from node.wire.envelope import Envelope
from node.wire.messages import (
    Challenge,
    Commitment,
    ExecutorAttestation,
    Ping,
    Pong,
    ProofRequest,
    Roster,
    Verdict,
)

log = logging.getLogger("gpow.validator")

# Verdict reasons that mean the miner delivered a forged, replayed or false signed answer.
FORGED_ANSWERS = frozenset({R.FALSE_PROOF, R.REPLAY, R.WRONG_SIGNER, R.WRONG_EXECUTOR, R.BAD_SIGNATURE})
ROSTER_LISTING_TTL_S = 60.0  # a miner whose roster has not listed an executor for this long no longer counts
# A miner's rosters beyond this rate are ignored (not penalised): they come every few seconds and
# on each change; a burst covers a change right after a periodic one.
ROSTER_BURST = 3.0
ROSTER_RATE_PER_S = 2.0
ATTESTATION_CACHE = 8192  # verified attestation envelopes kept, by the hash of their bytes
OUTBOX_RETRY_S = 2.0  # stored verdicts not yet delivered are published again this often
MAX_NEW_PER_MINER = 32  # executors of one miner still on probation that we take on at once


@dataclass
class KnownExecutor:
    executor_id: str
    miner_id: str
    attestation: ExecutorAttestation
    attestation_raw: bytes
    seen_at: float
    last_challenged: float = -1e18
    challenges: int = 0  # issued by this validator, ever (from the ledger when first learned)
    in_flight: bool = False
    last_verdict: str = ""
    busy_since: float | None = None  # clock time of the first of the BUSY answers in a row, else None


@dataclass
class ValidatorStats:
    issued: int = 0
    verdicts: int = 0
    passed: int = 0
    failed: int = 0
    busy: int = 0
    rosters: int = 0
    rosters_rejected: int = 0
    rosters_stale: int = 0
    rosters_rate_limited: int = 0
    published: int = 0  # verdicts delivered to at least one peer (from the ledger's outbox)
    executors_deferred: int = 0  # new executors of a miner beyond MAX_NEW_PER_MINER on probation
    foreign_verdicts: int = 0
    audits: int = 0
    audit_disagreements: int = 0
    verify_seconds: float = 0.0
    internal_errors: int = 0  # our own bugs while challenging: no verdict was given, nobody was blamed
    timing_stalls: int = 0  # challenges left unjudged: our event loop's stall decided the time
    beacon_unknown: int = 0  # challenges refused by executors that did not know the round's beacon yet
    reasons: dict[str, int] = field(default_factory=dict)


class ValidatorService:
    def __init__(
        self,
        host,
        params: ValidatorParams,
        ledger: Ledger,
        profiles: ProfileBook,
        *,
        gossip,
        data_dir: Path,
        agreement: Agreement | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = trio.current_time,
        wall_ms: Callable[[], int] | None = None,
        stalls: StallLog | None = None,
    ):
        self.host = host
        # Our event loop's stalls, timed on ``clock`` while run() runs: a commitment that may have
        # waited in the socket through one is judged only where the stall cannot change the answer.
        self.stalls = stalls or StallLog()
        self.gossip = gossip  # node.gossip.GossipDriver, built on the host
        self.params = params
        self.ledger = ledger
        self.profiles = profiles
        self.rng = rng or random.SystemRandom()
        self.clock = clock
        self.wall_ms = wall_ms or now_ms
        self.signer = gossip.signer  # one seq counter per identity: gossip indexes (sender, seq)
        self.executors: dict[str, KnownExecutor] = {}
        self.gpu_ids = GpuIdentityRegistry()
        self._verified: dict[bytes, Envelope] = {}
        self._parsed_rosters: dict[bytes, list[tuple[Envelope, ExecutorAttestation]]] = {}
        self._roster_seen: dict[str, tuple[int, float]] = {}  # miner -> (newest roster timestamp, when)
        self._roster_tokens: dict[str, tuple[float, float]] = {}  # miner -> (tokens, last refill)
        # executor -> {miner: when its roster last listed it}; two live listings is a duplicate.
        self.listings: dict[str, dict[str, float]] = {}
        self.stats = ValidatorStats()
        self.proof_dir = Path(data_dir) / "proofs"
        self.proof_dir.mkdir(parents=True, exist_ok=True)
        self._in_flight = 0
        self._audit_buckets: dict[str, tuple[float, float]] = {}  # validator -> (tokens, last refill)
        self._audit_send, self._audit_recv = trio.open_memory_channel[Verdict | tuple](64)
        self.agreement = agreement
        self.rtt: dict[str, float] = {}  # executor -> smoothed round-trip time of signed pings (s)
        gossip.subscribe(C.TOPIC_ROSTER, self._on_roster, self._validate_roster)
        if agreement is not None:
            agreement.verdict_listeners.append(self._on_verdict)
        host.set_handler(C.PROTO_PROOF, self._on_proof_request)

    # ---- rosters -----------------------------------------------------------------------------

    def _parse_roster(self, env: Envelope) -> list[tuple[Envelope, ExecutorAttestation]]:
        """The roster's live entries. Each distinct signed attestation is verified once (a miner
        re-gossips the same entries every few seconds); a roster is parsed once, in validation."""
        roster: Roster = env.body
        now = self.wall_ms()
        out = []
        for raw in roster.entries:
            key = hashlib.sha256(raw).digest()
            att_env = self._verified.get(key)
            if att_env is None:
                att_env = decode_envelope(raw, expect=ExecutorAttestation)
                self._verified[key] = att_env
                if len(self._verified) > ATTESTATION_CACHE:
                    self._verified.pop(next(iter(self._verified)))
            att: ExecutorAttestation = att_env.body
            if att.miner_id != env.sender:
                raise WireError(f"roster entry for {att_env.sender} names miner {att.miner_id}, not the roster's signer")
            if att.expires_ms < now:
                continue
            out.append((att_env, att))
        return out

    def _validate_roster(self, env: Envelope) -> Validation:
        if not isinstance(env.body, Roster):  # any signed type can be published on any topic
            self.stats.rosters_rejected += 1
            return Validation.REJECT
        last = self._roster_seen.get(env.sender)
        if last is not None and env.timestamp_ms < last[0]:
            # An older (replayed) roster of this miner says nothing new: it must not make us forget
            # executors a newer one lists. (The same one again is the seen cache's; another one
            # under the same signature time is left to the router's equivocation check.)
            self.stats.rosters_stale += 1
            return Validation.IGNORE
        if not self._roster_token(env.sender):
            self.stats.rosters_rate_limited += 1  # rosters come every few seconds; faster is a flood
            return Validation.IGNORE
        try:
            self._parsed_rosters[env.raw] = self._parse_roster(env)
        except WireError as exc:
            self.stats.rosters_rejected += 1
            log.warning("roster rejected", extra={"fields": {"miner": env.sender, "error": exc.message}})
            return Validation.REJECT
        while len(self._parsed_rosters) > 16:  # handed to _on_roster right after; never piles up
            self._parsed_rosters.pop(next(iter(self._parsed_rosters)))
        self._roster_seen.pop(env.sender, None)
        self._roster_seen[env.sender] = (env.timestamp_ms, self.clock())
        if len(self._roster_seen) > 4096:  # bounded: any key can sign a roster; forget the longest-quiet miner
            self._roster_seen.pop(next(iter(self._roster_seen)))
        return Validation.ACCEPT

    def _roster_token(self, miner: str) -> bool:
        """A token bucket per miner: ROSTER_BURST rosters at once, ROSTER_RATE_PER_S after that."""
        now = self.clock()
        tokens, last = self._roster_tokens.get(miner, (ROSTER_BURST, now))
        tokens = min(ROSTER_BURST, tokens + (now - last) * ROSTER_RATE_PER_S)
        ok = tokens >= 1.0
        self._roster_tokens[miner] = (tokens - 1.0 if ok else tokens, now)
        if len(self._roster_tokens) > 4096:  # bounded: forget the longest-idle miner
            del self._roster_tokens[min(self._roster_tokens, key=lambda k: self._roster_tokens[k][1])]
        return ok

    def _on_roster(self, env: Envelope) -> None:
        self.stats.rosters += 1
        now = self.clock()
        listed = set()
        parsed = self._parsed_rosters.pop(env.raw, None)
        on_probation = sum(  # once per roster: a flood of new ids must not make this quadratic
            1 for k in self.executors.values() if k.miner_id == env.sender and k.challenges < self.params.probation_challenges
        )
        for att_env, att in parsed if parsed is not None else self._parse_roster(env):
            eid = att_env.sender
            listed.add(eid)
            known = self.executors.get(eid)
            if known is None:
                history = self.ledger.challenges_issued(eid)
                if history < self.params.probation_challenges and on_probation >= MAX_NEW_PER_MINER:
                    # No challenge work for entries a miner cannot back yet: its new ids wait until
                    # earlier ones have shown they are real.
                    self.stats.executors_deferred += 1
                    continue
                log.info(
                    "learned executor", extra={"fields": {"executor": eid[-8:], "miner": env.sender[-8:], "model": att.gpu_model}}
                )
                # First challenge soon but spread out, so a new network does not start in lockstep.
                known = KnownExecutor(
                    eid,
                    env.sender,
                    att,
                    att_env.raw,
                    now,
                    last_challenged=now - self.params.challenge_interval_s + self.rng.uniform(0.5, 2.0),
                    challenges=history,
                )
                self.executors[eid] = known
                on_probation += history < self.params.probation_challenges
            else:
                known.miner_id, known.attestation, known.attestation_raw, known.seen_at = env.sender, att, att_env.raw, now
            self.gpu_ids.observe(eid, env.sender, att.gpu_uuid, att.pci_bus_id, att.host_fingerprint, self.wall_ms())
        for eid in listed:
            self.listings.setdefault(eid, {})[env.sender] = now
        for eid, by_miner in list(self.listings.items()):
            if env.sender in by_miner and eid not in listed:
                del by_miner[env.sender]  # this miner no longer lists it: a clean move, not a duplicate
            for miner, seen in list(by_miner.items()):
                if now - seen > ROSTER_LISTING_TTL_S:
                    del by_miner[miner]  # that miner went quiet
            if not by_miner:
                del self.listings[eid]
        # Executors this miner no longer lists have left it cleanly.
        for eid, known in list(self.executors.items()):
            if known.miner_id == env.sender and eid not in listed and not known.in_flight:
                del self.executors[eid]
                self.gpu_ids.deregister(eid, self.wall_ms())
                log.info("executor left", extra={"fields": {"executor": eid[-8:]}})

    # ---- verdicts from other validators ------------------------------------------------------

    def _on_verdict(self, env: Envelope) -> None:
        if env.sender == self.host.identity.peer_id:
            return
        v: Verdict = env.body
        self.stats.foreign_verdicts += 1
        self.ledger.record_foreign_verdict(
            env.sender, v.challenge_id.hex(), v.executor_id, v.miner_id, v.passed, list(v.reasons), v.score_ppm, self.wall_ms()
        )
        if not self._take_audit_token(env.sender):
            return  # audits are rate-limited per validator: one cannot make us verify without end
        if v.evidence:
            self._queue_audit(("evidence", env.sender, v))
        elif self.params.audit:
            self._queue_audit(("fetch", env.sender, v))

    def _take_audit_token(self, validator_id: str) -> bool:
        """A token bucket per validator: ``audits_per_minute`` each, refilled over a minute."""
        now = self.clock()
        rate = self.params.audits_per_minute / 60.0
        tokens, last = self._audit_buckets.get(validator_id, (float(self.params.audits_per_minute), now))
        tokens = min(float(self.params.audits_per_minute), tokens + (now - last) * rate)
        if tokens < 1.0:
            self._audit_buckets[validator_id] = (tokens, now)
            return False
        self._audit_buckets[validator_id] = (tokens - 1.0, now)
        if len(self._audit_buckets) > 4096:  # bounded: forget the longest-idle validator
            del self._audit_buckets[min(self._audit_buckets, key=lambda k: self._audit_buckets[k][1])]
        return True

    def _queue_audit(self, item: tuple) -> None:
        try:
            self._audit_send.send_nowait(item)
        except trio.WouldBlock:
            pass  # audits are best effort and rate-limited; never let them queue without bound

    async def _audit_loop(self) -> None:
        from node.net.errors import NetError

        async for kind, validator_id, v in self._audit_recv:
            if kind == "fetch":
                try:
                    bundle = await self.host.request(
                        validator_id, C.PROTO_PROOF, self.signer.seal(ProofRequest(challenge_id=v.challenge_id)), timeout=10
                    )
                except NetError as exc:
                    log.info("audit fetch failed", extra={"fields": {"validator": validator_id[-8:], "error": str(exc)}})
                    continue
            else:
                bundle = v.evidence
            self.stats.audits += 1
            res = await trio.to_thread.run_sync(
                lambda: check_evidence(bundle, verdict_sender=validator_id, executor_id=v.executor_id, verdict_passed=v.passed)
            )
            if not res.agrees:
                self.stats.audit_disagreements += 1
                log.warning(
                    "audit disagrees with a verdict",
                    extra={
                        "fields": {
                            "validator": validator_id[-8:],
                            "challenge": v.challenge_id.hex()[:12],
                            "they": v.passed,
                            "detail": res.detail,
                        }
                    },
                )
            if res.detail[0].startswith(("bad-bundle", "bad-reveal")):
                # Evidence that proves nothing (junk, a wrong reveal, parts of other challenges):
                # the sender's fault, never the executor's.
                self.gossip.penalize(validator_id, P.MALFORMED, "verdict evidence: " + res.detail[0][:80])
            elif not res.fraud and any(r.startswith(R.FALSE_PROOF) for r in v.reasons):
                # It says false proof, and its own bundle proves the answers right.
                self.gossip.penalize(validator_id, P.FORGERY, "verdict: false-proof claimed on a valid proof")
            if res.fraud:
                self._ban_for_evidence(v, validator_id)

    def _ban_for_evidence(self, v: Verdict, validator_id: str) -> None:
        """Fraud proven by evidence we checked ourselves bans the executor, and its miner only when
        that miner endorsed it: the miner named by the executor's own signed attestation, in a
        roster signed by that miner (a miner lists remote executors only from its allowlist)."""
        until = self.wall_ms() + self.params.ban_seconds * 1000
        self.ledger.ban(v.executor_id, until, "fraud evidence from " + validator_id)
        known = self.executors.get(v.executor_id)
        if known is not None and known.attestation.miner_id == known.miner_id:
            self.ledger.ban(known.miner_id, until, "fraud evidence from " + validator_id)

    async def _on_proof_request(self, peer_id: str, payload: bytes) -> bytes:
        env = decode_envelope(payload, expect=ProofRequest, now_ms=self.wall_ms())
        path = self.proof_dir / (env.body.challenge_id.hex() + ".bundle")
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise LookupError(f"no proof bundle for challenge {env.body.challenge_id.hex()}") from None

    # ---- scheduling --------------------------------------------------------------------------

    def due_groups(self, now: float) -> list[list[KnownExecutor]]:
        """Executors due for a challenge, in co-scheduling groups, oldest first.

        With co-scheduling on, an executor that is due pulls in every executor that could share
        its hardware: same miner, same host fingerprint, same GPU UUID.
        """
        # Banned executors are not challenged, nor those whose miner we cannot reach yet (a roster
        # can arrive through gossip before peer exchange has told us the miner's address).
        self.forget_unlisted(now)
        banned = {e for e, k in self.executors.items() if self._banned(k) or not self.host.reachable(k.miner_id)}
        due = sorted(
            (
                e
                for e in self.executors.values()
                if not e.in_flight and e.executor_id not in banned and now - e.last_challenged >= self.interval_for(e)
            ),
            key=lambda e: e.last_challenged,
        )
        groups: list[list[KnownExecutor]] = []
        taken: set[str] = set()
        for e in due:
            if e.executor_id in taken:
                continue
            if self.params.co_schedule:
                group = [
                    o
                    for o in self.executors.values()
                    if not o.in_flight
                    and o.executor_id not in banned
                    and o.executor_id not in taken
                    and (
                        o.miner_id == e.miner_id
                        or o.attestation.host_fingerprint == e.attestation.host_fingerprint
                        or (o.attestation.gpu_uuid and o.attestation.gpu_uuid == e.attestation.gpu_uuid)
                    )
                ]
            else:
                group = [e]
            taken.update(o.executor_id for o in group)
            groups.append(group)
        return groups

    def forget_unlisted(self, now: float) -> None:
        """Forget executors that no roster has listed for ROSTER_LISTING_TTL_S (miners re-gossip
        theirs every roster_interval_s): a miner that vanished, or a throwaway identity that
        published one roster, must not keep being challenged, nor be kept in memory, forever."""
        for eid, known in list(self.executors.items()):
            if not known.in_flight and now - known.seen_at > ROSTER_LISTING_TTL_S:
                del self.executors[eid]
                self.gpu_ids.deregister(eid, self.wall_ms())
                log.info("executor forgotten: no roster lists it any more", extra={"fields": {"executor": eid[-8:]}})

    def interval_for(self, e: KnownExecutor) -> float:
        """New executors are on probation: half as often (and smaller, see size_challenge), so a
        swarm of fake identities cannot make a validator burn its CPU on them."""
        probation = e.challenges < self.params.probation_challenges
        return self.params.challenge_interval_s * (2.0 if probation else 1.0)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        for cid in self.ledger.resume(self.wall_ms()):
            log.warning("challenge in flight at the last stop timed out", extra={"fields": {"challenge": cid[:12]}})
        monitor = StallMonitor(self.stalls, self.clock)
        trio.lowlevel.add_instrument(monitor)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._audit_loop)
                nursery.start_soon(self._ping_loop)
                nursery.start_soon(self._outbox_loop)
                task_status.started()
                if self.agreement is not None and self.agreement.params.enabled:
                    await self._run_rounds(nursery)
                else:
                    await self._run_intervals(nursery)
        finally:
            trio.lowlevel.remove_instrument(monitor)

    def _banned(self, e: KnownExecutor) -> bool:
        now = self.wall_ms()
        return self.ledger.is_banned(e.executor_id, now) or self.ledger.is_banned(e.miner_id, now)

    async def _run_intervals(self, nursery: trio.Nursery) -> None:
        """Without rounds: each executor about every challenge_interval_s, co-scheduled groups."""
        while True:
            for group in self.due_groups(self.clock()):
                if self._in_flight >= self.params.concurrency:
                    break
                self._start_group(nursery, group, co_scheduled=len(group) > 1)
            await trio.sleep(0.2)

    def _start_group(self, nursery: trio.Nursery, group: list[KnownExecutor], *, co_scheduled: bool, round_no: int = 0) -> None:
        self._in_flight += 1
        for e in group:
            e.in_flight = True
        nursery.start_soon(self._run_group, group, co_scheduled, round_no)

    async def _sleep_until_ms(self, wall_ms: int) -> None:
        delay = (wall_ms - self.wall_ms()) / 1000
        if delay > 0:
            await trio.sleep(delay)

    def _round_validators(self, r: int) -> frozenset[str]:
        """The validators among which round ``r``'s executors are shared out."""
        assert self.agreement is not None
        return self.agreement.round_validators(r)

    async def _run_rounds(self, nursery: trio.Nursery) -> None:
        """In rounds: reveal our beacon share at the round's start; once the window closes, the
        beacon fixes the instant and the assignment; challenge all our executors at that instant."""
        ag = self.agreement
        assert ag is not None
        sched, me = ag.schedule, self.host.identity.peer_id
        r = sched.round_at(self.wall_ms()) + 1
        while True:
            await self._sleep_until_ms(sched.start_ms(r))
            if ag.book.is_admitted(me, self.wall_ms()):
                ag.publish_reveal(r)  # outside the set our share would only be rejected (and penalised)
            await self._sleep_until_ms(sched.window_closes_ms(r))
            beacon = ag.beacon.value(r, self.wall_ms())
            assert beacon is not None
            validators = self._round_validators(r)
            await self._sleep_until_ms(sched.challenge_ms(r, beacon))
            self.forget_unlisted(self.clock())
            mine = [
                e
                for e in self.executors.values()
                if not e.in_flight
                and not self._banned(e)
                and self.host.reachable(e.miner_id)
                and assign(beacon, e.executor_id, validators) == me
            ]
            log.info(
                "round",
                extra={"fields": {"round": r, "validators": len(validators), "mine": len(mine), "known": len(self.executors)}},
            )
            if mine:
                self._start_group(nursery, mine, co_scheduled=True, round_no=r)
            r = max(r + 1, sched.round_at(self.wall_ms()) + 1)

    async def _ping_loop(self) -> None:
        """Measure the round trip to each executor with signed pings through its miner, the path a
        challenge takes (the commit timer includes it; a fixed margin is allowed for it)."""
        warned: set[str] = set()
        while True:
            for e in list(self.executors.values()):
                if not self.host.reachable(e.miner_id):
                    continue
                nonce = int.from_bytes(os.urandom(7), "big")
                t0 = self.clock()
                ping = self.signer.seal(Ping(nonce=nonce, executor_id=e.executor_id))
                failure, raw = await self._request(e.miner_id, C.PROTO_PING, ping, 5.0)
                if failure is not None:
                    continue
                try:
                    env = decode_envelope(raw, expect=Pong, now_ms=self.wall_ms())
                except WireError:
                    continue
                if env.sender != e.executor_id or env.body.nonce != nonce:
                    continue
                rtt = self.clock() - t0
                eid = e.executor_id
                self.rtt[eid] = rtt if eid not in self.rtt else 0.8 * self.rtt[eid] + 0.2 * rtt
                if self.rtt[eid] > self.params.rtt_margin_s and eid not in warned:
                    warned.add(eid)
                    log.warning(
                        "round trip to an executor exceeds the configured margin: its timings are unfair to it",
                        extra={
                            "fields": {
                                "executor": eid[-8:],
                                "rtt_s": round(self.rtt[eid], 3),
                                "margin_s": self.params.rtt_margin_s,
                            }
                        },
                    )
            await trio.sleep(5.0 if set(self.executors) <= set(self.rtt) else 1.0)  # new executors: soon

    async def _run_group(self, group: list[KnownExecutor], co_scheduled: bool, round_no: int = 0) -> None:
        """Challenge a group at the same instant; reveal only once every commitment is in.

        Holding the reveals back is what makes a shared engine visible without any timing: an
        engine that serves two identities cannot free the first pool (it needs the reveal to
        answer its openings) before it has committed the second, so one of the two misses its
        deadline or its openings, whatever the machine's load.
        """
        busy: set[str] = set()
        try:
            runs = [(e, self.issue(e, co_scheduled=co_scheduled, round_no=round_no)) for e in group]
            async with trio.open_nursery() as nursery:
                for e, ctx in runs:
                    nursery.start_soon(self.commit_phase, e, ctx)
            async with trio.open_nursery() as nursery:
                for e, ctx in runs:
                    if ctx.outcome is None:
                        nursery.start_soon(self.reveal_phase, e, ctx)
            for e, ctx in runs:
                if ctx.outcome is not None and ctx.outcome.busy:
                    busy.add(e.executor_id)
                elif ctx.outcome is not None and ctx.outcome.unjudged:
                    busy.add(e.executor_id)  # asked again soon, as after a BUSY; never scored for it
                    self._unjudged(ctx, ctx.outcome.unjudged)
                elif ctx.outcome is not None:
                    self._finish(e, ctx.outcome, round_no)
            self._settle_gpu_uuids([ctx for _, ctx in runs])
        except Exception:
            # Our bug, not the executors': no verdict for this group, a traceback for us.
            self.stats.internal_errors += 1
            log.exception(
                "internal error while challenging; no verdict given",
                extra={"fields": {"executors": [e.executor_id[-8:] for e in group]}},
            )
        finally:
            self._in_flight -= 1
            now = self.clock()
            for e in group:
                e.in_flight = False
                # A busy executor is asked again after half an interval, never scored for it.
                e.last_challenged = now - self.params.challenge_interval_s / 2 if e.executor_id in busy else now

    def _verdict_message(self, rec: VerdictRecord, out: ChallengeOutcome, round_no: int) -> Verdict:
        # Signed before it is stored (one transaction stores it and queues it), so score_ppm is the
        # executor's score here before this verdict.
        score = self.ledger.executor_score(rec.executor_id)
        return Verdict(
            challenge_id=bytes.fromhex(rec.challenge_id),
            executor_id=rec.executor_id,
            miner_id=rec.miner_id,
            passed=rec.passed,
            reasons=rec.reasons[:32],
            n=rec.n,
            steps=rec.T,
            commit_us=int((rec.commit_seconds or 0) * 1e6),
            openings_us=int((rec.openings_seconds or 0) * 1e6),
            verify_us=int((rec.verify_seconds or 0) * 1e6),
            expected_us=int((rec.expected_seconds or 0) * 1e6),
            score_ppm=max(0, min(1_000_000, int(score * 1e6))),
            round=round_no,
            evidence=out.bundle
            if (not rec.passed and out.bundle and len(out.bundle) < C.DEFAULT_MAX_MESSAGE_BYTES // 2)
            else b"",
        )

    def _publish_outbox(self) -> None:
        """Publish queued verdicts while some peer is subscribed; the rest wait in the ledger."""
        if self.gossip.topic_peer_count(C.TOPIC_VERDICT) == 0:
            return
        for cid, topic, data in self.ledger.unpublished():
            self.gossip.publish_raw(topic, data)
            self.ledger.mark_published(cid, self.wall_ms())
            self.stats.published += 1

    async def _outbox_loop(self) -> None:
        while True:
            await trio.sleep(OUTBOX_RETRY_S)
            self._publish_outbox()

    def _settle_gpu_uuids(self, ctxs: list[ChallengeSession]) -> None:
        """Contenders for one GPU UUID are challenged together; one that answered right and in
        time (a duplicate-gpu reason aside) takes the UUID from a holder that did not."""
        ok_kinds = {R.PASSED, R.DUPLICATE_GPU, R.NO_CREDIT}
        done = [c for c in ctxs if c.outcome is not None and not (c.outcome.busy or c.outcome.unjudged)]
        passed = {
            c.executor_id
            for c in done
            if c.outcome is not None and all(R.reason_kind(r) in ok_kinds for r in c.outcome.record.reasons)
        }
        failed = {c.executor_id for c in done} - passed
        for uuid, winner in self.gpu_ids.settle(passed, failed):
            log.warning(
                "GPU UUID moves to the executor that proved it", extra={"fields": {"uuid": uuid, "executor": winner[-8:]}}
            )

    def _unjudged(self, ctx: ChallengeSession, why: str) -> None:
        """A challenge that ends without a verdict for a reason that is nobody's fault."""
        self.ledger.mark_unjudged(ctx.rec.challenge_id, self.wall_ms())
        if why == R.BEACON_UNKNOWN:
            self.stats.beacon_unknown += 1
            log.info(
                "the executor does not know this round's beacon yet: no verdict",
                extra={"fields": {"executor": ctx.executor_id[-8:], "round": ctx.body.round}},
            )
            return
        self.stats.timing_stalls += 1
        log.warning(
            "our event loop stalled while a commitment was due: no verdict (the stall, not the executor, decided the time)",
            extra={
                "fields": {
                    "executor": ctx.executor_id[-8:],
                    "commit_s": round(ctx.rec.commit_seconds or 0.0, 3),
                    "stalled_s": round(ctx.commit_stalled_s, 3),
                    "expected_s": round(ctx.rec.expected_seconds or 0.0, 3),
                }
            },
        )

    def _finish(self, e: KnownExecutor, out: ChallengeOutcome, round_no: int = 0) -> None:
        rec = out.record
        e.busy_since = None  # answered (or failed): any streak of BUSY answers is over
        verdict = self._verdict_message(rec, out, round_no)
        raw = self.signer.seal(verdict)
        self.ledger.record_verdict(rec, outbox=(C.TOPIC_VERDICT, raw))
        if out.bundle:
            self._store_bundle(rec.challenge_id, out.bundle)
        e.last_verdict = "pass" if rec.passed else ",".join(rec.reasons)
        self.stats.verdicts += 1
        if rec.passed:
            self.stats.passed += 1
        else:
            self.stats.failed += 1
            if any(r.startswith(R.FALSE_PROOF) for r in rec.reasons):
                until = self.wall_ms() + self.params.ban_seconds * 1000
                self.ledger.ban(e.executor_id, until, "false proof")
                self.ledger.ban(e.miner_id, until, "false proof by one of its executors")
        for r in rec.reasons:
            self.stats.reasons[r] = self.stats.reasons.get(r, 0) + 1
        forged = sorted({R.reason_kind(r) for r in rec.reasons} & FORGED_ANSWERS)
        if forged:
            # A signed answer that is forged, replayed or false: the miner that delivered it pays in
            # gossip score too (the ban above keeps it from being challenged; this keeps it off the mesh).
            self.gossip.penalize(e.miner_id, P.FORGERY, "answer: " + ",".join(forged))
        self._publish_outbox()
        if self.agreement is not None and self.agreement.book.is_admitted(self.host.identity.peer_id, self.wall_ms()):
            self.agreement.add_verdict(self.host.identity.peer_id, verdict)
        # A failed verdict is what an operator watches for: WARNING, with the reason.
        log.log(
            logging.INFO if rec.passed else logging.WARNING,
            "verdict" if rec.passed else "verdict: FAILED",
            extra={
                "fields": {
                    "executor": rec.executor_id[-8:],
                    "passed": rec.passed,
                    "reasons": ",".join(rec.reasons),
                    "commit_s": round(rec.commit_seconds or 0, 3),
                    "expected_s": round(rec.expected_seconds or 0, 3),
                }
            },
        )

    def _store_bundle(self, cid_hex: str, bundle: bytes) -> None:
        path = self.proof_dir / (cid_hex + ".bundle")
        path.write_bytes(bundle)
        files = sorted(self.proof_dir.glob("*.bundle"), key=lambda p: p.stat().st_mtime)
        for old in files[:-500]:  # keep the proof store bounded
            old.unlink(missing_ok=True)

    # ---- one challenge -------------------------------------------------------------------------

    def size_challenge(self, e: KnownExecutor) -> Sizing | Refusal:
        """The challenge for an executor, from its signed claims and its history here (judging.py)."""
        return size_challenge(e.attestation, history=e.challenges, profiles=self.profiles, params=self.params)

    async def challenge(self, e: KnownExecutor, *, co_scheduled: bool = False) -> ChallengeOutcome:
        """Run one challenge to its outcome (both phases), without recording it."""
        ctx = self.issue(e, co_scheduled=co_scheduled)
        await self.commit_phase(e, ctx)
        if ctx.outcome is None:
            await self.reveal_phase(e, ctx)
        assert ctx.outcome is not None
        return ctx.outcome

    def issue(self, e: KnownExecutor, *, co_scheduled: bool = False, round_no: int = 0) -> ChallengeSession:
        """Size, sign and record a fresh challenge (fresh id, seed and secret). A claim that cannot
        be judged as made is recorded as refused, with its outcome set: nothing is sent."""
        sizing = self.size_challenge(e)
        m = self.params.b_matrices
        if isinstance(sizing, Refusal):
            n, steps, k, expected, commit_timeout = 0, 0, 0, None, 0.0
        else:
            n, steps, k, expected, commit_timeout = sizing.n, sizing.T, sizing.k, sizing.expected_s, sizing.commit_timeout_s
        cid, seed, secret = new_challenge_id(self.host.identity.peer_id), os.urandom(32), os.urandom(32)
        now_ms = self.wall_ms()
        body = Challenge(
            challenge_id=cid,
            executor_id=e.executor_id,
            seed=seed,
            n=max(n, 64),
            steps=max(steps, 1),
            b_matrices=m,
            samples=max(k, 1),
            commit_deadline_ms=now_ms + int(commit_timeout * 1000),
            openings_timeout_ms=int(self.params.openings_timeout_s * 1000),
            sample_commit=sample_commit(secret),
            round=round_no,
        )
        raw = self.signer.seal(body)
        rec = VerdictRecord(
            challenge_id=cid.hex(),
            validator_id=self.host.identity.peer_id,
            executor_id=e.executor_id,
            miner_id=e.miner_id,
            passed=False,
            reasons=[],
            n=n,
            T=steps,
            m=m,
            k=k,
            commit_seconds=None,
            openings_seconds=None,
            verify_seconds=None,
            expected_seconds=expected,
            performance_factor=0.0,
            created_ms=now_ms,
        )
        self.ledger.record_challenge(cid.hex(), e.executor_id, e.miner_id, raw, secret, now_ms, body.commit_deadline_ms)
        self.stats.issued += 1
        e.challenges += 1
        params = ChallengeParams(
            seed=seed, validator=self.host.identity.public_key, executor=self.host_key(e.executor_id), n=body.n, T=body.steps, m=m
        )
        session = ChallengeSession(
            e.executor_id,
            body,
            raw,
            secret,
            params,
            rec,
            commit_timeout,
            co_scheduled,
            sizing if isinstance(sizing, Sizing) else None,
        )
        if isinstance(sizing, Refusal):
            session.refuse(sizing.reason)
        return session

    def _is_known_executor(self, peer_id: str) -> bool:
        return peer_id in self.executors

    async def commit_phase(self, e: KnownExecutor, ctx: ChallengeSession) -> None:
        """Send the challenge and time the signed commitment (the session judges the answer)."""
        if ctx.outcome is not None:  # refused at issue: nothing to send
            return
        failure, resp = await self._request(
            e.miner_id, C.PROTO_CHALLENGE, ctx.raw, ctx.commit_timeout, on_sent=lambda: ctx.sent(self.clock())
        )
        now = self.clock()
        if failure is not None:
            ctx.on_commit_failure(failure, now, self.stalls.trailing(now), self.params)
            return
        step = ctx.on_commit_response(resp, now, self._is_known_executor, self.stalls.trailing(now))
        if isinstance(step, BusyAnswer):
            ctx.busy_judged(self._judge_busy(e, step.envelope, ctx))
            if ctx.outcome is not None and ctx.outcome.busy:
                self.stats.busy += 1
                self.ledger.mark_busy(ctx.rec.challenge_id, self.wall_ms())
            return
        self._note_busy(e, False)
        if step is None:
            assert ctx.commitment is not None
            cm: Commitment = ctx.commitment.body
            self.ledger.record_commitment(ctx.rec.challenge_id, cm.root, cm.d_final, self.wall_ms())

    async def reveal_phase(self, e: KnownExecutor, ctx: ChallengeSession) -> None:
        """Reveal the secret, fetch the openings before their deadline, verify, judge the time."""
        reveal_raw = ctx.reveal(self.signer, self.clock())
        self.ledger.record_reveal(ctx.rec.challenge_id, self.wall_ms())
        failure, op_raw = await self._request(
            e.miner_id,
            C.PROTO_REVEAL,
            reveal_raw,
            self.params.openings_timeout_s,
            late=R.LATE_OPENINGS,
            missing=R.MISSING_OPENINGS,
            on_sent=lambda: ctx.reveal_sent(self.clock()),
        )
        if failure is not None:
            ctx.on_openings_failure(failure, self.clock())
            return
        step = ctx.on_openings(op_raw, self.clock(), self._is_known_executor, self.signer)
        if not isinstance(step, VerifyJob):
            return
        self.ledger.record_openings(ctx.rec.challenge_id, hashlib.sha256(op_raw).hexdigest(), len(op_raw), self.wall_ms())
        t0 = time.perf_counter()
        args = ctx.verify_args(step)
        result = await trio.to_thread.run_sync(lambda: verify(*args))
        seconds = time.perf_counter() - t0
        self.stats.verify_seconds += seconds
        ctx.on_verified(
            result,
            seconds,
            step,
            self.params,
            duplicate_gpu=bool(self.gpu_ids.duplicates_of(e.executor_id)),
            listed_twice=bool(self.listed_twice(e.executor_id)),
        )

    def listed_twice(self, executor_id: str) -> set[str]:
        """The miners listing this executor, when more than one does (else empty)."""
        by_miner = self.listings.get(executor_id, {})
        return set(by_miner) if len(by_miner) > 1 else set()

    def host_key(self, peer_id: str) -> bytes:
        from node.identity import public_key_from_peer_id

        return public_key_from_peer_id(peer_id)

    def _note_busy(self, e: KnownExecutor, busy: bool) -> None:
        if not busy:
            e.busy_since = None
        elif e.busy_since is None:
            e.busy_since = self.clock()

    def _judge_busy(self, e: KnownExecutor, env: Envelope, ctx: ChallengeSession) -> str | None:
        """None when the BUSY is excused (the challenge it names is genuinely in flight,
        judging.judge_busy), else the failing reason."""
        self._note_busy(e, True)
        book = self.agreement.book if self.agreement is not None else None
        rules = BusyRules(
            round=ctx.body.round,
            max_commit_s=C.MAX_COMMIT_WINDOW_S,
            max_openings_s=C.MAX_OPENINGS_TIMEOUT_S,
            max_busy_s=2 * (ctx.commit_timeout + self.params.openings_timeout_s),
        )
        assert e.busy_since is not None
        return judge_busy(
            env,
            ctx.raw,
            e.executor_id,
            now_ms=self.wall_ms(),
            admitted=book.is_admitted if book is not None else (lambda peer, now: True),
            busy_for_s=self.clock() - e.busy_since,
            rules=rules,
        )

    async def _request(
        self,
        peer: str,
        proto: str,
        payload: bytes,
        timeout: float,
        *,
        late: str = R.LATE_COMMITMENT,
        missing: str = R.MISSING_COMMITMENT,
        on_sent: Callable[[], None] | None = None,
    ) -> tuple[str | None, bytes]:
        from node.net.errors import NetError, RequestFailed, RequestTimeout

        # Only what the network says about the peer becomes a reason against it. Any other
        # exception is our own bug: it propagates, is logged with its traceback, and the
        # challenge ends without a verdict (h11's split of local and remote errors).
        try:
            return None, await self.host.request(peer, proto, payload, timeout=timeout, on_sent=on_sent)
        except RequestTimeout:
            return late, b""
        except RequestFailed as exc:
            # The remote's own refusal ("ChallengeRefused: capacity: ...") names the reason best;
            # the reason code leads, without the exception's class name.
            text = exc.remote_error or str(exc)
            text = text.removeprefix(REFUSAL_PREFIX)
            return f"{missing}:{text[:80]}", b""
        except (NetError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:  # link lost mid-request
            return f"{missing}:{type(exc).__name__}", b""

    def status(self) -> dict:
        now = self.clock()
        return {
            "executors": {
                eid: {
                    "miner": e.miner_id,
                    "model": e.attestation.gpu_model,
                    "engine": e.attestation.engine,
                    "memory_bytes": e.attestation.memory_bytes,
                    "challenges": e.challenges,
                    "in_flight": e.in_flight,
                    "last_verdict": e.last_verdict,
                    "next_in_s": round(max(0.0, e.last_challenged + self.params.challenge_interval_s - now), 1),
                    "duplicate_of": sorted(self.gpu_ids.duplicates_of(eid)),
                    "listed_by": sorted(self.listed_twice(eid)),
                }
                for eid, e in self.executors.items()
            },
            "in_flight_groups": self._in_flight,
            "rtt_s": {e[-8:]: round(v, 4) for e, v in self.rtt.items()},
            "stats": {k: v for k, v in vars(self.stats).items()},
            "loop_stalls": {
                "count": self.stalls.count,
                "total_s": round(self.stalls.total_s, 3),
                "longest_s": round(self.stalls.longest_s, 3),
            },
        }
