"""The miner: owns executors, routes challenges to them, and gossips their signed roster.

Local executors (one per GPU, or CPU executors with ``engine = "cpu"``) run in this process. Remote
executors are ``executor`` nodes that register over an authenticated stream and keep a heartbeat;
they are dropped when the heartbeat stops. Challenges and reveals arrive from validators on the
request/response streams and are routed by the executor id they name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from node.clock import now_ms
from node.net.errors import RequestFailed
from node.roles import penalties as P
from node.roles.executor import ChallengeRefused, ExecutorService, remote_refusal
from node.wire import WireError, decode_envelope
from node.wire import constants as C
from node.wire.messages import Challenge, Deregister, ExecutorAttestation, Heartbeat, Ping, Pong, Register, Reveal, Roster

log = logging.getLogger("gpow.miner")


@dataclass
class RemoteExecutor:
    executor_id: str
    attestation: bytes
    last_heartbeat: float
    busy: bool = False


class MinerService:
    def __init__(
        self,
        host,
        local: list[ExecutorService],
        *,
        gossip,
        roster_interval_s: float,
        heartbeat_timeout_s: float,
        allowed_remote: frozenset[str] | list[str] = frozenset(),
        clock: Callable[[], float] = trio.current_time,
        wall_ms: Callable[[], int] | None = None,
    ):
        self.host = host
        self.gossip = gossip  # node.gossip.GossipDriver, built on the host
        self.local = {e.executor_id: e for e in local}
        self.allowed_remote = frozenset(allowed_remote)
        self.remote: dict[str, RemoteExecutor] = {}
        self.roster_interval_s = roster_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.clock = clock
        self.wall_ms = wall_ms or now_ms
        self._routes: dict[bytes, str] = {}  # challenge id -> executor id, for the reveal
        self._roster_version = 0
        self._roster_changed = trio.Event()
        self.stats = {"challenges_routed": 0, "reveals_routed": 0, "registered": 0, "dropped": 0, "refused": 0}
        host.set_handler(C.PROTO_CHALLENGE, self._on_challenge)
        host.set_handler(C.PROTO_REVEAL, self._on_reveal)
        host.set_handler(C.PROTO_REGISTER, self._on_register)
        host.set_handler(C.PROTO_PING, self._on_ping)
        self.signer = gossip.signer  # one seq counter per identity: gossip indexes (sender, seq)

    async def _on_ping(self, peer_id: str, payload: bytes) -> bytes:
        """Answer a validator's signed ping with a signed pong: its round-trip measurement."""
        try:
            env = decode_envelope(payload, expect=Ping, now_ms=self.wall_ms())
        except WireError as exc:
            self.gossip.penalize(peer_id, P.SLIP, f"ping: {exc.reason}")
            raise
        eid = env.body.executor_id
        if eid in self.local:
            return self.local[eid].signer.seal(Pong(nonce=env.body.nonce))
        if eid in self.remote:
            return await self.host.request(eid, C.PROTO_PING, payload, timeout=5.0)
        return self.signer.seal(Pong(nonce=env.body.nonce))

    # ---- roster ------------------------------------------------------------------------------

    def roster_entries(self) -> list[bytes]:
        return [e.attestation() for e in self.local.values()] + [r.attestation for r in self.remote.values()]

    def _publish_roster(self) -> None:
        self._roster_version += 1
        self.gossip.publish(C.TOPIC_ROSTER, Roster(version=self._roster_version, entries=self.roster_entries()))

    def _changed(self) -> None:
        self._roster_changed.set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self._drop_silent_executors()
            self._publish_roster()
            with trio.move_on_after(self.roster_interval_s):
                await self._roster_changed.wait()
                await trio.sleep(0.05)  # coalesce bursts of changes into one roster
            self._roster_changed = trio.Event()

    def _drop_silent_executors(self) -> None:
        now = self.clock()
        for eid, r in list(self.remote.items()):
            if now - r.last_heartbeat > self.heartbeat_timeout_s:
                log.warning("dropping remote executor after missed heartbeats", extra={"fields": {"executor": eid}})
                del self.remote[eid]
                self.stats["dropped"] += 1

    # ---- remote executor registration -----------------------------------------------------------

    async def _on_register(self, peer_id: str, payload: bytes) -> bytes:
        try:
            env = decode_envelope(payload, expect=(Register, Heartbeat, Deregister), now_ms=self.wall_ms())
        except WireError as exc:
            self.gossip.penalize(peer_id, P.for_refusal(exc.reason), f"register: {exc.reason}")
            raise ChallengeRefused(exc.reason, exc.message) from None
        if env.sender != peer_id:
            self.gossip.penalize(peer_id, P.IMPERSONATION, "register for another identity")
            raise ChallengeRefused("wrong-signer", "an executor registers itself, over its own connection")
        body = env.body
        if isinstance(body, Register):
            if peer_id not in self.allowed_remote:
                # Listing an executor endorses it: a false proof by it bans this miner too. So only
                # executors the operator named may register (anyone else could frame the miner).
                self.stats["refused"] += 1
                log.warning(
                    "remote executor refused: not in [miner].remote_executors",
                    extra={
                        "fields": {"executor": peer_id, "hint": "add its peer id to [miner].remote_executors or --allow-executor"}
                    },
                )
                raise ChallengeRefused("not-allowed", "this miner accepts only the remote executors its operator listed")
            try:
                att = decode_envelope(body.attestation, expect=ExecutorAttestation)
            except WireError as exc:
                raise ChallengeRefused(exc.reason, f"attestation: {exc.message}") from None
            if att.sender != peer_id or att.body.miner_id != self.host.identity.peer_id:
                raise ChallengeRefused("bad-attestation", "attestation must be signed by the executor and name this miner")
            new = peer_id not in self.remote
            self.remote[peer_id] = RemoteExecutor(peer_id, body.attestation, self.clock())
            if new:
                self.stats["registered"] += 1
                log.info("remote executor registered", extra={"fields": {"executor": peer_id, "model": att.body.gpu_model}})
            self._changed()
        elif isinstance(body, Heartbeat):
            r = self.remote.get(peer_id)
            if r is None:
                raise ChallengeRefused("not-registered", "register before sending heartbeats")
            r.last_heartbeat = self.clock()
            r.busy = body.busy
        else:
            if self.remote.pop(peer_id, None) is not None:
                log.info("remote executor deregistered", extra={"fields": {"executor": peer_id, "reason": body.reason}})
                self._changed()
        return b""

    def _penalize_refusal(self, peer_id: str, what: str, reason: str) -> None:
        """An executor's refusal that the sender is to blame for (a replay, an unadmitted or wrong
        validator) costs the sender score; its own state (capacity, expired) costs nothing."""
        amount = P.for_refusal(reason)
        if amount > 0:
            self.gossip.penalize(peer_id, amount, f"{what}: {reason}")

    # ---- routing -----------------------------------------------------------------------------

    def _route(self, executor_id: str) -> str:
        """The executor that answers a challenge addressed to ``executor_id``: that one."""
        return executor_id

    async def _on_challenge(self, peer_id: str, payload: bytes) -> bytes:
        try:
            env = decode_envelope(payload, expect=Challenge, now_ms=self.wall_ms())
        except WireError as exc:
            self.gossip.penalize(peer_id, P.for_refusal(exc.reason), f"challenge: {exc.reason}")
            self.stats["refused"] += 1
            raise ChallengeRefused(exc.reason, exc.message) from None
        body: Challenge = env.body
        target = self._route(body.executor_id)
        self._routes[body.challenge_id] = target
        if len(self._routes) > 10_000:
            self._routes.pop(next(iter(self._routes)))
        self.stats["challenges_routed"] += 1
        if target in self.local:
            try:
                return await self.local[target].on_challenge(payload)
            except ChallengeRefused as exc:
                self._penalize_refusal(peer_id, "challenge", exc.reason)
                raise
        if target in self.remote:
            timeout = max(0.1, (body.commit_deadline_ms - self.wall_ms()) / 1000 + 1.0)
            try:
                return await self.host.request(target, C.PROTO_CHALLENGE, payload, timeout=timeout)
            except RequestFailed as exc:
                refusal = remote_refusal(exc.remote_error)
                if refusal is None:
                    raise
                # The executor's own reason reaches the validator as a local executor's would
                # (beacon-unknown, say, is no verdict there; a relay error would be a failure).
                raise ChallengeRefused(*refusal) from None
        self.stats["refused"] += 1
        raise ChallengeRefused("unknown-executor", f"executor {body.executor_id} is not served by this miner")

    async def _on_reveal(self, peer_id: str, payload: bytes) -> bytes:
        try:
            env = decode_envelope(payload, expect=Reveal, now_ms=self.wall_ms())
        except WireError as exc:
            self.gossip.penalize(peer_id, P.for_refusal(exc.reason), f"reveal: {exc.reason}")
            raise ChallengeRefused(exc.reason, exc.message) from None
        target = self._routes.get(env.body.challenge_id)
        if target is None:
            raise ChallengeRefused("unknown-challenge", "no challenge with this id was routed here")
        self.stats["reveals_routed"] += 1
        if target in self.local:
            try:
                return await self.local[target].on_reveal(payload)
            except ChallengeRefused as exc:
                self._penalize_refusal(peer_id, "reveal", exc.reason)
                raise
        if target in self.remote:
            return await self.host.request(target, C.PROTO_REVEAL, payload, timeout=60.0)
        raise ChallengeRefused("unknown-executor", "the executor left before the reveal")

    def status(self) -> dict:
        return {
            "local_executors": {eid: {**e.stats, "busy": e.busy(), "model": e.facts.gpu_model} for eid, e in self.local.items()},
            "remote_executors": {
                eid: {"busy": r.busy, "last_heartbeat_age_s": round(self.clock() - r.last_heartbeat, 1)}
                for eid, r in self.remote.items()
            },
            "stats": dict(self.stats),
        }


