"""Test helper: a Host with its GossipDriver on top, started together (as node.app.node.Node does)."""

from __future__ import annotations

from typing import Any

import trio

from node.gossip.driver import GossipDriver
from node.gossip.params import GossipParams
from node.identity import Identity
from node.net.host import Host
from node.net.params import NetParams


class GossipHost(Host):
    """``Host`` plus ``.gossip``; ``run`` starts both. Only for tests and benchmarks: in the
    product, the composition root (Node) builds the driver on the host."""

    def __init__(self, identity: Identity, net_params: NetParams, role: str, gossip_params: GossipParams, **kw: Any) -> None:
        super().__init__(identity, net_params, role, **kw)
        self.gossip = GossipDriver(self, gossip_params)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(super().run)
            await nursery.start(self.gossip.run)
            task_status.started()
