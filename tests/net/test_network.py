"""Networks of real Hosts on loopback in one process: discovery, gossip delivery, graylisting of a
forger, reconnection after a restart, and a relayed handshake refused."""

from __future__ import annotations

import random
import time
from collections import Counter

import trio

from node.gossip.params import GossipParams
from node.gossip.router import Validation
from node.identity import Identity
from node.net.connection import open_raw_link
from node.net.framing import decode_frame, encode_frame
from node.net.handshake import Handshake
from node.net.host import Host
from node.net.params import NetParams
from node.wire.envelope import decode_envelope, encode_envelope
from node.wire.errors import WireError
from node.wire.messages import Deregister, Goodbye, GossipRPC, PublishedMessage, SubOpt
from tests.net.gossip_host import GossipHost

NETWORK = "gpow-test"
TOPIC = "gpow/test/1"


def net_params(**kw) -> NetParams:
    base = dict(
        listen_port=0,
        network=NETWORK,
        ping_interval_s=0.3,
        dead_after_s=3.0,
        maintain_interval_s=0.1,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
        pex_interval_s=0.3,
        dial_timeout_s=2.0,
        handshake_timeout_s=2.0,
        drain_timeout_s=0.5,
        target_peers=4,
    )
    base.update(kw)
    return NetParams(**base)


def gossip_params() -> GossipParams:
    # Heartbeats 10x faster than the default; the message cache keeps 2 s of history (as 2
    # default heartbeats would), so lazy IHAVE/IWANT recovery is not ten times tighter than in
    # production (with 5 heartbeats = 0.5 s an IWANT answered late on a loaded 2-core box missed).
    return GossipParams(heartbeat_s=0.1, D=4, D_lo=3, D_hi=8, D_lazy=4, D_out=1, mcache_len=20)


def now_ms() -> int:
    return int(time.time() * 1000)


async def wait_for(cond, timeout: float = 10.0, step: float = 0.05, why=None) -> None:
    """Poll ``cond``; on timeout fail with ``why()`` (the state that explains it), if given."""
    with trio.move_on_after(timeout):
        while not cond():
            await trio.sleep(step)
        return
    raise AssertionError(f"not reached within {timeout:g} s" + (f": {why()}" if why is not None else ""))


async def start_network(nursery: trio.Nursery, n: int, bootstrap_of, **kw) -> list[Host]:
    """Start hosts one by one; host i bootstraps to the addresses bootstrap_of(i, hosts)."""
    hosts: list[Host] = []
    for i in range(n):
        p = net_params(**kw)
        p.bootstrap = bootstrap_of(i, hosts)
        h = GossipHost(Identity.generate(), p, "miner", gossip_params(), rng=random.Random(i))
        await nursery.start(h.run)
        hosts.append(h)
    return hosts


async def test_line_bootstrap_discovers_peers_beyond_the_bootstrap_list() -> None:
    async with trio.open_nursery() as nursery:
        hosts = await start_network(nursery, 10, lambda i, hs: [hs[i - 1].listen_addr] if i else [])
        # every node fills its links up to target_peers from peers it learned through exchange
        await wait_for(lambda: all(len(h.connected_peers()) >= 4 for h in hosts))
        learned_dials = 0
        for i, h in enumerate(hosts):
            boot = {hosts[i - 1].peer_id} if i else set()
            assert set(h.connected_peers()) - boot, f"node {i} is linked to its bootstrap only"
            # links this node dialled to peers it was never told about in its config
            learned_dials += len({pid for pid, info in h.connected_peers().items() if info.outbound} - boot)
            assert len(h.peerstore) >= 6
        assert learned_dials >= 5
        assert all(h.stats["peer_records_learned"] > 1 for h in hosts)
        nursery.cancel_scope.cancel()


