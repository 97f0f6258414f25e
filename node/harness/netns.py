"""Multi-host mode: each node in its own network namespace, joined by a bridge, with link faults.

Needs root and iproute2 (``ip``, ``tc``). Hosts get 10.213.0.x/24 addresses inside namespaces this
harness creates and removes itself; nothing leaves the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

HUB = "gpow-hub"
SUBNET = "10.213.0"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def netns_supported() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "network namespaces need root (run as root, or leave out --netns)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return False, f"`{tool}` (iproute2) is not installed"
    probe = "gpow-probe"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return False, f"`ip netns add` failed: {r.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return True, ""


@dataclass
class NetnsTopology:
    """A star of namespaces around a bridge in a hub namespace."""

    hosts: int
    prefix: str = "gpow-h"
    created: list[str] = field(default_factory=list)

    def ns(self, i: int) -> str:
        return f"{self.prefix}{i}"

    def address(self, i: int) -> str:
        return f"{SUBNET}.{i + 1}"

    def create(self) -> None:
        self.destroy()
        _ip("netns", "add", HUB)
        self.created.append(HUB)
        _ip("-n", HUB, "link", "add", "br0", "type", "bridge")
        _ip("-n", HUB, "link", "set", "br0", "up")
        _ip("-n", HUB, "link", "set", "lo", "up")
        for i in range(self.hosts):
            ns = self.ns(i)
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # veth pair: eth0 inside the host, p<i> on the hub's bridge
            _ip("-n", HUB, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", HUB, "link", "set", f"p{i}", "master", "br0")
            _ip("-n", HUB, "link", "set", f"p{i}", "up")
            _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def exec_prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.ns(i)]

    def cut(self, i: int) -> None:
        _ip("-n", HUB, "link", "set", f"p{i}", "down")

    def restore(self, i: int) -> None:
        _ip("-n", HUB, "link", "set", f"p{i}", "up")

    def netem(self, i: int, delay_ms: float, loss_pct: float) -> str | None:
        """Add delay and loss on host i's link; returns None, or why it could not (e.g. a kernel
        without sch_netem), so the run goes on with cuts only and the report says so."""
        r = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.ns(i),
                "tc",
                "qdisc",
                "replace",
                "dev",
                "eth0",
                "root",
                "netem",
                "delay",
                f"{delay_ms}ms",
                "loss",
                f"{loss_pct}%",
            ],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            return (r.stderr.strip() or f"tc exited {r.returncode}") + " (is the sch_netem kernel module available?)"
        return None

    def destroy(self) -> None:
        for ns in [HUB] + [self.ns(i) for i in range(self.hosts)]:
            _ip("netns", "del", ns, check=False)
        self.created.clear()
