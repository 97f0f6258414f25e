"""Prometheus text endpoint (optional, ``[node].metrics_port`` on ``[node].metrics_host``).

Read from the node's live status at scrape time, so nothing is counted twice. Conventions
(https://prometheus.io/docs/practices/naming/): base units (``_seconds``, ``_bytes``), ``_total``
only on counters (counts since the process started, which only go up), a help text on every
family, and labels only where their values are bounded: ``role`` everywhere, ``direction``,
``reason`` (a fixed vocabulary of codes), ``topic``, ``executor`` (executors a validator tracks or a
miner runs, bounded by the roster limits) and ``quantile`` for the link round trips.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from node import __version__

# The host's point-in-time values; every other number it reports is an event counter.
NET_GAUGES: dict[str, tuple[str, str]] = {
    "dialing": ("gpow_net_dialing", "outbound dials in progress"),
    "peer_store": ("gpow_net_peer_store_entries", "peers known from signed peer records"),
    "queued_frames": ("gpow_net_receive_queue_frames", "frames received and not yet processed, all links"),
    "queued_bytes": ("gpow_net_send_queue_bytes", "bytes queued to send, all links"),
    "inbound_sockets": ("gpow_net_inbound_sockets", "open inbound TCP sockets, before and after the handshake"),
    "inbound_socket_cap": ("gpow_net_inbound_sockets_limit", "inbound sockets accepted at most (below the file limit)"),
    "nofile_limit": ("gpow_net_open_files_limit", "the process's soft RLIMIT_NOFILE"),
    # a sum over the links up now: it falls when a link closes, so it is no counter
    "gossip_rpcs_coalesced": (
        "gpow_net_open_links_gossip_rpcs_coalesced",
        "gossip RPCs sent merged into one frame, summed over the links up now",
    ),
}
GOSSIP_GAUGES: dict[str, tuple[str, str]] = {
    "peers": ("gpow_gossip_peers", "peers speaking gossip"),
    "graylisted": ("gpow_gossip_graylisted_peers", "peers whose score is below the graylist threshold"),
    "seen": ("gpow_gossip_seen_ids", "message ids remembered for duplicate suppression"),
    "mcache": ("gpow_gossip_message_cache_messages", "messages held for IWANT"),
    "mcache_bytes": ("gpow_gossip_message_cache_bytes", "bytes held for IWANT"),
}
GOSSIP_COUNTERS: dict[str, tuple[str, str]] = {
    "published": ("gpow_gossip_published", "messages this node published"),
    "delivered": ("gpow_gossip_delivered", "messages delivered to this node's roles"),
    "duplicates": ("gpow_gossip_duplicates", "duplicate copies dropped"),
    "equivocations": ("gpow_gossip_equivocations", "origins caught signing two messages with one sequence number"),
    "broken_promises": ("gpow_gossip_broken_promises", "IWANT promises a peer did not keep"),
    "heartbeats": ("gpow_gossip_heartbeats", "router heartbeats"),
}
GOSSIP_BY_REASON: dict[str, tuple[str, str]] = {
    "invalid": ("gpow_gossip_invalid_messages", "messages rejected as invalid, by reason"),
    "ignored": ("gpow_gossip_ignored_messages", "messages ignored (not penalised), by reason"),
    "penalties": ("gpow_gossip_penalties", "penalties applied to peers, by reason"),
}


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _name(key: str) -> str:
    """A status key as a metric name part (letters, digits, underscores)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def _reason(key: str) -> str:
    """A reason code without its free-text detail (``false-proof:relation...`` -> ``false-proof``)."""
    return key.split(":", 1)[0]