async def test_star_bootstrap_leaves_find_each_other_and_refill_when_peers_leave() -> None:
    async with trio.open_nursery() as nursery:
        scopes: list[trio.CancelScope] = []
        hosts: list[Host] = []
        for i in range(12):
            p = net_params()
            p.bootstrap = [hosts[0].listen_addr] if hosts else []
            h = GossipHost(Identity.generate(), p, "miner", gossip_params(), rng=random.Random(100 + i))
            scope = trio.CancelScope()
            scopes.append(scope)

            async def run(h=h, scope=scope, *, task_status=trio.TASK_STATUS_IGNORED):
                with scope:
                    await h.run(task_status=task_status)

            await nursery.start(run)
            hosts.append(h)
        hub, leaves = hosts[0], hosts[1:]
        await wait_for(lambda: all(len(set(l.connected_peers()) - {hub.peer_id}) >= 3 for l in leaves))
        # three leaves go away: the others keep their links filled from what they know
        gone = leaves[:3]
        for h in gone:
            await h.aclose("leaving")
        left = leaves[3:]
        gone_ids = {h.peer_id for h in gone}
        await wait_for(lambda: all(not (set(l.connected_peers()) & gone_ids) and len(l.connected_peers()) >= 4 for l in left))
        nursery.cancel_scope.cancel()


async def test_thirty_nodes_every_app_sees_each_message_exactly_once() -> None:
    async with trio.open_nursery() as nursery:
        rng = random.Random(7)
        hosts = await start_network(nursery, 30, lambda i, hs: [h.listen_addr for h in rng.sample(hs, min(2, i))])
        seen: dict[str, Counter] = {h.peer_id: Counter() for h in hosts}
        for h in hosts:
            h.gossip.subscribe(
                TOPIC,
                lambda env, pid=h.peer_id: seen[pid].update([(env.sender, env.body.reason)]),
                lambda env: Validation.ACCEPT if isinstance(env.body, Deregister) else Validation.REJECT,
            )
        await wait_for(lambda: all(h.gossip.stats_dict()["mesh"].get(TOPIC, 0) >= 2 for h in hosts))
        by_id = {h.peer_id: h for h in hosts}

        def mesh_symmetric() -> bool:  # every GRAFT answered: a mesh link is a mesh link at both ends
            return all(
                h.peer_id in by_id[q].gossip.router.mesh.get(TOPIC, ())
                for h in hosts
                for q in h.gossip.router.mesh.get(TOPIC, ())
            )

        await wait_for(mesh_symmetric)
        publishers = hosts[:5]
        expected = Counter()
        for k in range(3):
            for p in publishers:
                p.gossip.publish(TOPIC, Deregister(reason=f"m{k}"))
                expected[(p.peer_id, f"m{k}")] = 1
            await trio.sleep(0.05)

        def complete() -> bool:
            return all(set(seen[h.peer_id]) == {m for m in expected if m[0] != h.peer_id} for h in hosts)

        def missing() -> str:
            lines = []
            for i, h in enumerate(hosts):
                lack = {m for m in expected if m[0] != h.peer_id} - set(seen[h.peer_id])
                if lack:
                    st = h.gossip.stats_dict()
                    lines.append(
                        f"host {i}: missing {sorted((p[-6:], m) for p, m in lack)}, "
                        f"peers {len(h.connected_peers())}, mesh {st['mesh'].get(TOPIC, 0)}, "
                        f"host stats {dict(h.stats)}, gossip {st}"
                    )
            return "; ".join(lines)

        await wait_for(complete, why=missing)
        await trio.sleep(1.0)  # several heartbeats: IHAVE/IWANT gossip must not cause redelivery
        for h in hosts:
            assert all(c == 1 for c in seen[h.peer_id].values()), h.peer_id
            assert not any(m[0] == h.peer_id for m in seen[h.peer_id])  # no local delivery
        assert sum(h.stats["bad_frames"] for h in hosts) == 0
        # the mesh did deliver copies more than once; the router suppressed them
        assert sum(h.gossip.stats_dict()["duplicates"] for h in hosts) > 0
        nursery.cancel_scope.cancel()


