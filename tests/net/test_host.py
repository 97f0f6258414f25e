"""Two or three real Hosts on loopback: links, request/response, limits, garbage, keepalive, shutdown."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from node.gossip.params import GossipParams
from node.identity import Identity
from node.net.connection import open_raw_link
from node.net.errors import HandshakeRefused, NetError, PeerUnreachable, RequestFailed, RequestTimeout
from node.net.framing import decode_frame, encode_frame
from node.net.handshake import MAX_HANDSHAKE_FRAME, Handshake
from node.net.host import Host
from node.net.params import NetParams
from node.net.peerstore import PeerStore
from node.wire.envelope import decode_envelope, encode_envelope
from node.wire.errors import BadSignature, StaleMessage, WireError
from node.wire.messages import Goodbye, GossipRPC, PeerRecord, Ping, PublishedMessage, Request, Response
from tests.net.gossip_host import GossipHost

NETWORK = "gpow-test"


def net_params(**kw) -> NetParams:
    base = dict(
        listen_port=0,
        network=NETWORK,
        ping_interval_s=0.2,
        dead_after_s=1.5,
        maintain_interval_s=0.1,
        reconnect_min_s=0.1,
        reconnect_max_s=1.0,
        pex_interval_s=0.5,
        dial_timeout_s=2.0,
        handshake_timeout_s=2.0,
        drain_timeout_s=0.5,
        max_frame_bytes=256 * 1024,
    )
    base.update(kw)
    return NetParams(**base)


def gossip_params() -> GossipParams:
    return GossipParams(heartbeat_s=0.1)


@asynccontextmanager
async def hosts(n: int, roles: list[str] | None = None, **kw) -> AsyncIterator[list[Host]]:
    out = [GossipHost(Identity.generate(), net_params(**kw), (roles or ["miner"] * n)[i], gossip_params()) for i in range(n)]
    async with trio.open_nursery() as nursery:
        for h in out:
            await nursery.start(h.run)
        yield out
        nursery.cancel_scope.cancel()


async def wait_for(cond, timeout: float = 5.0, step: float = 0.02) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(step)


async def echo(peer: str, payload: bytes) -> bytes:
    return payload[::-1]


async def test_two_hosts_connect_and_see_each_other() -> None:
    async with hosts(2, roles=["miner", "validator"]) as (a, b):
        pid = await a.dial(b.listen_addr)
        assert pid == b.peer_id
        await wait_for(lambda: a.peer_id in b.connected_peers())
        ia, ib = a.connected_peers()[b.peer_id], b.connected_peers()[a.peer_id]
        assert ia.role == "validator" and ia.outbound and ia.listen_addrs == [b.listen_addr]
        assert ib.role == "miner" and not ib.outbound and ib.ip == "127.0.0.1"
        # dialling again reuses the link
        assert await a.dial(b.listen_addr) == b.peer_id
        assert len(a.connected_peers()) == 1 and a.stats["links_opened"] == 1
        # each learned the other's signed peer record through peer exchange
        await wait_for(lambda: a.peerstore.get(b.peer_id) is not None and a.peerstore.get(b.peer_id).record)
        await wait_for(lambda: "rtt_ms_median" in a.stats_dict())  # keepalive pings are answered
        st = a.stats_dict()
        assert st["peers"] == 1 and st["outbound"] == 1 and st["rtt_ms_max"] < 1000 and "gossip" in st


async def test_request_response_errors_and_timeouts() -> None:
    async with hosts(2) as (a, b):

        async def boom(peer: str, payload: bytes) -> bytes:
            raise ValueError(f"bad input from {peer[-4:]}")

        async def slow(peer: str, payload: bytes) -> bytes:
            await trio.sleep(10)
            return b""

        b.set_handler("echo", echo)
        b.set_handler("boom", boom)
        b.set_handler("slow", slow)
        await a.dial(b.listen_addr)
        assert await a.request(b.peer_id, "echo", b"abc", timeout=2) == b"cba"
        # many concurrent requests are matched to their own responses
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            results[i] = await a.request(b.peer_id, "echo", str(i).encode(), timeout=5)

        async with trio.open_nursery() as n:
            for i in range(40):
                n.start_soon(one, i)
        assert all(results[i] == str(i).encode()[::-1] for i in range(40))
        with pytest.raises(RequestFailed) as ei:
            await a.request(b.peer_id, "boom", b"", timeout=2)
        assert ei.value.remote_error == f"ValueError: bad input from {a.peer_id[-4:]}"
        with pytest.raises(RequestFailed) as ei:
            await a.request(b.peer_id, "missing", b"", timeout=2)
        assert "no handler" in ei.value.remote_error
        t0 = trio.current_time()
        with pytest.raises(RequestTimeout):
            await a.request(b.peer_id, "slow", b"", timeout=0.3)
        assert trio.current_time() - t0 < 1.0
        # the link still serves after all that
        assert await a.request(b.peer_id, "echo", b"xy", timeout=2) == b"yx"
        with pytest.raises(PeerUnreachable):
            await a.request(Identity.generate().peer_id, "echo", b"", timeout=1)


async def test_request_dials_a_known_peer_that_is_not_connected() -> None:
    async with hosts(3) as (a, b, c):
        c.set_handler("echo", echo)
        await b.dial(c.listen_addr)
        await a.dial(b.listen_addr)
        # a learns c's signed record from b (peer exchange), without being connected to c
        await wait_for(lambda: a.peerstore.get(c.peer_id) is not None and a.peerstore.get(c.peer_id).record)
        if c.peer_id in a.connected_peers():  # the connection manager may have dialled already
            a._conns[c.peer_id].close("test")
            await wait_for(lambda: c.peer_id not in a.connected_peers())
        assert a.reachable(c.peer_id) and not a.reachable(Identity.generate().peer_id)
        assert await a.request(c.peer_id, "echo", b"123", timeout=3) == b"321"
        assert c.peer_id in a.connected_peers()


async def test_oversized_frames_and_requests_are_refused() -> None:
    async with hosts(2, max_frame_bytes=64 * 1024) as (a, b):
        b.set_handler("echo", echo)
        await a.dial(b.listen_addr)
        with pytest.raises(RequestFailed, match="exceeds the frame limit"):
            await a.request(b.peer_id, "echo", b"x" * 70_000, timeout=2)
        async with trio.open_nursery() as n:
            raw = Identity.generate()
            ws, res = await open_raw_link(n, b.listen_addr, raw, network=NETWORK)
            # just over max_frame_bytes: refused by our check (counted), the link stays up
            await ws.send_message(encode_frame(Request(req_id=1, protocol="echo", payload=b"y" * (64 * 1024))))
            await ws.send_message(encode_frame(Request(req_id=2, protocol="echo", payload=b"ok")))
            reply = await _next_of(ws, Response)
            assert reply.req_id == 2 and reply.payload == b"ko"
            assert b.stats["bad_frames.oversized"] == 1
            # far over: the websocket layer refuses it before buffering it whole and closes the link
            with pytest.raises(ConnectionClosed):
                await ws.send_message(b"\x00" * (200 * 1024))
                await _next_of(ws, Response)
            await wait_for(lambda: raw.peer_id not in b.connected_peers())
            assert b.stats["bad_frames.oversized"] == 2
            n.cancel_scope.cancel()
        # a honest peer is unaffected
        assert await a.request(b.peer_id, "echo", b"fine", timeout=2) == b"enif"


async def _next_of(ws, cls):
    """Read link frames until one of type ``cls`` (pings, peer exchange and handshake envelopes
    are skipped)."""
    with trio.fail_after(3):
        while True:
            data = await ws.get_message()
            try:
                msg = decode_frame(data, max_bytes=1 << 26)
            except WireError:
                continue
            if isinstance(msg, cls):
                return msg


async def test_garbage_frames_are_counted_penalised_and_repeated_garbage_disconnects() -> None:
    async with hosts(2, max_bad_frames=6) as (a, b):
        b.set_handler("echo", echo)
        await a.dial(b.listen_addr)
        async with trio.open_nursery() as n:
            raw = Identity.generate()
            ws, _ = await open_raw_link(n, b.listen_addr, raw, network=NETWORK)
            garbage = [b"", b"\xff\xfe", b"\x81\xa1t\xa4ping", encode_frame(Ping(nonce=1))[:-1], b"\x82\xa1b\x80\xa1t\xa7no-such"]
            for g in garbage:
                await ws.send_message(g)
            await ws.send_message(encode_frame(Request(req_id=7, protocol="echo", payload=b"still")))
            assert (await _next_of(ws, Response)).payload == b"llits"
            assert b.stats["bad_frames"] == 5
            assert b.stats["bad_frames.malformed"] >= 3 and b.stats["bad_frames.unknown-type"] == 1
            assert b.gossip.score(raw.peer_id) < 0
            # the sixth bad frame closes the link, with a Goodbye saying why
            await ws.send_message(b"\xc1")
            bye = await _next_of(ws, Goodbye)
            assert "too many bad frames" in bye.reason
            await wait_for(lambda: raw.peer_id not in b.connected_peers())
            n.cancel_scope.cancel()
        assert await a.request(b.peer_id, "echo", b"ok", timeout=2) == b"ko"


async def test_handshake_refusals_over_the_wire() -> None:
    async with hosts(2) as (a, b):
        other = GossipHost(Identity.generate(), net_params(network="elsewhere"), "miner", gossip_params())
        async with trio.open_nursery() as n:
            await n.start(other.run)
            with pytest.raises(HandshakeRefused) as ei:
                await a.dial(other.listen_addr)
            assert ei.value.code in ("network", "remote")
            # dialling a known id at an address where someone else answers
            port = int(b.listen_addr.rsplit(":", 1)[1])
            a.peerstore.add_record(_record(Identity.generate(), port=port, expires_ms=_now_ms() + 60_000), _now_ms())
            wrong = next(p for p in a.peerstore.entries if p != b.peer_id)
            with pytest.raises(PeerUnreachable):
                await a.request(wrong, "echo", b"", timeout=2)
            assert a.stats["handshake_refused.unexpected-peer"] == 1
            n.cancel_scope.cancel()
        # impersonation: a Hello from one key, then a HelloAuth signed by another
        me, forger = Identity.generate(), Identity.generate()
        async with open_websocket_url(b.listen_addr) as ws:
            hs = Handshake(me, network=NETWORK, role="miner", listen_addrs=[], nonce=os.urandom(32), now_ms=_now_ms(), seq=1)
            await ws.send_message(hs.initial_frames()[0])
            their_hello = await ws.get_message()
            genuine = hs.receive(their_hello, _now_ms())[0]
            forged = encode_envelope(decode_envelope(genuine).body, forger, seq=5, now_ms=_now_ms())
            await ws.send_message(forged)
            bye = await _next_of(ws, Goodbye)
            assert "hello-auth signed by" in bye.reason
        assert b.stats["handshake_refused.impersonation"] == 1
        assert me.peer_id not in b.connected_peers() and forger.peer_id not in b.connected_peers()


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


async def test_simultaneous_dials_keep_one_link_per_pair() -> None:
    async with hosts(2) as (a, b):
        async with trio.open_nursery() as n:
            n.start_soon(a.dial, b.listen_addr)
            n.start_soon(b.dial, a.listen_addr)
        await wait_for(lambda: len(a.connected_peers()) == 1 and len(b.connected_peers()) == 1)
        await trio.sleep(0.3)
        ia, ib = a.connected_peers()[b.peer_id], b.connected_peers()[a.peer_id]
        assert ia.outbound != ib.outbound  # both kept the same link
        lower = min(a.peer_id, b.peer_id)
        assert ia.outbound == (lower == a.peer_id)


async def test_inbound_limit() -> None:
    async with hosts(3, max_inbound=1) as (a, b, c):
        await a.dial(c.listen_addr)
        with pytest.raises(PeerUnreachable):
            await b.dial(c.listen_addr)
        assert c.stats["inbound_rejected"] == 1


async def test_dead_peer_is_detected_and_shutdown_says_goodbye() -> None:
    async with hosts(2) as (a, b):
        async with trio.open_nursery() as n:
            silent = Identity.generate()
            ws, _ = await open_raw_link(n, b.listen_addr, silent, network=NETWORK)
            # the raw link never answers pings and sends nothing: closed after dead_after_s
            await wait_for(lambda: silent.peer_id in b.connected_peers(), timeout=2)
            await wait_for(lambda: silent.peer_id not in b.connected_peers(), timeout=4)
            assert b.stats["links_closed_dead"] == 1
            n.cancel_scope.cancel()
        await a.dial(b.listen_addr)
        await a.aclose("maintenance")
        await wait_for(lambda: a.peer_id not in b.connected_peers())
        assert b.stats["goodbyes_received"] == 1
        assert a.connected_peers() == {}


async def test_send_queue_is_bounded_gossip_drops_and_slow_peer_is_disconnected() -> None:
    from node.net.framing import rpc_size

    async with hosts(
        2, send_queue_frames=4, send_queue_bytes=4096, max_frame_bytes=64 * 1024, slow_peer_drops_before_disconnect=10
    ) as (a, b):
        await a.dial(b.listen_addr)
        conn = a._conns[b.peer_id]
        await wait_for(lambda: conn.queued_bytes == 0)
        rpc = GossipRPC(publish=[PublishedMessage(topic="t", data=b"x" * 1000)])
        size = rpc_size(rpc)
        # synchronous sends: the writer cannot run in between, so the queue fills up (in bytes:
        # RPCs queued one after another share one entry of the frame-bounded queue)
        results = [a.send_gossip(b.peer_id, rpc) for _ in range(8)]
        k = results.count(True)
        assert k == 4096 // size and results == [True] * k + [False] * (8 - k)
        assert conn.queued_bytes == k * size and conn._recv_ch.statistics().current_buffer_used <= 1
        await wait_for(lambda: conn.queued_bytes == 0)
        assert a.send_gossip(b.peer_id, rpc)  # drained: room again
        # requests wait for room instead of being dropped
        for _ in range(4):
            a.send_gossip(b.peer_id, rpc)
        b.set_handler("echo", echo)
        assert await a.request(b.peer_id, "echo", b"q", timeout=2) == b"q"
        # a queue that keeps overflowing: more than 10 drops before it drains -> disconnect
        sent = [a.send_gossip(b.peer_id, rpc) for _ in range(20)]
        assert sent.count(False) > 10
        assert a.stats["links_closed_slow"] == 1
        await wait_for(lambda: b.peer_id not in a.connected_peers())


async def test_listen_on_a_busy_port_is_a_clear_error() -> None:
    async with hosts(1) as (a,):
        port = int(a.listen_addr.rsplit(":", 1)[1])
        b = Host(Identity.generate(), net_params(listen_port=port), "miner")
        with pytest.raises(NetError, match=f"cannot listen on 127.0.0.1:{port}"):
            await b.run()


# ---- the peer store (sans-IO) ------------------------------------------------------------------


def _record(identity: Identity, *, port: int = 1, expires_ms: int, seq: int = 1, now: int = 1_000_000) -> bytes:
    return encode_envelope(
        PeerRecord(addrs=[f"ws://127.0.0.1:{port}"], role="miner", expires_ms=expires_ms), identity, seq=seq, now_ms=now
    )


def test_peer_store_records_expiry_replacement_and_forgeries() -> None:
    me, x = Identity.generate(), Identity.generate()
    store = PeerStore(me.peer_id, max_size=10, max_skew_ms=60_000)
    now = 1_000_000
    assert store.add_record(_record(x, expires_ms=now + 5000), now) == x.peer_id
    assert store.add_record(_record(x, expires_ms=now + 5000), now) is None  # known bytes: no work
    # a newer record (higher seq) replaces the address; an older one does not
    assert store.add_record(_record(x, port=2, seq=5, expires_ms=now + 5000), now) == x.peer_id
    assert store.add_record(_record(x, port=3, seq=4, expires_ms=now + 5000), now) is None
    assert store.get(x.peer_id).addrs == ["ws://127.0.0.1:2"]
    assert store.add_record(_record(me, expires_ms=now + 5000), now) is None and len(store) == 1
    # a record for x signed by someone else is a bad signature
    good = _record(Identity.generate(), expires_ms=now + 5000)
    import msgpack

    top = msgpack.unpackb(good, raw=False)
    top["sender"] = x.peer_id
    with pytest.raises(BadSignature):
        store.add_record(msgpack.packb(top, use_bin_type=True), now)
    with pytest.raises(StaleMessage):
        store.add_record(_record(Identity.generate(), expires_ms=now - 1), now)
    with pytest.raises(WireError):
        store.add_record(b"\x93garbage", now)
    # expiry drops the record unless the peer is connected
    assert store.expire(now + 6000, protected={x.peer_id}) == 0
    assert store.expire(now + 6000) == 1 and len(store) == 0


def test_peer_store_size_cap_and_backoff() -> None:
    me = Identity.generate()
    store = PeerStore(me.peer_id, max_size=5, max_skew_ms=60_000, rng=random.Random(3))
    now = 1_000_000
    ids = [Identity.generate() for _ in range(8)]
    for i, ident in enumerate(ids):
        store.add_record(_record(ident, expires_ms=now + 1000 + i), now)
    assert len(store) == 5
    assert ids[-1].peer_id in store.entries and ids[0].peer_id not in store.entries  # soonest expiry evicted
    pid = ids[-1].peer_id
    delays = [store.on_dial_failed(pid, 0.0, 0.5, 8.0) for _ in range(8)]
    assert 0.25 <= delays[0] <= 0.75 and all(4.0 <= d <= 12.0 for d in delays[5:])
    assert store.get(pid).next_dial_at == delays[-1]
    assert pid not in {e.peer_id for e in store.dial_candidates(1.0, set(), 10)}
    store.on_connected(pid, now)
    assert pid in {e.peer_id for e in store.dial_candidates(1.0, set(), 10)}


async def test_send_queue_is_bounded_in_bytes() -> None:
    async with hosts(2, send_queue_bytes=10_000) as (a, b):
        await a.dial(b.listen_addr)
        conn = a._conns[b.peer_id]
        await wait_for(lambda: conn._recv_ch.statistics().current_buffer_used == 0)
        big = GossipRPC(publish=[PublishedMessage(topic="t", data=b"z" * 4000)])
        results = [a.send_gossip(b.peer_id, big) for _ in range(5)]
        assert results[:2] == [True, True] and results[-2:] == [False, False]
        assert conn.queued_bytes <= 10_000
        # a request bigger than what is queued still goes through once the queue drains
        b.set_handler("echo", echo)
        assert await a.request(b.peer_id, "echo", b"r" * 12_000, timeout=2) == b"r" * 12_000


def _random_value(rng: random.Random, depth: int = 0):
    kinds = ["int", "neg", "bytes", "str", "bool", "none", "list", "map"] if depth < 3 else ["int", "bytes", "str"]
    k = rng.choice(kinds)
    if k == "int":
        return rng.choice([0, 1, 2**63 - 1, 2**64 - 1, rng.randrange(1 << 40)])
    if k == "neg":
        return -rng.randrange(1 << 40)
    if k == "bytes":
        return rng.randbytes(rng.choice([0, 1, 32, 100]))
    if k == "str":
        return rng.choice(["", "gpow/test/1", "x" * 300, "é"])
    if k == "bool":
        return rng.random() < 0.5
    if k == "none":
        return None
    if k == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [
        "req_id",
        "protocol",
        "payload",
        "ok",
        "error",
        "nonce",
        "reason",
        "records",
        "publish",
        "subscriptions",
        "ihave",
        "iwant",
        "graft",
        "prune",
        "topic",
        "data",
        "zzz",
    ]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


async def test_fuzzed_frames_never_crash_the_node(caplog) -> None:
    """Random frames, most well-formed msgpack with real type names and fields: every one is
    either handled or refused with a WireError; nothing raises inside the host."""
    import msgpack

    from node.net.framing import LINK_TYPES

    rng = random.Random(1234)
    async with hosts(2, max_bad_frames=10_000) as (a, b):
        await a.dial(b.listen_addr)
        b.set_handler("echo", echo)
        b.gossip.subscribe("gpow/test/1", lambda env: None)
        async with trio.open_nursery() as n:
            raw = Identity.generate()
            ws, _ = await open_raw_link(n, b.listen_addr, raw, network=NETWORK)
            for _ in range(400):
                body = _random_value(rng)
                frame = {"b": body, "t": rng.choice(list(LINK_TYPES) + ["hello", "nope"])}
                data = msgpack.packb(frame if rng.random() < 0.9 else body, use_bin_type=True)
                if rng.random() < 0.1:
                    data = bytearray(data)
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                    data = bytes(data)
                await ws.send_message(data)
            await ws.send_message(encode_frame(Request(req_id=99, protocol="echo", payload=b"alive")))
            assert (await _next_of(ws, Response)).payload == b"evila"
            n.cancel_scope.cancel()
        assert b.stats["bad_frames"] > 300
        assert await a.request(b.peer_id, "echo", b"ok", timeout=2) == b"ko"
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_a_large_frame_arriving_slowly_keeps_the_link_alive() -> None:
    """The peer's pings queue behind a big frame on a slow link: bytes arriving count as life."""
    from wsproto.events import BytesMessage

    async with hosts(1, dead_after_s=0.6, ping_interval_s=0.1) as (b,):
        b.set_handler("echo", echo)
        async with trio.open_nursery() as n:
            raw = Identity.generate()
            ws, _ = await open_raw_link(n, b.listen_addr, raw, network=NETWORK)
            frame = ws.channel.seal(encode_frame(Request(req_id=3, protocol="echo", payload=bytes(range(256)) * 600)))
            chunks = [frame[i : i + 8000] for i in range(0, len(frame), 8000)]
            for i, chunk in enumerate(chunks):  # about 2 s in all, over three times dead_after_s
                await ws._send(BytesMessage(data=chunk, message_finished=i == len(chunks) - 1))
                await trio.sleep(0.1)
            assert raw.peer_id in b.connected_peers()
            reply = await _next_of(ws, Response)
            assert reply.req_id == 3 and len(reply.payload) == 256 * 600
            n.cancel_scope.cancel()
        assert b.stats["links_closed_dead"] == 0


