"""Resource attacks, each bounded by a limit from config: oversized frames, a peer that never
reads, a peer that never finishes its handshake (and a TCP slowloris), a connection flood, a
subscription flood, and a flood of throwaway executor identities in rosters. Each time an honest
peer keeps being served."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, connect_websocket_url

from node.gossip.params import GossipParams
from node.identity import Identity
from node.net.connection import open_raw_link
from node.net.errors import PeerUnreachable
from node.net.framing import encode_frame
from node.net.host import Host
from node.net.params import NetParams
from node.roles import validator as validator_module
from node.wire import constants as C
from node.wire.envelope import encode_envelope
from node.wire.messages import ExecutorAttestation, GossipRPC, Request, Roster, SubOpt, Verdict
from tests.net.gossip_host import GossipHost

from .conftest import NETWORK, ErrorLog, make_cfg, start_node, wait_for

pytestmark = pytest.mark.slow


def net(**kw) -> NetParams:
    base = dict(
        listen_port=0,
        network=NETWORK,
        ping_interval_s=0.2,
        dead_after_s=2.0,
        maintain_interval_s=0.1,
        handshake_timeout_s=1.0,
        drain_timeout_s=0.3,
        max_frame_bytes=64 * 1024,
    )
    base.update(kw)
    return NetParams(**base)


@asynccontextmanager
async def victim_and_honest(**kw) -> AsyncIterator[tuple[Host, Host]]:
    """A victim host and an honest peer already connected to it, with an echo service."""
    v = GossipHost(Identity.generate(), net(**kw), "miner", GossipParams(heartbeat_s=0.1))
    h = GossipHost(Identity.generate(), net(), "validator", GossipParams(heartbeat_s=0.1))

    async def echo(peer: str, payload: bytes) -> bytes:
        return payload[::-1]

    v.set_handler("echo", echo)
    async with trio.open_nursery() as nursery:
        await nursery.start(v.run)
        await nursery.start(h.run)
        await h.dial(v.listen_addr)
        yield v, h
        nursery.cancel_scope.cancel()


async def served(h: Host, v: Host) -> None:
    assert await h.request(v.peer_id, "echo", b"still here", timeout=3) == b"ereh llits"


async def test_oversized_frames_are_refused_counted_and_penalised(error_log: ErrorLog):
    async with victim_and_honest(max_frame_bytes=64 * 1024) as (v, h), trio.open_nursery() as n:
        raw = Identity.generate()
        ws, _ = await open_raw_link(n, v.listen_addr, raw, network=NETWORK)
        # over max_frame_bytes but under the websocket ceiling: refused by the host's own check
        await ws.send_message(encode_frame(Request(req_id=1, protocol="echo", payload=b"x" * (70 * 1024))))
        await wait_for(lambda: v.stats["bad_frames.oversized"] == 1, 3, "the oversized frame")
        assert raw.peer_id in v.connected_peers()  # one bad frame does not cost the link
        # over the websocket ceiling (max_frame_bytes + 64 KiB): the websocket closes with 1009
        with pytest.raises(ConnectionClosed):
            await ws.send_message(b"\x00" * (200 * 1024))
            with trio.fail_after(3):
                while True:
                    await ws.get_message()
        await wait_for(lambda: raw.peer_id not in v.connected_peers(), 3, "the link to close")
        assert v.stats["bad_frames.oversized"] == 2
        assert v.gossip.score(raw.peer_id) < 0
        await served(h, v)
        n.cancel_scope.cancel()
    assert error_log.texts() == []


async def test_a_peer_that_never_reads_is_bounded_then_disconnected():
    """The victim gossips big messages to a subscriber that never reads: its send queue stays
    within send_queue_frames / send_queue_bytes, gossip to it is dropped, and after
    slow_peer_drops_before_disconnect drops the link is closed. The honest peer is served throughout."""
    limits = dict(
        send_queue_frames=8,
        send_queue_bytes=1024 * 1024,
        slow_peer_drops_before_disconnect=20,
        max_frame_bytes=1024 * 1024,
        dead_after_s=30.0,
    )
    topic = "gpow/test/1"
    async with victim_and_honest(**limits) as (v, h), trio.open_nursery() as n:
        v.gossip.subscribe(topic, lambda env: None)
        raw = Identity.generate()
        # a 1-message queue in the client's websocket and no reads: TCP buffers fill, then ours
        ws, _ = await open_raw_link(n, v.listen_addr, raw, network=NETWORK, max_message_size=4 << 20)
        await ws.send_message(encode_frame(GossipRPC(subscriptions=[SubOpt(topic=topic)])))
        await wait_for(lambda: topic in getattr(v.gossip.router.peers.get(raw.peer_id), "topics", ()), 3, "the subscription")
        conn = v._conns[raw.peer_id]
        big = Verdict(
            challenge_id=os.urandom(16),
            executor_id="x",
            miner_id="y",
            passed=False,
            reasons=["t"],
            n=0,
            steps=0,
            commit_us=0,
            openings_us=0,
            verify_us=0,
            expected_us=0,
            score_ppm=0,
            evidence=os.urandom(200 * 1024),
        )
        peak_frames = peak_bytes = 0
        with trio.fail_after(20):
            while raw.peer_id in v.connected_peers():
                v.gossip.publish(topic, big)
                peak_frames = max(peak_frames, conn._recv_ch.statistics().current_buffer_used)
                peak_bytes = max(peak_bytes, conn.queued_bytes)
                await served(h, v)
                await trio.sleep(0.01)
        assert v.stats["links_closed_slow"] == 1 and "slow peer" in (conn.closing_reason or "")
        assert v.stats["gossip_dropped_queue_full"] > 20
        assert peak_frames <= 8 and peak_bytes <= 1024 * 1024
        await served(h, v)
        n.cancel_scope.cancel()


async def test_handshake_that_never_completes_and_tcp_slowloris_time_out():
    async with victim_and_honest(handshake_timeout_s=0.5) as (v, h), trio.open_nursery() as n:
        # a websocket that opens and then says nothing: refused after handshake_timeout_s
        t0 = time.monotonic()
        ws = await connect_websocket_url(n, v.listen_addr)
        with pytest.raises(ConnectionClosed), trio.fail_after(5):
            while True:
                await ws.get_message()  # our Hello, their Hello, then the close
        assert v.stats["handshake_refused.timeout"] == 1 and time.monotonic() - t0 < 3
        # a TCP connection that sends half an HTTP upgrade request and stalls
        port = int(v.listen_addr.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        with trio.fail_after(5):
            while await stream.receive_some(4096):
                pass  # the server closes it: EOF
        await served(h, v)
        n.cancel_scope.cancel()


async def test_connection_flood_is_capped_by_max_inbound():
    """40 connections that never handshake against max_inbound = 8: the excess are refused (HTTP
    503) before any work; the held slots free after the handshake timeout; the honest peer's link
    is served throughout, and a new honest peer gets in once the flood has timed out."""
    async with victim_and_honest(max_inbound=8, handshake_timeout_s=1.0) as (v, h), trio.open_nursery() as n:
        opened: list = []
        outcome = {"refused": 0}

        async def flood_one() -> None:
            try:
                async with trio.open_nursery() as cn:
                    opened.append(await connect_websocket_url(cn, v.listen_addr))
                    await trio.sleep_forever()
            except BaseException as exc:  # 503 surfaces from the client's reader task, in a group
                if isinstance(exc, trio.Cancelled):
                    raise
                outcome["refused"] += 1

        for _ in range(40):
            n.start_soon(flood_one)
            await trio.sleep(0.01)
        await wait_for(lambda: len(opened) + outcome["refused"] == 40, 5, "every flood connection to be answered")
        refused = outcome["refused"]
        # the honest peer holds one inbound slot: 7 flood links at most got in
        assert len(opened) <= 7 and refused >= 33
        assert v.stats["inbound_rejected"] >= 33
        await served(h, v)
        late = GossipHost(Identity.generate(), net(), "validator", GossipParams(heartbeat_s=0.1))
        await n.start(late.run)
        await wait_for(lambda: v.stats["handshake_refused.timeout"] >= len(opened), 5, "the flood to time out")
        with trio.fail_after(5):  # slots free once the refused handshakes have said goodbye
            while True:
                try:
                    assert await late.dial(v.listen_addr) == v.peer_id
                    break
                except PeerUnreachable:
                    await trio.sleep(0.2)
        await served(h, v)
        n.cancel_scope.cancel()


async def _flood(n: trio.Nursery, addr: str, count: int) -> tuple[list, dict]:
    opened: list = []
    outcome = {"refused": 0}

    async def flood_one() -> None:
        try:
            async with trio.open_nursery() as cn:
                opened.append(await connect_websocket_url(cn, addr))
                await trio.sleep_forever()
        except BaseException as exc:  # 503 surfaces from the client's reader task, in a group
            if isinstance(exc, trio.Cancelled):
                raise
            outcome["refused"] += 1

    for _ in range(count):
        n.start_soon(flood_one)
        await trio.sleep(0.01)
    await wait_for(lambda: len(opened) + outcome["refused"] == count, 5, "every flood connection to be answered")
    return opened, outcome


async def test_connection_flood_from_one_ip_is_capped_per_ip():
    """With loopback not exempt, one address holds at most max_inbound_per_ip inbound links (the
    honest peer, on the same address, holds one); the rest are refused before any work, counted
    apart from the global limit, and the honest link is served throughout."""
    async with (
        victim_and_honest(max_inbound=64, max_inbound_per_ip=3, inbound_per_ip_exempt=[], handshake_timeout_s=1.0) as (v, h),
        trio.open_nursery() as n,
    ):
        opened, outcome = await _flood(n, v.listen_addr, 20)
        assert len(opened) == 2 and outcome["refused"] == 18
        assert v.stats["inbound_rejected_per_ip"] == 18 and v.stats["inbound_rejected"] == 0
        await served(h, v)
        n.cancel_scope.cancel()


async def test_loopback_is_exempt_from_the_per_ip_limit_by_default():
    async with (
        victim_and_honest(max_inbound=64, max_inbound_per_ip=2, handshake_timeout_s=1.0) as (v, h),
        trio.open_nursery() as n,
    ):
        opened, outcome = await _flood(n, v.listen_addr, 6)
        assert len(opened) == 6 and outcome["refused"] == 0
        await served(h, v)
        n.cancel_scope.cancel()


def test_per_ip_exemptions_are_checked() -> None:
    from node.net.params import NetParams

    p = NetParams(inbound_per_ip_exempt=["10.0.0.0/8"])
    assert not p.per_ip_limited("10.1.2.3") and p.per_ip_limited("192.168.1.1") and p.per_ip_limited("127.0.0.1")
    assert not NetParams().per_ip_limited("127.0.0.1") and not NetParams().per_ip_limited("::1")
    with pytest.raises(ValueError, match="inbound_per_ip_exempt"):
        NetParams(inbound_per_ip_exempt=["not-a-network"])


async def test_subscription_flood_is_capped_per_peer():
    async with victim_and_honest(max_bad_frames=1000) as (v, h), trio.open_nursery() as n:
        raw = Identity.generate()
        ws, _ = await open_raw_link(n, v.listen_addr, raw, network=NETWORK)
        cap = v.gossip.params.max_topics_per_peer
        for batch in range(40):  # 10,240 distinct topics, 256 per RPC, plus grafts onto them
            subs = [SubOpt(topic=f"flood/{batch}/{i}") for i in range(256)]
            await ws.send_message(encode_frame(GossipRPC(subscriptions=subs, graft=[s.topic for s in subs[:64]])))
        await ws.send_message(encode_frame(Request(req_id=1, protocol="echo", payload=b"x")))
        with trio.fail_after(5):
            while True:  # the flood has been processed once our own request is answered
                if b"response" in await ws.get_message():
                    break
        st = v.gossip.router.peers[raw.peer_id]
        assert len(st.topics) == cap
        assert len(v.gossip.router.topic_peers) <= cap + len(v.gossip.router.subscriptions) + 8
        assert not any(t.startswith("flood/") for t in v.gossip.router.mesh)  # grafts onto unknown topics go nowhere
        await served(h, v)
        n.cancel_scope.cancel()


async def test_throwaway_executor_identities_are_forgotten(tmp_path: Path, monkeypatch):
    """Rosters from a flood of throwaway identities are valid input: the validator learns them,
    but forgets every executor no roster has listed for ROSTER_LISTING_TTL_S, so they neither
    stay in memory nor keep being challenged. (TTL shortened to 1.5 s for the test.)"""
    monkeypatch.setattr(validator_module, "ROSTER_LISTING_TTL_S", 1.5)
    async with trio.open_nursery() as nursery:
        v = await start_node(nursery, make_cfg(tmp_path, "v", "validator", [], validator={"challenge_interval_s": 3600}))
        honest = await start_node(nursery, make_cfg(tmp_path, "m", "miner", [v.host.listen_addr]))
        now_ms = int(time.time() * 1000)
        for i in range(30):
            me, ex = Identity.generate(), Identity.generate()
            att = encode_envelope(
                ExecutorAttestation(
                    miner_id=me.peer_id,
                    engine="cpu",
                    gpu_model="cpu-reference",
                    memory_bytes=1 << 20,
                    gpu_uuid=f"CPU-{i}",
                    pci_bus_id="",
                    host_fingerprint=f"h{i}",
                    expires_ms=now_ms + 600_000,
                ),
                ex,
                seq=1,
                now_ms=now_ms,
            )
            ws, _ = await open_raw_link(nursery, v.host.listen_addr, me, network=NETWORK)
            roster = encode_envelope(Roster(version=1, entries=[att]), me, seq=2, now_ms=now_ms)
            from node.wire.messages import PublishedMessage

            await ws.send_message(encode_frame(GossipRPC(publish=[PublishedMessage(topic=C.TOPIC_ROSTER, data=roster)])))
            await ws.aclose()
        await wait_for(lambda: len(v.service.executors) >= 31, 10, "the throwaway executors to be learned")
        # the honest miner re-gossips its roster every 0.5 s: only its executor is kept
        await wait_for(lambda: set(v.service.executors) == set(honest.service.local), 10, "the throwaways to be forgotten")
        nursery.cancel_scope.cancel()
