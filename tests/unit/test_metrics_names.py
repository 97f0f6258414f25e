"""Every point-in-time value a Host reports is exported as a gauge: metrics.py turns any other
number of the host's stats into a counter, so a new gauge there must be named in NET_GAUGES."""

from __future__ import annotations

from node.app.metrics import NET_GAUGES
from node.identity import Identity
from node.net.host import Host
from node.net.params import NetParams


def test_host_gauges_are_all_known():
    host = Host(Identity.generate(), NetParams(listen_port=0), "miner")
    assert not host.stats, "a fresh host has counted nothing, so every key below is a gauge"
    keys = set(host.stats_dict()) - {"gossip"}
    unknown = {
        k for k in keys if k not in NET_GAUGES and k not in ("peers", "inbound", "outbound") and not k.startswith("rtt_ms")
    }
    assert not unknown, f"host gauges metrics.py would export as counters: {sorted(unknown)}"