def test_net_params_are_checked() -> None:
    NetParams(bootstrap=["ws://10.0.0.1:7700", "ws://[::1]:7700"])
    for kw, word in [
        (dict(network=""), "network"),
        (dict(bootstrap=["10.0.0.1:7700"]), "bootstrap"),
        (dict(dead_after_s=1.0, ping_interval_s=2.0), "dead_after_s"),
        (dict(send_queue_frames=0), "send_queue"),
        (dict(pex_records=64), "pex_records"),
        (dict(listen_port=70000), "listen_port"),
    ]:
        with pytest.raises(ValueError, match=word):
            NetParams(**kw)


def _masked_binary_frame_header(length: int) -> bytes:
    """A client's binary websocket frame header (FIN, opcode 2, masked with key 0000: payload as is)."""
    if length < 126:
        return bytes([0x82, 0x80 | length]) + b"\0\0\0\0"
    if length < 1 << 16:
        return bytes([0x82, 0x80 | 126]) + length.to_bytes(2, "big") + b"\0\0\0\0"
    return bytes([0x82, 0x80 | 127]) + length.to_bytes(8, "big") + b"\0\0\0\0"


async def test_an_oversized_message_arriving_while_the_node_closes_the_link_does_not_kill_the_node() -> None:
    """Found by the 100k fuzz run: trio-websocket answers a message over its size limit with a 1009
    close; when the node is already closing that link (here: the handshake timed out while the
    message was still arriving), wsproto raises LocalProtocolError from the connection's reader
    task, which used to end the whole websocket server and with it the node. Now it ends one link."""
    async with hosts(2, max_frame_bytes=16 * 1024, handshake_timeout_s=0.3) as (a, b):
        b.set_handler("echo", echo)
        await a.dial(b.listen_addr)
        limit = MAX_HANDSHAKE_FRAME  # what the node buffers from a link that has not authenticated yet
        for _ in range(3):
            async with open_websocket_url(b.listen_addr) as ws:
                stream = ws._stream  # below wsproto: the bytes of one frame, sent in two parts
                await stream.send_all(_masked_binary_frame_header(limit + 4096) + b"\0" * (limit - 4096))
                await trio.sleep(0.6)  # the node gives up on the handshake and starts closing
                with trio.move_on_after(1):
                    try:
                        await stream.send_all(b"\0" * 8192)  # now the message is over the limit
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                await trio.sleep(0.2)
        assert await a.request(b.peer_id, "echo", b"alive", timeout=3) == b"evila"
        assert b.stats["handshake_refused.timeout"] >= 3 and b.stats["ws_internal_errors"] >= 1


