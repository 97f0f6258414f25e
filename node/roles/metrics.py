"""Prometheus text endpoint (optional, ``[node].metrics_port``): counters and gauges of a node."""

from __future__ import annotations

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily


class NodeCollector:
    """Reads the node's live status at scrape time, so nothing is counted twice."""

    def __init__(self, node) -> None:
        self.node = node

    def collect(self):
        st = self.node.status()
        g = GaugeMetricFamily("gpow_peers", "connected peers")
        g.add_metric([], len(st.get("peers", {})))
        yield g
        for section in ("net",):
            for key, value in (st.get(section) or {}).items():
                if isinstance(value, (int, float)):
                    m = GaugeMetricFamily(f"gpow_{section}_{key}", f"{section} {key}")
                    m.add_metric([], value)
                    yield m
        role = st.get(st.get("role", ""), {}) or {}
        for key, value in (role.get("stats") or {}).items():
            if isinstance(value, (int, float)):
                m = GaugeMetricFamily(f"gpow_{st['role']}_{key}", f"{st['role']} {key}")
                m.add_metric([], value)
                yield m


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