async def test_a_burst_of_300_messages_reaches_every_node_whole() -> None:
    """Issue 19: 300 messages published at once (faster than any link drains) must all arrive,
    each once, at every node. A burst used to be 300 frames per link against a queue of 256
    frames: the rest were dropped. Queued RPCs now share a queue entry and leave in few frames."""
    async with trio.open_nursery() as nursery:
        rng = random.Random(3)
        hosts = await start_network(nursery, 10, lambda i, hs: [h.listen_addr for h in rng.sample(hs, min(3, i))])
        seen: dict[str, Counter] = {h.peer_id: Counter() for h in hosts}
        for h in hosts:
            h.gossip.subscribe(
                TOPIC,
                lambda env, pid=h.peer_id: seen[pid].update([env.body.reason]),
                lambda env: Validation.ACCEPT if isinstance(env.body, Deregister) else Validation.REJECT,
            )
        by_id = {h.peer_id: h for h in hosts}
        await wait_for(
            lambda: (
                all(h.gossip.stats_dict()["mesh"].get(TOPIC, 0) >= 2 for h in hosts)
                and all(
                    h.peer_id in by_id[q].gossip.router.mesh.get(TOPIC, ())
                    for h in hosts
                    for q in h.gossip.router.mesh.get(TOPIC, ())
                )
            )
        )
        src = hosts[0]
        for k in range(300):  # no checkpoint in between: all 300 are queued before any is sent
            src.gossip.publish(TOPIC, Deregister(reason=f"b{k}"))
        want = {f"b{k}" for k in range(300)}

        def missing() -> str:
            return "; ".join(
                f"host {i}: {len(want - set(seen[h.peer_id]))} missing, dropped {h.stats['gossip_dropped_queue_full']}"
                for i, h in enumerate(hosts[1:], 1)
            )

        await wait_for(lambda: all(set(seen[h.peer_id]) == want for h in hosts[1:]), timeout=30, why=missing)
        assert all(max(seen[h.peer_id].values()) == 1 for h in hosts[1:])
        assert sum(h.stats["gossip_dropped_queue_full"] for h in hosts) == 0
        nursery.cancel_scope.cancel()


def forged(identity: Identity, i: int) -> bytes:
    """A well-formed envelope whose signature does not verify (one bit flipped in the body)."""
    good = encode_envelope(Deregister(reason=f"forged {i}"), identity, seq=i + 1, now_ms=now_ms())
    env = decode_envelope(good)
    sig_at = good.index(env.signature)
    return good[:sig_at] + bytes([good[sig_at] ^ 1]) + good[sig_at + 1 :]


async def test_forger_is_graylisted_by_its_neighbours() -> None:
    async with trio.open_nursery() as nursery:
        hosts = await start_network(nursery, 5, lambda i, hs: [hs[0].listen_addr] if i else [])
        delivered: Counter = Counter()
        for h in hosts:
            h.gossip.subscribe(TOPIC, lambda env, pid=h.peer_id: delivered.update([pid]))
        await wait_for(lambda: all(len(h.connected_peers()) >= 3 for h in hosts))
        evil = Identity.generate()
        victims = hosts[:3]
        async with trio.open_nursery() as raw_n:
            links = [(await open_raw_link(raw_n, v.listen_addr, evil, network=NETWORK))[0] for v in victims]
            for ws in links:
                await ws.send_message(encode_frame(GossipRPC(subscriptions=[SubOpt(topic=TOPIC)])))
            for i in range(6):
                for j, ws in enumerate(links):
                    rpc = GossipRPC(publish=[PublishedMessage(topic=TOPIC, data=forged(evil, 100 * j + i))])
                    await ws.send_message(encode_frame(rpc))
            await wait_for(lambda: all(not v.gossip.accepts_from(evil.peer_id) for v in victims), timeout=5)
            # further gossip frames from the forger are dropped by the host before the router
            for ws in links:
                await ws.send_message(encode_frame(GossipRPC(subscriptions=[SubOpt(topic=TOPIC)])))
            await wait_for(lambda: all(v.stats["gossip_dropped_graylisted"] >= 1 for v in victims), timeout=5)
            raw_n.cancel_scope.cancel()
        assert sum(delivered.values()) == 0  # nothing forged reached an application
        # honest traffic still flows everywhere
        hosts[4].gossip.publish(TOPIC, Deregister(reason="honest"))
        await wait_for(lambda: all(delivered[h.peer_id] == 1 for h in hosts[:4]))
        nursery.cancel_scope.cancel()


