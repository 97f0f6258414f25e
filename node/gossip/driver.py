"""The thin trio driver around the sans-IO gossipsub router, built on a host.

As go's ``NewGossipSub(ctx, host)``: ``GossipDriver(host, params)`` registers itself with the host
(``host.attach``) for peer connected/disconnected events, incoming gossip RPCs, the peer gate and
penalties, and sends through the host (``send_gossip``, ``disconnect``, peer records). Imports
point one way: gossip -> net, never back. It turns router actions into those host calls, decodes
and validates messages synchronously (``decode_envelope`` + the topic's validators), calls the
topic handlers once per message id, and runs the heartbeat with ``trio.sleep`` so a MockClock
drives it in tests. Nothing a peer sends makes ``on_rpc`` raise: bad input is counted by reason,
logged at debug level and penalised through the score.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any, Protocol

import trio

from node.clock import now_ms
from node.gossip.params import GossipParams
from node.gossip.router import Deliver, Disconnect, Equivocation, PeerRecords, Router, Send, Validate, Validation, message_id
from node.identity import Identity
from node.wire.envelope import Envelope, Signer, decode_envelope
from node.wire.errors import StaleMessage, WireError
from node.wire.messages import GossipRPC

log = logging.getLogger("gpow.gossip")

Handler = Callable[[Envelope], None]
Validator = Callable[[Envelope], Validation]
_MAX_REASONS = 64  # distinct reason keys kept in a counter dict


class GossipHost(Protocol):
    """What the driver needs of the host below it (node.net.host.Host is one)."""

    identity: Identity

    def attach(self, events: Any) -> None: ...

    def send_gossip(self, peer_id: str, rpc: GossipRPC) -> bool: ...

    def disconnect(self, peer_id: str, reason: str) -> None: ...

    def records_for(self, peer_ids: list[str]) -> list[bytes]: ...

    def add_peer_records(self, records: list[bytes]) -> None: ...


class _Topic:
    __slots__ = ("handlers", "validators", "check_freshness")

    def __init__(self) -> None:
        self.handlers: list[Handler] = []
        self.validators: list[Validator] = []
        self.check_freshness = True


class GossipDriver:
    def __init__(
        self,
        host: GossipHost,
        params: GossipParams,
        *,
        wall_ms: Callable[[], int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.identity = identity = host.identity
        self.params = params
        self._send = host.send_gossip
        self._disconnect = host.disconnect
        self._px_sink: Callable[[list[bytes]], None] | None = host.add_peer_records
        self._wall_ms = wall_ms or getattr(host, "wall_ms", None) or now_ms
        self.signer = Signer(identity, self._wall_ms)
        self.router = Router(
            identity.peer_id, params, rng or getattr(host, "rng", None) or random.Random(), px_source=host.records_for
        )
        self._topics: dict[str, _Topic] = {}
        self._counters: dict[str, int] = {}
        self._invalid: dict[str, int] = {}  # rejected (penalised) inputs by reason
        self._ignored: dict[str, int] = {}  # ignored (not penalised) messages by reason
        self._penalties: dict[str, int] = {}
        self._last_now = 0.0
        host.attach(self)

    def _now(self) -> float:
        """Trio's clock (MockClock in tests). Outside a trio run (set-up code) the last time seen:
        mixing in another clock would put graft times and backoffs on a different time base."""
        try:
            self._last_now = trio.current_time()
        except RuntimeError:
            pass
        return self._last_now

    # ---- counters ------------------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        self._counters[key] = self._counters.get(key, 0) + n

    @staticmethod
    def _bump(d: dict[str, int], reason: str) -> None:
        if reason not in d and len(d) >= _MAX_REASONS:
            reason = "other"
        d[reason] = d.get(reason, 0) + 1

    # ---- peers ---------------------------------------------------------------------------------

    def peer_connected(self, peer_id: str, *, outbound: bool, ip: str) -> None:
        self._process(self.router.add_peer(peer_id, outbound, ip, self._now()))

    def peer_disconnected(self, peer_id: str) -> None:
        self.router.remove_peer(peer_id, self._now())

    # ---- incoming ------------------------------------------------------------------------------

    def on_rpc(self, peer_id: str, rpc: GossipRPC) -> None:
        try:
            if not isinstance(rpc, GossipRPC):
                self._bump(self._invalid, "not-an-rpc")
                return
            self._process(self.router.handle_rpc(peer_id, rpc, self._now()))
        except Exception:  # a bug must not let a peer crash the host's reader
            self._bump(self._invalid, "internal-error")
            log.exception("gossip: error handling an RPC from %s", peer_id)

    def _validate(self, act: Validate) -> tuple[Validation, Envelope | None, str]:
        """Decode and run the topic's validators: (result, envelope, reason)."""
        topic = self._topics.get(act.topic)
        freshness = self.params.check_freshness and (topic is None or topic.check_freshness)
        try:
            env = decode_envelope(
                act.data, max_bytes=self.params.max_message_bytes, now_ms=self._wall_ms() if freshness else None
            )
        except StaleMessage:
            return Validation.IGNORE, None, "stale"  # clocks differ; the relayer is not at fault
        except WireError as exc:
            return Validation.REJECT, None, exc.reason
        if env.sender == self.identity.peer_id:
            return Validation.IGNORE, env, "own-message"  # ours from before a restart: not delivered back
        if topic is None:
            return Validation.IGNORE, env, "no-handler"
        result = Validation.ACCEPT
        for v in topic.validators:
            try:
                r = v(env)
            except Exception:
                log.exception("gossip: validator for %s raised", act.topic)
                r = Validation.IGNORE  # our bug, not the peer's
            if not isinstance(r, Validation):
                log.warning("gossip: validator for %s returned %r; treating as ignore", act.topic, r)
                r = Validation.IGNORE
            if r is Validation.REJECT:
                return Validation.REJECT, env, "validator"
            if r is Validation.IGNORE:
                result = Validation.IGNORE
        return result, env, "validator-ignore" if result is Validation.IGNORE else ""

    def _process(self, actions: list[Any]) -> None:
        queue = list(actions)
        envs: dict[bytes, Envelope] = {}
        i = 0
        while i < len(queue):
            act = queue[i]
            i += 1
            if isinstance(act, Send):
                try:
                    ok = self._send(act.peer, act.rpc)
                except Exception:
                    log.exception("gossip: send to %s raised", act.peer)
                    ok = False
                self._count("rpcs_sent" if ok else "rpcs_dropped")
            elif isinstance(act, Validate):
                result, env, reason = self._validate(act)
                if result is Validation.REJECT:
                    self._bump(self._invalid, reason)
                    log.debug("gossip: rejected message on %s from %s: %s", act.topic, act.peer, reason)
                elif result is Validation.IGNORE:
                    self._bump(self._ignored, reason)
                    if reason == "stale":
                        self.router.stale_message(act.peer, self._now())
                if env is not None and result is Validation.ACCEPT:
                    envs[act.msg_id] = env
                queue.extend(
                    self.router.validation_result(
                        act.msg_id,
                        result,
                        self._now(),
                        origin=env.sender if env is not None else None,
                        seq=env.seq if env is not None else None,
                    )
                )
            elif isinstance(act, Deliver):
                env = envs.pop(act.msg_id, None)
                topic = self._topics.get(act.topic)
                if env is None or topic is None:
                    continue
                self._count("delivered")
                for h in list(topic.handlers):
                    try:
                        h(env)
                    except Exception:
                        log.exception("gossip: handler for %s raised", act.topic)
                        self._count("handler_errors")
            elif isinstance(act, Disconnect):
                self._count("disconnects")
                log.info("gossip: disconnecting %s (%s)", act.peer, act.reason)
                try:
                    self._disconnect(act.peer, act.reason)
                except Exception:
                    log.exception("gossip: disconnect of %s raised", act.peer)
            elif isinstance(act, PeerRecords):
                self._count("px_records", len(act.records))
                if self._px_sink is not None:
                    try:
                        self._px_sink(list(act.records))
                    except Exception:
                        log.exception("gossip: px_sink raised")

    # ---- publishing ----------------------------------------------------------------------------

    def publish(self, topic: str, body: Any) -> bytes:
        """Seal ``body`` with our signer and send it; it is not delivered locally. Returns its id."""
        data = self.signer.seal(body)
        return self._publish(topic, data, self.identity.peer_id, self.signer.last_seq)

    def publish_raw(self, topic: str, data: bytes) -> bytes:
        """Send an envelope signed by anyone (e.g. a validator set) unchanged. Returns its id."""
        if len(data) > self.params.max_message_bytes:
            raise ValueError(f"gossip: message of {len(data)} bytes exceeds max_message_bytes={self.params.max_message_bytes}")
        env = decode_envelope(data, max_bytes=self.params.max_message_bytes)  # our own bug if this fails
        return self._publish(topic, data, env.sender, env.seq)

    def _publish(self, topic: str, data: bytes, origin: str, seq: int) -> bytes:
        if len(data) > self.params.max_message_bytes:
            raise ValueError(f"gossip: message of {len(data)} bytes exceeds max_message_bytes={self.params.max_message_bytes}")
        mid = message_id(data)
        self._count("published")
        self._process(self.router.publish(topic, data, mid, self._now(), origin=origin, seq=seq))
        return mid

    # ---- subscriptions -------------------------------------------------------------------------

    def subscribe(
        self, topic: str, handler: Handler, validator: Validator | None = None, *, check_freshness: bool = True
    ) -> None:
        """Join ``topic``. Several subscribers may share a topic: a message is accepted only if every
        validator accepts it, and then every handler gets it. ``check_freshness=False`` skips the
        envelope timestamp check (for long-lived signed documents that are re-gossiped)."""
        t = self._topics.get(topic)
        if t is None:
            t = _Topic()
            self._topics[topic] = t
        t.handlers.append(handler)
        if validator is not None:
            t.validators.append(validator)
        t.check_freshness = t.check_freshness and check_freshness
        self._process(self.router.join(topic, self._now()))

    def unsubscribe(self, topic: str) -> None:
        if self._topics.pop(topic, None) is not None:
            self._process(self.router.leave(topic, self._now()))

    # ---- scores --------------------------------------------------------------------------------

    def topic_peer_count(self, topic: str) -> int:
        """Connected peers subscribed to ``topic``: a publish reaches nobody while this is 0."""
        return len(self.router.topic_peers.get(topic, ()))

    def penalize(self, peer_id: str, amount: float, reason: str) -> None:
        self._bump(self._penalties, reason)
        if not self.router.penalize(peer_id, float(amount)):
            self._count("penalize_unknown_peer")
        log.debug("gossip: penalised %s by %s: %s", peer_id, amount, reason)

    def score(self, peer_id: str) -> float:
        return self.router.peer_score(peer_id, self._now())

    def accepts_from(self, peer_id: str) -> bool:
        return self.router.peer_score(peer_id, self._now()) >= self.params.graylist_threshold

    def equivocations(self) -> list[Equivocation]:
        return list(self.router.evidence)

    # ---- heartbeat -----------------------------------------------------------------------------

    def heartbeat(self) -> None:
        try:
            self._process(self.router.heartbeat(self._now()))
        except Exception:
            log.exception("gossip: heartbeat failed")

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.params.heartbeat_s)
            self.heartbeat()

    # ---- stats ---------------------------------------------------------------------------------

    def stats_dict(self) -> dict:
        r = self.router
        now = self._now()
        graylisted = sum(1 for q in r.peers if r.peer_score(q, now) < self.params.graylist_threshold)
        return {
            "peers": len(r.peers),
            "topics": sorted(r.subscriptions),
            "mesh": {t: len(m) for t, m in r.mesh.items()},
            "published": self._counters.get("published", 0),
            "delivered": self._counters.get("delivered", 0),
            "duplicates": r.stats.get("duplicates", 0),
            "invalid": dict(self._invalid),
            "ignored": dict(self._ignored),
            "penalties": dict(self._penalties),
            "graylisted": graylisted,
            "equivocations": r.stats.get("equivocations", 0),
            "broken_promises": r.stats.get("broken_promises", 0),
            "seen": len(r.seen),
            "mcache": len(r.mcache),
            "mcache_bytes": r.mcache.bytes,
            "heartbeats": r.heartbeat_ticks,
            "driver": dict(self._counters),
            "router": dict(r.stats),
        }
