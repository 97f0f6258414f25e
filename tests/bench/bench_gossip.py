"""Gossip benchmark: gpow's Host + GossipDriver against bare trio-websocket (the ceiling) and
py-libp2p GossipSub, same topology and load, one run on one machine.

    python tests/bench/bench_gossip.py [--nodes 10 30] [--messages 200] [--rate 20] [--size 1024] [--json FILE]

Every system runs all of its nodes in ONE trio process (the same as the project's network
tests): publish and delivery times share one clock, and each system gets the same single core
(a Python process uses one core; separate processes would let one system use both cores of the
2-core machine and mix scheduler noise into latencies). Systems run one after another.

Topology: node i dials 3 random earlier nodes (seeded; identical for the three systems). gpow
hosts keep exactly that graph (target_peers=0: no extra dials from peer exchange). Load: 5
publishers, round-robin, paced at a fixed offered rate; a message of --size bytes (gpow: the whole
signed envelope, py-libp2p and bare: the payload). Measured per message and receiver: publish to
application delivery.

This is a benchmark, not a test: pytest collects test_*.py only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer, connect_websocket_url

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from bench_gossip_load import TOPIC, LoadPlan, Recorder, SystemResult, run_plan, tag, topology, untag  # noqa: E402

from node.gossip.params import GossipParams  # noqa: E402
from node.gossip.router import Validation
from node.identity import Identity  # noqa: E402
from node.net.host import Host  # noqa: E402
from node.net.params import NetParams  # noqa: E402
from node.wire.envelope import Envelope  # noqa: E402
from node.wire.messages import Register  # noqa: E402
from tests.net.gossip_host import GossipHost  # noqa: E402

# py-libp2p lives in its own venv (its pins clash with ours): python3 -m venv V && V/bin/pip install libp2p
LIBP2P_PY = os.environ.get("GPOW_LIBP2P_PYTHON", "/work/libp2p-venv/bin/python")


async def wait_for(cond, timeout: float, step: float = 0.05) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(step)


# ---- gpow ---------------------------------------------------------------------------------------


async def bench_gpow(n: int, plan: LoadPlan, size: int) -> SystemResult:
    t_setup = time.perf_counter()
    topo = topology(n)
    hosts: list[Host] = []
    rec_box: list[Recorder] = [Recorder(n)]
    res = SystemResult("gpow", n, sum(len(t) for t in topo), 0.0)
    async with trio.open_nursery() as nursery:
        for i in range(n):
            p = NetParams(listen_port=0, network="gpow-bench", target_peers=0, bootstrap=[hosts[j].listen_addr for j in topo[i]])
            h = GossipHost(Identity.generate(), p, "miner", GossipParams(), rng=random.Random(i))
            await nursery.start(h.run)
            hosts.append(h)

        def handler(env: Envelope, i: int) -> None:
            rec_box[0].delivered(i, env.body.attestation)

        for i, h in enumerate(hosts):
            h.gossip.subscribe(
                TOPIC,
                lambda env, i=i: handler(env, i),
                lambda env: Validation.ACCEPT if isinstance(env.body, Register) else Validation.REJECT,
            )
        # the graph is up and every mesh is as full as the node's links allow (D_lo = 4)
        want = [len(t) for t in topo]
        for t in topo:
            for j in t:
                want[j] += 1
        await wait_for(lambda: all(len(h.connected_peers()) >= want[i] for i, h in enumerate(hosts)), 30)
        lo = GossipParams().D_lo

        def meshes() -> list[int]:
            return [h.gossip.stats_dict()["mesh"].get(TOPIC, 0) for h in hosts]

        try:
            await wait_for(lambda: all(m >= min(lo, want[i]) for i, m in enumerate(meshes())), 30)
        except trio.TooSlowError:
            # The same rule as for py-libp2p: a node whose few links include a hub that pruned it
            # (the hub keeps D of its many links) waits out the prune backoff. Measure anyway when
            # every mesh has a peer; a message that then misses a node fails that rate step.
            short = sum(1 for i, m in enumerate(meshes()) if m < min(lo, want[i]))
            await wait_for(lambda: min(meshes()) >= 1, 30)
            res.extra["setup_note"] = f"mesh short of min(D_lo, links) after 30 s at {short} node(s); measured anyway"
        res.setup_s = round(time.perf_counter() - t_setup, 2)

        # pad the body so the whole signed envelope is `size` bytes
        probe = hosts[0].gossip.signer.seal(Register(attestation=b"\0" * 100))
        pad = size - (len(probe) - 100)

        async def publish(node: int, idx: int) -> None:
            hosts[node].gossip.publish(TOPIC, Register(attestation=tag(idx) + b"\0" * (pad - 8)))

        def set_rec(r: Recorder) -> None:
            rec_box[0] = r

        await run_plan(res, n, publish, set_rec, plan)
        g = [h.gossip.stats_dict() for h in hosts]
        hs = [h.stats_dict() for h in hosts]
        res.extra = {
            **res.extra,
            "envelope_bytes": len(hosts[0].gossip.signer.seal(Register(attestation=b"\0" * pad))),
            "mesh_sizes": sorted(x["mesh"].get(TOPIC, 0) for x in g),
            "router_duplicates": sum(x["duplicates"] for x in g),
            "gossip_dropped_queue_full": sum(x.get("gossip_dropped_queue_full", 0) for x in hs),
            "invalid": sum(sum(x["invalid"].values()) for x in g),
        }
        nursery.cancel_scope.cancel()
    return res


# ---- bare trio-websocket flood (the ceiling) -----------------------------------------------------


class FloodNode:
    """A websocket node with no protocol at all: a frame is an 8-byte id plus payload; the first
    copy is delivered and forwarded to every other link, later copies are dropped. Per-link send
    queues of 256 frames (full: dropped), like the Host's."""

    def __init__(self, i: int, rec_box: list[Recorder]) -> None:
        self.i = i
        self.rec_box = rec_box
        self.links: dict[int, trio.MemorySendChannel[bytes]] = {}
        self.seen: set[int] = set()
        self.addr = ""
        self.dropped = 0
        self.nursery: trio.Nursery | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            server = WebSocketServer(
                self._on_request, listeners, handler_nursery=nursery, message_queue_size=2, receive_buffer_size=64 * 1024
            )
            await nursery.start(server.run)
            self.addr = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            task_status.started()

    async def _on_request(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        peer = int(await ws.get_message())
        await self._link(ws, peer)

    async def dial(self, other: FloodNode) -> None:
        assert self.nursery is not None
        ws = await connect_websocket_url(self.nursery, other.addr, message_queue_size=2, receive_buffer_size=64 * 1024)
        await ws.send_message(str(self.i))
        self.nursery.start_soon(self._link, ws, other.i)

    async def _link(self, ws: WebSocketConnection, peer: int) -> None:
        send, recv = trio.open_memory_channel[bytes](256)
        self.links[peer] = send
        try:
            async with trio.open_nursery() as n:
                n.start_soon(self._writer, ws, recv)
                while True:
                    self.on_frame(peer, await ws.get_message())
        except ConnectionClosed:
            pass

    @staticmethod
    async def _writer(ws: WebSocketConnection, recv: trio.MemoryReceiveChannel[bytes]) -> None:
        async for frame in recv:
            await ws.send_message(frame)

    def send_all(self, frame: bytes, exclude: int) -> None:
        for peer, ch in self.links.items():
            if peer != exclude:
                try:
                    ch.send_nowait(frame)
                except trio.WouldBlock:
                    self.dropped += 1

    def on_frame(self, peer: int, frame: bytes) -> None:
        idx = untag(frame)
        if idx in self.seen:
            return
        self.seen.add(idx)
        self.rec_box[0].delivered(self.i, idx)
        self.send_all(frame, exclude=peer)

    def publish(self, frame: bytes) -> None:
        self.seen.add(untag(frame))
        self.send_all(frame, exclude=-1)


async def bench_bare(n: int, plan: LoadPlan, size: int) -> SystemResult:
    t_setup = time.perf_counter()
    topo = topology(n)
    rec_box: list[Recorder] = [Recorder(n)]
    nodes = [FloodNode(i, rec_box) for i in range(n)]
    res = SystemResult("bare-trio-websocket", n, sum(len(t) for t in topo), 0.0)
    async with trio.open_nursery() as nursery:
        for i, node in enumerate(nodes):
            await nursery.start(node.run)
            for j in topo[i]:
                await node.dial(nodes[j])
        want = [len(t) for t in topo]
        for t in topo:
            for j in t:
                want[j] += 1
        await wait_for(lambda: all(len(x.links) >= want[i] for i, x in enumerate(nodes)), 30)
        res.setup_s = round(time.perf_counter() - t_setup, 2)
        body = b"\0" * (size - 8)

        async def publish(node: int, idx: int) -> None:
            nodes[node].publish(tag(idx) + body)

        def set_rec(r: Recorder) -> None:
            rec_box[0] = r

        await run_plan(res, n, publish, set_rec, plan)
        res.extra = {"dropped_queue_full": sum(x.dropped for x in nodes)}
        nursery.cancel_scope.cancel()
    return res


# ---- py-libp2p (its own interpreter) --------------------------------------------------------------


def bench_libp2p(n: int, plan: LoadPlan, size: int, timeout_s: float) -> SystemResult:
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_gossip_libp2p_{os.getpid()}_{n}.json"
    cmd = [
        LIBP2P_PY,
        str(HERE / "bench_gossip_libp2p.py"),
        "--nodes",
        str(n),
        "--size",
        str(size),
        "--plan",
        json.dumps(plan.__dict__),
        "--json",
        str(out),
    ]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, err = -1, f"timed out after {timeout_s:g} s; stderr tail: {(exc.stderr or b'')[-800:]!r}"
    except FileNotFoundError as exc:
        rc, err = -1, f"py-libp2p interpreter missing: {exc}"
    if rc == 0 and out.exists():
        d = json.loads(out.read_text())
        out.unlink()
        res = SystemResult(
            d["system"],
            d["nodes"],
            d["links"],
            d["setup_s"],
            max_sustained_rate=d["max_sustained_rate"],
            error=d.get("error", ""),
            extra=d.get("extra", {}),
        )
        res.fixed, res.at_max, res.ramp = d["fixed"], d["at_max"], d["ramp"]  # kept as plain dicts
        return res
    tail = "\n".join(err.strip().splitlines()[-6:]) if isinstance(err, str) else str(err)
    return SystemResult("py-libp2p-gossipsub", n, 0, round(time.perf_counter() - t0, 1), error=f"exit {rc}: {tail}")


# ---- report -------------------------------------------------------------------------------------


def _get(step, key):
    if step is None:
        return None
    return step[key] if isinstance(step, dict) else getattr(step, key)


def table(results: list[SystemResult], plan: LoadPlan) -> str:
    rows = [
        f"| nodes | system | max sustained msgs/s (to every node) | p50 / p99 ms at {plan.fixed_rate:g} msgs/s "
        f"| p50 / p99 ms at max rate | error |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        fx, mx = r.fixed, r.at_max
        fixed = f"{_get(fx, 'p50_ms')} / {_get(fx, 'p99_ms')}" if fx else "-"
        if fx and _get(fx, "missing_deliveries"):
            fixed += f" ({_get(fx, 'missing_deliveries')} deliveries missing)"
        atmax = f"{_get(mx, 'p50_ms')} / {_get(mx, 'p99_ms')}" if mx else "-"
        rows.append(
            f"| {r.nodes} | {r.system} | {r.max_sustained_rate:g} | {fixed} | {atmax} | "
            f"{(r.error or r.extra.get('setup_note', ''))[:120]} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--messages", type=int, default=200, help="messages in the fixed-rate latency run")
    ap.add_argument("--rate", type=float, default=20.0, help="offered msgs/s of the fixed-rate latency run")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--systems", nargs="+", default=["gpow", "bare", "libp2p"])
    ap.add_argument("--budget", type=float, default=40.0, help="seconds of rate ramp per system and size")
    ap.add_argument("--profile", default="", help="cProfile the gpow runs into this file")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    plan = LoadPlan(fixed_rate=a.rate, fixed_messages=a.messages, budget_s=a.budget)
    results: list[SystemResult] = []
    t0 = time.perf_counter()
    for n in a.nodes:
        for system in a.systems:
            t = time.perf_counter()
            if system == "gpow":
                if a.profile:
                    import cProfile

                    prof = cProfile.Profile()
                    prof.enable()
                    r = trio.run(bench_gpow, n, plan, a.size)
                    prof.disable()
                    prof.dump_stats(f"{a.profile}.{n}")
                else:
                    r = trio.run(bench_gpow, n, plan, a.size)
            elif system == "bare":
                r = trio.run(bench_bare, n, plan, a.size)
            elif system == "libp2p":
                r = bench_libp2p(n, plan, a.size, timeout_s=plan.budget_s + 120)
            else:
                raise SystemExit(f"unknown system {system}")
            results.append(r)
            print(
                f"[{n} nodes] {r.system}: max sustained {r.max_sustained_rate:g} msgs/s; fixed-rate "
                f"p50 {_get(r.fixed, 'p50_ms')} ms p99 {_get(r.fixed, 'p99_ms')} ms; setup {r.setup_s} s; "
                f"{time.perf_counter() - t:.0f} s {('ERROR ' + r.error) if r.error else ''}",
                flush=True,
            )
    print()
    print(table(results, plan))
    by = {(r.nodes, r.system): r for r in results}
    for n in a.nodes:
        g, l = by.get((n, "gpow")), by.get((n, "py-libp2p-gossipsub"))
        if g and l and l.max_sustained_rate:
            print(f"{n} nodes: gpow / py-libp2p max sustained rate = {g.max_sustained_rate / l.max_sustained_rate:.2f}x")
    print(f"total {time.perf_counter() - t0:.0f} s")
    if a.json:
        meta = {
            "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "plan": plan.__dict__,
        }
        Path(a.json).write_text(
            json.dumps(
                {"meta": meta, "results": [r.to_dict() for r in results]},
                indent=1,
                default=lambda o: o.__dict__ if hasattr(o, "__dict__") else str(o),
            )
        )


if __name__ == "__main__":
    main()