async def test_restarted_peer_is_reconnected() -> None:
    async with trio.open_nursery() as nursery:
        hub_id = Identity.generate()
        hub_scope = trio.CancelScope()
        hub = GossipHost(hub_id, net_params(), "validator", gossip_params())

        async def run_hub(h: Host, scope: trio.CancelScope, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await h.run(task_status=task_status)

        await nursery.start(run_hub, hub, hub_scope)
        port = int(hub.listen_addr.rsplit(":", 1)[1])
        leaves = await start_network(nursery, 4, lambda i, hs: [hub.listen_addr])
        await wait_for(lambda: len(hub.connected_peers()) == 4)
        hub_scope.cancel()  # the hub dies (no graceful goodbye beyond the shielded one)
        await wait_for(lambda: all(hub_id.peer_id not in l.connected_peers() for l in leaves))
        await trio.sleep(0.3)
        # it comes back on the same address with the same key; the leaves redial with backoff
        hub2 = GossipHost(hub_id, net_params(listen_port=port), "validator", gossip_params())
        got: list[str] = []
        hub2.gossip.subscribe(TOPIC, lambda env: got.append(env.body.reason))
        for l in leaves:
            l.gossip.subscribe(TOPIC, lambda env: None)
        await nursery.start(run_hub, hub2, trio.CancelScope())
        await wait_for(lambda: all(hub_id.peer_id in l.connected_peers() for l in leaves))
        assert all(l.stats["dials_failed"] >= 1 or l.stats["dials_ok"] >= 2 for l in leaves)
        await wait_for(lambda: hub2.gossip.stats_dict()["mesh"].get(TOPIC, 0) >= 1)
        leaves[0].gossip.publish(TOPIC, Deregister(reason="after restart"))
        await wait_for(lambda: got == ["after restart"])
        nursery.cancel_scope.cancel()


async def test_relayed_handshake_is_refused() -> None:
    """M asks honest A to sign B's nonce, then presents A's Hello and HelloAuth to B as if it were
    A. B refuses: the HelloAuth names M as the peer it was made for."""
    async with trio.open_nursery() as nursery:
        a, b = await start_network(nursery, 2, lambda i, hs: [])
        m = Identity.generate()
        async with trio.open_nursery() as raw_n:
            from trio_websocket import connect_websocket_url

            to_b = await connect_websocket_url(raw_n, b.listen_addr)
            b_hello = decode_envelope(await to_b.get_message())
            to_a = await connect_websocket_url(raw_n, a.listen_addr)
            m_hs = Handshake(m, network=NETWORK, role="miner", listen_addrs=[], nonce=b_hello.body.nonce, now_ms=now_ms(), seq=1)
            await to_a.send_message(m_hs.initial_frames()[0])
            a_hello = await to_a.get_message()
            a_auth = await to_a.get_message()
            assert decode_envelope(a_auth).body.your_nonce == b_hello.body.nonce
            await to_b.send_message(a_hello)
            await to_b.send_message(a_auth)
            with trio.fail_after(3):
                while True:
                    try:
                        msg = decode_frame(await to_b.get_message(), max_bytes=1 << 20)
                    except WireError:
                        continue
                    if isinstance(msg, Goodbye):
                        break
            assert "made for" in msg.reason
            raw_n.cancel_scope.cancel()
        assert b.stats["handshake_refused.relayed"] == 1
        assert a.peer_id not in b.connected_peers()
        nursery.cancel_scope.cancel()