class RemoteExecutorNode:
    """An ``executor`` node: registers with its miner, heartbeats, answers routed challenges."""

    def __init__(
        self, host, service: ExecutorService, miner_peer_id_getter: Callable[[], str | None], *, heartbeat_interval_s: float
    ):
        self.host = host
        self.service = service
        self.miner = miner_peer_id_getter
        self.heartbeat_interval_s = heartbeat_interval_s
        self.registered = False
        host.set_handler(C.PROTO_CHALLENGE, lambda peer, payload: service.on_challenge(payload))
        host.set_handler(C.PROTO_REVEAL, lambda peer, payload: service.on_reveal(payload))
        host.set_handler(C.PROTO_PING, self._on_ping)

    async def _on_ping(self, peer_id: str, payload: bytes) -> bytes:
        env = decode_envelope(payload, expect=Ping, now_ms=self.service.wall_ms())
        return self.service.signer.seal(Pong(nonce=env.body.nonce))

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        last_register = -1e9
        while True:
            miner = self.miner()
            if miner is not None:
                now = trio.current_time()
                try:
                    if not self.registered or now - last_register > 120:
                        await self.host.request(
                            miner,
                            C.PROTO_REGISTER,
                            self.service.signer.seal(Register(attestation=self.service.attestation())),
                            timeout=10,
                        )
                        if not self.registered:
                            log.info("registered with miner", extra={"fields": {"miner": miner}})
                        self.registered, last_register = True, now
                    else:
                        await self.host.request(
                            miner, C.PROTO_REGISTER, self.service.signer.seal(Heartbeat(busy=self.service.busy())), timeout=10
                        )
                except Exception as exc:  # the miner restarting or unreachable: register again
                    log.warning("miner did not answer", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
                    self.registered = False
            await trio.sleep(self.heartbeat_interval_s)

    def status(self) -> dict:
        return {"miner": self.miner(), "registered": self.registered, "busy": self.service.busy(), **self.service.stats}

    async def deregister(self, reason: str = "shutdown") -> None:
        miner = self.miner()
        if miner is None or not self.registered:
            return
        with trio.move_on_after(2):
            try:
                await self.host.request(miner, C.PROTO_REGISTER, self.service.signer.seal(Deregister(reason=reason)), timeout=2)
            except Exception as exc:
                log.warning("deregister failed", extra={"fields": {"error": str(exc)}})
