"""GossipDrivers wired through in-memory send functions (no sockets), under trio's MockClock.

Links carry GossipRPC objects through a bounded trio memory channel per direction, with a small
latency, so the heartbeat, mesh forming, forwarding, validation, scoring and disconnects all run
exactly as in a node, only faster (the autojump clock skips idle time).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from node.gossip import GossipDriver, GossipParams
from node.gossip.router import Validation, message_id
from node.identity import Identity
from node.wire.envelope import Envelope, encode_envelope
from node.wire.messages import GossipRPC, Heartbeat, PublishedMessage, Roster

TOPIC = "gpow/test/1"
BASE_MS = 1_700_000_000_000
LATENCY = 0.01


class MemHost:
    """The host side of GossipDriver's contract (node.gossip.driver.GossipHost) over in-memory links."""

    def __init__(self, identity: Identity, send: Any, disconnect: Any) -> None:
        self.identity = identity
        self.send_gossip = send
        self.disconnect = disconnect
        self.records: list[bytes] = []
        self.events: Any = None

    def attach(self, events: Any) -> None:
        self.events = events

    def records_for(self, peer_ids: list[str]) -> list[bytes]:
        return []

    def add_peer_records(self, records: list[bytes]) -> None:
        self.records.extend(records)


class Net:
    """In-memory links between drivers; each node gets its own send/disconnect functions."""

    def __init__(self, nursery: trio.Nursery, n: int, params: GossipParams | None = None, *, queue: int = 64) -> None:
        self.nursery = nursery
        self.params = params or GossipParams(heartbeat_s=1.0)
        self.idents = [Identity.from_seed(bytes([100 + i]) * 32) for i in range(n)]
        self.ids = [x.peer_id for x in self.idents]
        self.links: dict[tuple[str, str], trio.MemorySendChannel] = {}
        self.disconnects: list[tuple[str, str, str]] = []
        self.received: dict[str, list[Envelope]] = {pid: [] for pid in self.ids}
        self.queue = queue
        self.drivers: dict[str, GossipDriver] = {}
        for i, ident in enumerate(self.idents):
            pid = ident.peer_id
            host = MemHost(
                ident,
                send=lambda peer, rpc, src=pid: self._send(src, peer, rpc),
                disconnect=lambda peer, reason, src=pid: self._disconnect(src, peer, reason),
            )
            self.drivers[pid] = GossipDriver(
                host,
                self.params,
                wall_ms=lambda: BASE_MS + int(trio.current_time() * 1000),
                rng=random.Random(i),
            )

    def wall_ms(self) -> int:
        return BASE_MS + int(trio.current_time() * 1000)

    def _send(self, src: str, dst: str, rpc: GossipRPC) -> bool:
        ch = self.links.get((src, dst))
        if ch is None:
            return False
        try:
            ch.send_nowait(rpc)
            return True
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False

    def _disconnect(self, src: str, dst: str, reason: str) -> None:
        self.disconnects.append((src, dst, reason))
        for a, b in ((src, dst), (dst, src)):
            ch = self.links.pop((a, b), None)
            if ch is not None:
                ch.close()
            self.drivers[a].peer_disconnected(b)

    async def _pump(self, src: str, dst: str, recv: trio.MemoryReceiveChannel) -> None:
        async for rpc in recv:
            await trio.sleep(LATENCY)
            self.drivers[dst].on_rpc(src, rpc)

    def connect(self, a: str, b: str) -> None:
        for src, dst in ((a, b), (b, a)):
            send, recv = trio.open_memory_channel(self.queue)
            self.links[(src, dst)] = send
            self.nursery.start_soon(self._pump, src, dst, recv)
        self.drivers[a].peer_connected(b, outbound=True, ip="10.0.0.%d" % self.ids.index(b))
        self.drivers[b].peer_connected(a, outbound=False, ip="10.0.0.%d" % self.ids.index(a))

    def subscribe_all(self, validator: Any = None) -> None:
        for pid, d in self.drivers.items():
            d.subscribe(TOPIC, self.received[pid].append, validator)

    async def start(self) -> None:
        for d in self.drivers.values():
            await self.nursery.start(d.run)