class NodeCollector:
    """Builds every metric family from ``node.status()`` when Prometheus scrapes."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        st = self.node.status()
        role = st.get("role") or "node"

        def gauge(name: str, doc: str, value: float, **labels: str) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=["role", *labels])
            g.add_metric([role, *labels.values()], value)
            return g

        def counter(name: str, doc: str, value: float, **labels: str) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=["role", *labels])
            c.add_metric([role, *labels.values()], value)
            return c

        info = InfoMetricFamily("gpow_node", "this node: role, peer id and software version", labels=["role"])
        info.add_metric([role], {"peer_id": st.get("peer_id", ""), "version": __version__})
        yield info
        if st.get("started_ms"):
            yield gauge("gpow_node_start_time_seconds", "when the node started (Unix time)", st["started_ms"] / 1000)

        net = st.get("net") or {}
        peers = GaugeMetricFamily("gpow_net_peers", "connected peers by direction of the link", labels=["role", "direction"])
        peers.add_metric([role, "inbound"], net.get("inbound", 0))
        peers.add_metric([role, "outbound"], net.get("outbound", 0))
        yield peers
        by_role = GaugeMetricFamily(
            "gpow_net_peers_by_role", "connected peers by the role they announced", labels=["role", "peer_role"]
        )
        for r in ("validator", "miner", "executor"):
            by_role.add_metric([role, r], sum(1 for p in (st.get("peers") or {}).values() if p.get("role") == r))
        yield by_role
        for key, (name, doc) in NET_GAUGES.items():
            if _num(net.get(key)):
                yield gauge(name, doc, net[key])
        if _num(net.get("rtt_ms_median")):
            rtt = GaugeMetricFamily(
                "gpow_net_link_rtt_seconds",
                "keepalive round trip over the node's links (quantile 0.5: the median link, 1: the slowest)",
                labels=["role", "quantile"],
            )
            rtt.add_metric([role, "0.5"], net["rtt_ms_median"] / 1000)
            rtt.add_metric([role, "1"], net.get("rtt_ms_max", net["rtt_ms_median"]) / 1000)
            yield rtt
        # The host's event counters: "name" or "name.reason" (a fixed vocabulary of codes).
        plain: dict[str, float] = {}
        by_reason: dict[str, dict[str, float]] = {}
        for key, value in net.items():
            if key in NET_GAUGES or key in ("peers", "inbound", "outbound") or key.startswith("rtt_ms") or not _num(value):
                continue
            base, _, reason = key.partition(".")
            if reason:
                by_reason.setdefault(base, {})[reason] = value
            else:
                plain[base] = value
        for base, value in sorted(plain.items()):
            yield counter(f"gpow_net_{_name(base)}", f"link layer events: {base.replace('_', ' ')}", value)
        for base, reasons in sorted(by_reason.items()):
            c = CounterMetricFamily(
                f"gpow_net_{_name(base)}_by_reason",
                f"link layer events: {base.replace('_', ' ')}, by reason",
                labels=["role", "reason"],
            )
            for reason, value in sorted(reasons.items()):
                c.add_metric([role, reason], value)
            yield c

        gossip = net.get("gossip") or {}
        for key, (name, doc) in GOSSIP_GAUGES.items():
            if _num(gossip.get(key)):
                yield gauge(name, doc, gossip[key])
        if isinstance(gossip.get("mesh"), dict):
            mesh = GaugeMetricFamily("gpow_gossip_mesh_peers", "peers in this node's mesh, per topic", labels=["role", "topic"])
            for topic, n in sorted(gossip["mesh"].items()):
                mesh.add_metric([role, topic], n)
            yield mesh
        for key, (name, doc) in GOSSIP_COUNTERS.items():
            if _num(gossip.get(key)):
                yield counter(name, doc, gossip[key])
        for key, (name, doc) in GOSSIP_BY_REASON.items():
            if isinstance(gossip.get(key), dict):
                c = CounterMetricFamily(name, doc, labels=["role", "reason"])
                for reason, value in sorted(gossip[key].items()):
                    if _num(value):
                        c.add_metric([role, str(reason)], value)
                yield c

        yield from self._validator(st.get("validator"), role, gauge, counter)
        yield from self._miner(st.get("miner"), role, counter)
        ex = st.get("executor")
        if ex:
            yield gauge("gpow_executor_registered", "1 while registered with its miner", 1 if ex.get("registered") else 0)
            yield gauge("gpow_executor_busy", "1 while a challenge is being answered", 1 if ex.get("busy") else 0)
            for key in ("challenges", "commitments", "openings", "busy", "refused"):
                if _num(ex.get(key)):
                    name = "gpow_executor_busy_answers" if key == "busy" else f"gpow_executor_{key}"
                    yield counter(name, f"executor: {key} since start" if key != "busy" else "challenges answered BUSY", ex[key])

        ag = st.get("agreement") or {}
        vs = ag.get("validator_set") or {}
        if isinstance(vs.get("validators"), list):
            yield gauge("gpow_admission_validators", "validators in the admitted set", len(vs["validators"]))
        if _num(ag.get("rejected_verdicts")):
            yield counter(
                "gpow_agreement_rejected_verdicts", "verdicts rejected (signer outside the admitted set)", ag["rejected_verdicts"]
            )
        agreed = ag.get("agreed_scores") or {}
        if agreed:
            g = GaugeMetricFamily(
                "gpow_agreed_score",
                "an executor's agreed score: the median over validators of their "
                "pass rates (absent until enough validators judged it)",
                labels=["role", "executor"],
            )
            for eid, a in sorted(agreed.items()):
                if a.get("score") is not None:
                    g.add_metric([role, eid], a["score"])
            yield g

    @staticmethod
    def _validator(v: dict | None, role: str, gauge: Any, counter: Any) -> Iterator[Metric]:
        if not v:
            return
        stats = v.get("stats") or {}
        for key, value in stats.items():
            if key == "verify_seconds" and _num(value):
                yield counter("gpow_validator_verify_seconds", "CPU seconds spent verifying openings", value)
            elif _num(value):
                yield counter(f"gpow_validator_{_name(key)}", f"validator: {key.replace('_', ' ')} since start", value)
        if isinstance(stats.get("reasons"), dict):
            c = CounterMetricFamily(
                "gpow_validator_verdict_reasons",
                "reason codes given in verdicts: why one failed, or a note "
                "on one that passed (unknown-profile: no GPU profile, so correctness only)",
                labels=["role", "reason"],
            )
            merged: dict[str, float] = {}
            for r, n in stats["reasons"].items():
                merged[_reason(r)] = merged.get(_reason(r), 0) + n
            for r, n in sorted(merged.items()):
                c.add_metric([role, r], n)
            yield c
        yield gauge("gpow_validator_challenges_in_flight", "challenge groups in flight", v.get("in_flight_groups", 0))
        executors = v.get("executors") or {}
        yield gauge("gpow_validator_executors", "executors known from miners' rosters", len(executors))
        ch = CounterMetricFamily(
            "gpow_validator_executor_challenges", "challenges issued to each executor", labels=["role", "executor"]
        )
        last = GaugeMetricFamily(
            "gpow_validator_executor_last_passed",
            "1 if the executor's last verdict passed, 0 if it failed (absent before its first verdict)",
            labels=["role", "executor"],
        )
        rtt = GaugeMetricFamily(
            "gpow_validator_executor_rtt_seconds",
            "signed ping round trip to each executor along the challenge path (smoothed)",
            labels=["role", "executor"],
        )
        short = v.get("rtt_s") or {}
        for eid, e in sorted(executors.items()):
            ch.add_metric([role, eid], e.get("challenges", 0))
            if e.get("last_verdict"):
                last.add_metric([role, eid], 1 if e["last_verdict"] == "pass" else 0)
            if _num(short.get(eid[-8:])):
                rtt.add_metric([role, eid], short[eid[-8:]])
        yield ch
        yield last
        yield rtt

    @staticmethod
    def _miner(m: dict | None, role: str, counter: Any) -> Iterator[Metric]:
        if not m:
            return
        for key, value in (m.get("stats") or {}).items():
            if _num(value):
                yield counter(f"gpow_miner_{_name(key)}", f"miner: {key.replace('_', ' ')} since start", value)
        local, remote = m.get("local_executors") or {}, m.get("remote_executors") or {}
        n = GaugeMetricFamily(
            "gpow_miner_executors", "executors this miner lists, by where they run", labels=["role", "location"]
        )
        n.add_metric([role, "local"], len(local))
        n.add_metric([role, "remote"], len(remote))
        yield n
        busy = GaugeMetricFamily(
            "gpow_miner_executor_busy", "1 while the executor answers a challenge", labels=["role", "executor", "location"]
        )
        for eid, e in sorted(local.items()):
            busy.add_metric([role, eid, "local"], 1 if e.get("busy") else 0)
        for eid, e in sorted(remote.items()):
            busy.add_metric([role, eid, "remote"], 1 if e.get("busy") else 0)
        yield busy
        age = GaugeMetricFamily(
            "gpow_miner_remote_heartbeat_age_seconds",
            "time since each remote executor's last heartbeat",
            labels=["role", "executor"],
        )
        for eid, e in sorted(remote.items()):
            if _num(e.get("last_heartbeat_age_s")):
                age.add_metric([role, eid], e["last_heartbeat_age_s"])
        yield age
        for key, doc in (
            ("challenges", "challenges received"),
            ("commitments", "commitments returned"),
            ("openings", "openings returned"),
            ("refused", "challenges refused"),
        ):
            c = CounterMetricFamily(f"gpow_miner_executor_{key}", f"each local executor: {doc}", labels=["role", "executor"])
            for eid, e in sorted(local.items()):
                if _num(e.get(key)):
                    c.add_metric([role, eid], e[key])
            yield c


def render(node: Any) -> bytes:
    """The text exposition of ``node``'s metrics (what a scrape returns)."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    return generate_latest(registry)


async def serve_metrics(node: Any, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``GET /metrics`` on ``[node].metrics_host``:``port`` (HTTP/1.0, one request per connection)."""
    host = node.cfg.node.metrics_host

    async def handle(stream: trio.SocketStream) -> None:
        with trio.move_on_after(5):
            try:
                request = await stream.receive_some(4096)
                if request.startswith(b"GET /metrics"):
                    body = render(node)
                    head = b"HTTP/1.0 200 OK\r\nContent-Type: " + CONTENT_TYPE_LATEST.encode() + b"\r\n"
                else:
                    body, head = (
                        b"not found; metrics are at /metrics\n",
                        b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n",
                    )
                await stream.send_all(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            except trio.BrokenResourceError:
                pass
            finally:
                await stream.aclose()

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started()
    await trio.serve_listeners(handle, listeners)