def test_coalesce_rpcs_merges_publishes_and_keeps_control_in_place() -> None:
    from node.net.framing import coalesce_rpcs, rpc_size
    from node.wire.messages import IHave, Prune, PublishedMessage, SubOpt

    m = [PublishedMessage(topic="t", data=bytes([i]) * 100) for i in range(6)]
    rpcs = [
        GossipRPC(publish=[m[0]]),
        GossipRPC(publish=[m[1], m[2]]),
        GossipRPC(prune=[Prune(topic="t", backoff_s=1, peers=[])]),
        GossipRPC(publish=[m[3]]),
        GossipRPC(subscriptions=[SubOpt(topic="u")], ihave=[IHave(topic="t", ids=[bytes(32)])]),
        GossipRPC(publish=[m[4]]),
        GossipRPC(publish=[m[5]]),
    ]
    out = coalesce_rpcs(rpcs, 1 << 20)
    assert [len(r.publish) for r in out] == [3, 0, 1, 0, 2] and out[1] is rpcs[2] and out[3] is rpcs[4]
    assert [x for r in out for x in r.publish] == m  # nothing lost, order kept
    small = coalesce_rpcs([GossipRPC(publish=[x]) for x in m], 3 * 140 + 96)  # about three messages a frame
    assert [len(r.publish) for r in small] == [3, 3]
    for r in out:
        assert len(encode_frame(r)) <= rpc_size(r)


async def test_gossip_queued_behind_a_busy_writer_leaves_in_one_frame() -> None:
    async with hosts(2) as (a, b):
        got: list[bytes] = []
        b.gossip.subscribe("gpow/test/1", lambda env: got.append(env.body.reason))
        a.gossip.subscribe("gpow/test/1", lambda env: None)
        await a.dial(b.listen_addr)
        await wait_for(lambda: b.peer_id in a.gossip.router.mesh.get("gpow/test/1", ()))
        for i in range(20):  # in one go: the writer finds them all queued
            a.gossip.publish("gpow/test/1", Goodbye(reason=f"m{i}"))
        await wait_for(lambda: len(got) == 20)
        assert got == [f"m{i}" for i in range(20)]
        assert a.stats_dict()["gossip_rpcs_coalesced"] >= 18  # 20 RPCs in one or two frames