async def test_heartbeat_mesh_and_delivery_on_a_line(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net = Net(nursery, 3)
        a, b, c = net.ids
        net.subscribe_all()
        net.connect(a, b)
        net.connect(b, c)
        await net.start()
        await trio.sleep(3.5)
        for pid in net.ids:
            st = net.drivers[pid].stats_dict()
            assert st["heartbeats"] == 3  # the heartbeat runs on trio.sleep: the mock clock drives it
        assert net.drivers[b].router.mesh_peers(TOPIC) == {a, c}
        assert net.drivers[a].router.mesh_peers(TOPIC) == {b}

        mid = net.drivers[a].publish(TOPIC, Heartbeat(busy=True))
        await trio.sleep(1.0)
        # b gets it from a, c through b's forwarding; a never gets its own message back.
        assert [e.sender for e in net.received[b]] == [a]
        assert [e.sender for e in net.received[c]] == [a]
        assert net.received[a] == []
        env = net.received[c][0]
        assert env.body == Heartbeat(busy=True) and message_id(env.raw) == mid
        assert net.drivers[c].stats_dict()["delivered"] == 1
        # Re-publishing the same bytes (as a re-gossip) is not delivered twice.
        net.drivers[a].publish_raw(TOPIC, env.raw)
        await trio.sleep(1.0)
        assert len(net.received[b]) == 1 and len(net.received[c]) == 1
        assert net.drivers[b].stats_dict()["duplicates"] >= 1
        nursery.cancel_scope.cancel()


async def test_validator_reject_handler_errors_and_bad_input(autojump_clock: trio.testing.MockClock) -> None:
    def validator(env: Envelope) -> str:
        if isinstance(env.body, Heartbeat) and not env.body.busy:
            return Validation.REJECT
        if isinstance(env.body, Roster):
            return Validation.IGNORE
        return Validation.ACCEPT

    async with trio.open_nursery() as nursery:
        net = Net(nursery, 2)
        a, b = net.ids
        net.subscribe_all(validator)
        boom: list[int] = []

        def bad_handler(env: Envelope) -> None:
            boom.append(1)
            raise RuntimeError("application bug")

        net.drivers[b].subscribe(TOPIC, bad_handler)  # a second handler on the topic
        net.connect(a, b)
        await net.start()
        await trio.sleep(2.0)
        da, db = net.drivers[a], net.drivers[b]

        da.publish(TOPIC, Heartbeat(busy=True))
        da.publish(TOPIC, Heartbeat(busy=False))  # b's validator rejects it
        da.publish(TOPIC, Roster(version=1, entries=[]))  # ignored: no penalty
        await trio.sleep(0.5)
        assert [e.body for e in net.received[b]] == [Heartbeat(busy=True)]
        assert boom == [1]  # the raising handler ran and did not stop the other one
        st = db.stats_dict()
        assert st["invalid"]["validator"] == 1
        assert st["ignored"]["validator-ignore"] == 1
        assert st["driver"]["handler_errors"] == 1

        # A stale (but correctly signed) message is ignored, not penalised.
        other = Identity.from_seed(b"\x07" * 32)
        stale = encode_envelope(Heartbeat(busy=True), other, seq=2, now_ms=net.wall_ms() - 10 * 60_000)
        s0 = db.score(a)
        db.on_rpc(a, GossipRPC(publish=[PublishedMessage(topic=TOPIC, data=stale)]))
        assert db.stats_dict()["ignored"]["stale"] == 1
        assert db.score(a) == s0

        # Garbage from a: never raises, counted by reason, penalised.
        before = db.score(a)
        db.on_rpc(a, GossipRPC(publish=[PublishedMessage(topic=TOPIC, data=b"\x81\xa1x\x01")]))
        db.on_rpc(a, "not an rpc")  # type: ignore[arg-type]
        db.on_rpc("unknown-peer", GossipRPC())  # ignored, counted by the router
        forged = bytearray(encode_envelope(Heartbeat(busy=True), other, seq=1, now_ms=net.wall_ms()))
        at = bytes(forged).index(b"\xa4busy\xc3") + 5
        forged[at] ^= 1  # true -> false inside the signed body: still canonical, signature breaks
        db.on_rpc(a, GossipRPC(publish=[PublishedMessage(topic=TOPIC, data=bytes(forged))]))
        st = db.stats_dict()
        assert st["invalid"]["malformed"] == 1
        assert st["invalid"]["bad-signature"] == 1
        assert st["invalid"]["not-an-rpc"] == 1
        assert sum(st["invalid"].values()) == 4  # validator, malformed, bad-signature, not-an-rpc
        assert st["router"]["rpc_unknown_peer"] == 1
        assert db.score(a) < before
        assert not db.accepts_from(a)  # three invalid messages: graylisted (-10 * 3^2 < -80)
        nursery.cancel_scope.cancel()


async def test_penalized_peer_is_graylisted_then_disconnected(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net = Net(nursery, 3)
        a, b, c = net.ids
        net.subscribe_all()
        net.connect(a, b)
        net.connect(b, c)
        await net.start()
        await trio.sleep(2.0)
        db = net.drivers[b]
        assert db.accepts_from(a)
        db.penalize(a, 20.0, "sent a bad register")
        assert not db.accepts_from(a)
        assert db.stats_dict()["penalties"] == {"sent a bad register": 1}
        assert db.stats_dict()["graylisted"] == 1
        await trio.sleep(net.params.graylist_disconnect_s + 2.5)
        assert (
            b,
            a,
        ) == net.disconnects[0][:2] and "graylisted" in net.disconnects[0][2]
        assert len(net.disconnects) == 1
        # The rest of the network still works: c's messages reach b.
        net.drivers[c].publish(TOPIC, Heartbeat(busy=True))
        await trio.sleep(0.5)
        assert [e.sender for e in net.received[b]] == [c]
        # Penalising a peer we do not know is counted, not an error.
        db.penalize("12D3KooWnobody", 5.0, "x")
        assert db.stats_dict()["driver"]["penalize_unknown_peer"] == 1
        nursery.cancel_scope.cancel()


async def test_equivocation_evidence_through_drivers(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net = Net(nursery, 2)
        a, b = net.ids
        net.subscribe_all()
        net.connect(a, b)
        await net.start()
        await trio.sleep(2.0)
        ident_a = net.idents[0]
        m1 = encode_envelope(Heartbeat(busy=True), ident_a, seq=5, now_ms=net.wall_ms())
        m2 = encode_envelope(Heartbeat(busy=False), ident_a, seq=5, now_ms=net.wall_ms())
        net.drivers[a].publish_raw(TOPIC, m1)
        await trio.sleep(0.1)
        net.drivers[a].publish_raw(TOPIC, m2)
        await trio.sleep(0.5)
        db = net.drivers[b]
        assert [e.raw for e in net.received[b]] == [m1]  # the second, conflicting one is withheld
        (ev,) = db.equivocations()
        assert (ev.origin, ev.seq, ev.first_data, ev.second_data) == (a, 5, m1, m2)
        assert db.stats_dict()["equivocations"] == 1
        assert db.score(a) <= -(net.params.equivocation_penalty**2) * abs(net.params.behaviour_penalty_weight) * 0.9
        nursery.cancel_scope.cancel()


async def test_full_send_queue_is_counted_not_raised(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net = Net(nursery, 2, queue=1)
        a, b = net.ids
        net.subscribe_all()
        net.connect(a, b)
        await net.start()
        await trio.sleep(1.5)
        for i in range(5):  # one RPC each (1 ms apart: not coalesced), into a queue of one
            net.drivers[a].publish(TOPIC, Heartbeat(busy=bool(i % 2)))
            await trio.sleep(0.001)
        assert net.drivers[a].stats_dict()["driver"]["rpcs_dropped"] >= 2
        await trio.sleep(0.5)
        assert 1 <= len(net.received[b]) < 5
        nursery.cancel_scope.cancel()


def test_publish_rejects_oversized_and_params_validate() -> None:
    p = GossipParams(max_message_bytes=300)
    d = GossipDriver(MemHost(Identity.from_seed(b"\x09" * 32), send=lambda *_: True, disconnect=lambda *_: None), p)
    with pytest.raises(ValueError):
        d.publish(TOPIC, Roster(version=1, entries=[b"x" * 400]))
    with pytest.raises(ValueError):
        GossipParams(D=3, D_lo=4)
    with pytest.raises(ValueError):
        GossipParams(D_out=4)
    with pytest.raises(ValueError):
        GossipParams(graylist_threshold=-1.0, publish_threshold=-50.0)
