"""Faults: a miner killed with SIGKILL in the middle of a challenge (a real process), and a network
partition that is healed (in-process: links closed and dialling blocked, then restored).

The validator killed mid-write and restarted is tests/procs/test_restart.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from node.app.node import Node
from node.harness.main import write_node_config
from node.harness.processes import NodeProcess
from node.net.errors import PeerUnreachable
from node.net.host import Host
from node.roles import verdicts as R

from .conftest import NETWORK, ErrorLog, make_cfg, start_node, wait_for

pytestmark = pytest.mark.slow

LONG_MEMORY = 64 * 64 * 1100  # T ~ 900 at n = 64: proving takes a good fraction of a second


def miner_process(tmp: Path, bootstrap: str) -> NodeProcess:
    d = tmp / "miner"
    d.mkdir(exist_ok=True)
    write_node_config(
        d / "config.toml",
        {
            "node": {"role": "miner", "data_dir": str(d), "status_interval_s": 0.2},
            "net": {
                "listen_host": "127.0.0.1",
                "listen_port": 0,
                "network": NETWORK,
                "bootstrap": [bootstrap],
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 1.0,
            },
            "gossip": {"heartbeat_s": 0.2},
            "admission": {"open": True},  # what this test network ran with before open admission had to be asked for
            "miner": {"engine": "cpu", "cpu_memory_bytes": LONG_MEMORY, "roster_interval_s": 0.5, "host_fingerprint": "host-m"},
        },
    )
    return NodeProcess(
        "miner",
        "miner",
        d,
        d / "config.toml",
        ["--log-level", "warning", "run", "--config", str(d / "config.toml")],
        d / "node.log",
    )


async def test_miner_killed_mid_challenge(tmp_path: Path, error_log: ErrorLog):
    async with trio.open_nursery() as nursery:
        v = await start_node(nursery, make_cfg(tmp_path, "v", "validator", [], validator={"challenge_interval_s": 0.3}))
        m = miner_process(tmp_path, v.host.listen_addr)
        m.start()
        try:
            await wait_for(lambda: v.service.stats.passed >= 1, 30, "a first passing verdict")
            (ex,) = set(v.service.executors)

            def in_flight() -> list[str]:
                return [r[0] for r in v.ledger._read("SELECT cid FROM challenges WHERE state = 'issued'")]

            await wait_for(lambda: bool(in_flight()), 10, "a challenge sent and not yet committed", step=0.005)
            cids = in_flight()
            m.kill()  # SIGKILL to the miner's process group: no goodbye, no drain
            assert m.wait(5) is not None
            await wait_for(lambda: all(v.ledger.verdict(c) is not None for c in cids), 30, "the killed challenges' verdicts")
            for c in cids:
                rec = v.ledger.verdict(c)
                assert not rec.passed and R.reason_kind(rec.reasons[0]) in (R.MISSING_COMMITMENT, R.LATE_COMMITMENT), rec.reasons
            # the validator keeps running: the miner comes back (same keys) and passes again
            passed = v.service.stats.passed
            m.start()
            await wait_for(lambda: v.service.stats.passed > passed, 30, "a passing verdict after the miner's restart")
            assert set(v.service.executors) == {ex}
            assert v.ledger.integrity_check() == "ok"
        finally:
            m.kill()
            m.wait(5)
        nursery.cancel_scope.cancel()
    assert error_log.texts() == []


class Partition:
    """Cut the links between two groups of hosts and refuse dialling across; ``heal`` restores."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, a: list[Host], b: list[Host]) -> None:
        self.mp = monkeypatch
        self.sides = [(a, b), (b, a)]

    def cut(self) -> None:
        for mine, theirs in self.sides:
            their_ids = {h.peer_id for h in theirs}
            their_addrs = {h.listen_addr for h in theirs}
            for h in mine:
                dial, register = h._dial, h._register

                async def blocked_dial(addr: str, *, expected: str | None, _dial=dial, _addrs=their_addrs) -> str:
                    if addr in _addrs:
                        raise PeerUnreachable(f"partitioned from {addr}")
                    return await _dial(addr, expected=expected)

                async def blocked_register(conn, _register=register, _ids=their_ids) -> bool:
                    if conn.peer_id in _ids:
                        await conn.ws.aclose()
                        return False
                    return await _register(conn)

                self.mp.setattr(h, "_dial", blocked_dial)
                self.mp.setattr(h, "_register", blocked_register)
                for pid, conn in list(h._conns.items()):
                    if pid in their_ids:
                        conn.close("partition")

    def heal(self) -> None:
        self.mp.undo()


async def test_partition_and_heal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error_log: ErrorLog):
    """{v1, miner} | {v2}: v2 loses the miner and v1's verdicts; after the heal the mesh comes
    back by itself and verdicts flow to and from v2 again."""
    async with trio.open_nursery() as nursery:
        v1 = await start_node(nursery, make_cfg(tmp_path, "v1", "validator", []))
        v2 = await start_node(nursery, make_cfg(tmp_path, "v2", "validator", [v1.host.listen_addr]))
        m = await start_node(nursery, make_cfg(tmp_path, "m", "miner", [v1.host.listen_addr]))
        (ex,) = m.service.local

        def passes(v: Node) -> int:
            return sum(1 for r in v.ledger.verdicts(ex) if r.passed)

        await wait_for(
            lambda: passes(v1) >= 1 and passes(v2) >= 1 and v2.service.stats.foreign_verdicts >= 1,
            30,
            "both validators passing the executor",
        )
        part = Partition(monkeypatch, [v1.host, m.host], [v2.host])
        part.cut()
        await wait_for(lambda: v2.host.connected_peers() == {}, 5, "v2 to be cut off")
        await trio.sleep(0.5)
        v2_foreign, v2_passes, v1_passes = v2.service.stats.foreign_verdicts, passes(v2), passes(v1)
        await trio.sleep(2.0)
        assert v2.service.stats.foreign_verdicts == v2_foreign  # no verdict crosses the cut
        assert passes(v2) == v2_passes
        assert passes(v1) > v1_passes  # the side with the miner carries on
        unreachable = [r.reasons for r in v2.ledger.verdicts(ex)[v2_passes:] if not r.passed]
        assert all(R.reason_kind(r[0]) == R.MISSING_COMMITMENT for r in unreachable), unreachable
        part.heal()
        t0 = trio.current_time()
        await wait_for(
            lambda: m.identity.peer_id in v2.host.connected_peers() or v1.identity.peer_id in v2.host.connected_peers(),
            10,
            "the mesh to heal",
        )
        await wait_for(
            lambda: passes(v2) > v2_passes and v2.service.stats.foreign_verdicts > v2_foreign,
            20,
            "verdicts to flow to and from v2 again",
        )
        healed_s = trio.current_time() - t0
        assert healed_s < 20
        for v in (v1, v2):
            assert v.ledger.integrity_check() == "ok"
        nursery.cancel_scope.cancel()
    assert error_log.texts() == []
