"""Prometheus text endpoint (optional, ``[node].metrics_port``): counters and gauges of a node."""

from __future__ import annotations

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class NodeCollector:
    """Reads the node's live status at scrape time, so nothing is counted twice."""

    def __init__(self, node) -> None:
        self.node = node

    def collect(self):
        st = self.node.status()
        role = st.get("role", "node")
        g = GaugeMetricFamily("gpow_peers", "connected peers", labels=["role"])
        for r in ("validator", "miner", "executor"):
            g.add_metric([r], sum(1 for p in st.get("peers", {}).values() if p.get("role") == r))
        yield g
        # Counts since start are counters; everything else a gauge.
        for section, stats in (("net", st.get("net") or {}), (role, (st.get(role) or {}).get("stats") or {})):
            for key, value in stats.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                name = f"gpow_{section}_{key}"
                if isinstance(value, int):
                    c = CounterMetricFamily(name, f"{section} {key}")
                    c.add_metric([], value)
                    yield c
                else:
                    m = GaugeMetricFamily(name, f"{section} {key}")
                    m.add_metric([], value)
                    yield m
        v = st.get("validator") or {}
        if v:
            g = GaugeMetricFamily("gpow_validator_in_flight_groups", "challenge groups in flight")
            g.add_metric([], v.get("in_flight_groups", 0))
            yield g
            g = GaugeMetricFamily("gpow_validator_executors", "executors known from rosters")
            g.add_metric([], len(v.get("executors", {})))
            yield g
        agreed = (st.get("agreement") or {}).get("agreed_scores", {})
        if agreed:
            g = GaugeMetricFamily("gpow_agreed_score", "an executor's agreed (median) score", labels=["executor"])
            for eid, a in agreed.items():
                if a.get("score") is not None:
                    g.add_metric([eid], a["score"])
            yield g


async def serve_metrics(node, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))

    async def handle(stream: trio.SocketStream) -> None:
        with trio.move_on_after(5):
            try:
                request = await stream.receive_some(4096)
                if request.startswith(b"GET /metrics"):
                    body = generate_latest(registry)
                    head = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                else:
                    body, head = b"not found\n", b"HTTP/1.0 404 Not Found\r\n"
                await stream.send_all(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            except trio.BrokenResourceError:
                pass
            finally:
                await stream.aclose()

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    task_status.started()
    await trio.serve_listeners(handle, listeners)
