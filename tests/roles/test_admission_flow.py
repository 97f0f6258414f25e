"""An admitting authority's signed validator set, end to end: the validator loads it from a file
and gossips it; a miner that knows only the authority's id learns the set from gossip and then
accepts that validator's challenges, while a validator outside the set is refused and penalised."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio

from node.app.config import NodeConfig
from node.app.node import Node
from node.identity import Identity, write_key_file
from node.roles.admission import sign_main

pytestmark = pytest.mark.slow


def cfg(tmp: Path, name: str, role: str, bootstrap: list[str], authority: str, set_file: str = "") -> NodeConfig:
    c = NodeConfig()
    c.node = dataclasses.replace(c.node, role=role, data_dir=str(tmp / name), status_interval_s=0.5)
    c.net = dataclasses.replace(c.net, listen_port=0, bootstrap=bootstrap, network="gpow-admission-test")
    c.gossip = dataclasses.replace(c.gossip, heartbeat_s=0.2)
    c.admission = dataclasses.replace(c.admission, authority=authority, set_file=set_file)
    c.validator = dataclasses.replace(
        c.validator,
        challenge_interval_s=0.5,
        n_cpu=64,
        samples=8,
        probation_challenges=0,
        profiles_file=str(tmp / "p.toml"),
        commit_slack_s=5.0,
    )
    c.miner = dataclasses.replace(
        c.miner, engine="cpu", cpu_memory_bytes=64 * 64 * 40, roster_interval_s=0.5, host_fingerprint="h-" + name
    )
    return c


async def test_authority_set_learned_from_gossip(tmp_path: Path):
    import argparse

    (tmp_path / "p.toml").write_text(
        '[[profile]]\nmodel = "cpu-reference"\nmemory_bytes = 0\nn = 64\nstep_seconds = 0.01\nmeasured = false\nsource = "t"\n'
    )
    authority, admitted, outsider = Identity.generate(), Identity.generate(), Identity.generate()
    write_key_file(tmp_path / "auth.key", authority)
    assert (
        sign_main(
            argparse.Namespace(
                key=str(tmp_path / "auth.key"),
                validator=[admitted.peer_id],
                version=3,
                ttl_days=1.0,
                out=str(tmp_path / "set.bin"),
            )
        )
        == 0
    )
    async with trio.open_nursery() as nursery:
        v = Node(cfg(tmp_path, "v", "validator", [], authority.peer_id, str(tmp_path / "set.bin")), admitted)
        await nursery.start(v.run)
        boot = [v.host.listen_addr]
        m = Node(cfg(tmp_path, "m", "miner", boot, authority.peer_id), Identity.generate())
        await nursery.start(m.run)
        bad = Node(cfg(tmp_path, "x", "validator", boot, authority.peer_id), outsider)
        await nursery.start(bad.run)
        executors = set(m.service.local)

        def passed() -> set[str]:
            return {r.executor_id for r in v.ledger.verdicts() if r.passed}

        with trio.move_on_after(30):
            while not (passed() >= executors and bad.ledger.verdicts()):
                await trio.sleep(0.1)
        assert m.admission.current is not None and m.admission.current.version == 3, "the miner learned the set from gossip"
        assert passed() >= executors
        refused = [r for r in bad.ledger.verdicts() if any("unadmitted-validator" in x for x in r.reasons)]
        assert refused, [r.reasons for r in bad.ledger.verdicts()]
        assert m.gossip.score(outsider.peer_id) < 0, "refused challenges are penalised in gossip scoring"
        nursery.cancel_scope.cancel()
