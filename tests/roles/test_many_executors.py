"""A miner with 20 executors passes (issue 17, "honest failures"): more executors than the
validator's 16 request slots on one link, all challenged at the same instant (one miner: one
co-scheduled group), every commitment timed from the moment its challenge left.

Real hosts on loopback, real CPU engines, a real ledger; the profile is the CPU engine calibrated
in this run, scaled by how many chains share this machine's cores at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from node.app.config import NodeConfig
from node.app.node import Node
from node.harness.main import calibrate_concurrent_cpu_step, write_profiles
from node.identity import Identity
from node.net.params import NetParams
from node.pow.engine import pool_bytes
from tests.roles.loopback import loopback_config

pytestmark = pytest.mark.slow

N = 64
EXECUTORS = 20
T = 48
MEMORY = int(pool_bytes(N, T) / 0.9) + 1  # memory_fill 0.9: a full challenge is T = 48 at n = 64


VALIDATOR = dict(
    challenge_interval_s=1.0,
    n_cpu=N,
    samples=16,
    probation_challenges=0,
    concurrency=1,
    commit_slack_s=1.0,
    openings_timeout_s=10.0,
    tolerance=1.5,
    rtt_margin_s=0.05,
)


def cfg_for(tmp: Path, name: str, role: str, bootstrap: list[str], admission: list[str], **sections) -> NodeConfig:
    miner = {"cpu_memory_bytes": MEMORY, "host_fingerprint": f"host-{name}", **sections.pop("miner", {})}
    return loopback_config(
        tmp,
        name,
        role,
        bootstrap,
        network="gpow-many-test",
        validator=VALIDATOR,
        miner=miner,
        admission={"validators": admission},
        **sections,
    )


def test_more_executors_than_request_slots():
    # The point of the test: the group is larger than one link's request slots.
    assert EXECUTORS > NetParams().max_inflight_requests_per_peer


async def test_a_miner_with_20_executors_passes(tmp_path: Path):
    # The profile is 20 chains at once in this process, measured in this run, times 2 for the
    # validator's own work (verifying, signing) beside them: what an honest miner of 20 CPU
    # executors can do on this machine now, whatever its speed.
    write_profiles(tmp_path / "profiles.toml", N, calibrate_concurrent_cpu_step(N, T, EXECUTORS), allowance=2.0)
    v_id = Identity.generate()
    admission = [v_id.peer_id]
    async with trio.open_nursery() as nursery:
        v = Node(cfg_for(tmp_path, "v", "validator", [], admission), v_id)
        await nursery.start(v.run)
        m = Node(
            cfg_for(tmp_path, "m", "miner", [v.host.listen_addr], admission, miner={"cpu_executors": EXECUTORS}),
            Identity.generate(),
        )
        await nursery.start(m.run)
        ids = set(m.service.local)
        assert len(ids) == EXECUTORS

        def groups() -> dict[int, list]:
            """Verdicts by the instant their group was issued (one co-scheduled group per miner)."""
            by: dict[int, list] = {}
            for r in v.ledger.verdicts():
                by.setdefault(r.created_ms // 1000, []).append(r)
            return by

        def full_groups() -> list[list]:
            return [g for g in groups().values() if {r.executor_id for r in g} == ids]

        with trio.move_on_after(90):
            while len(full_groups()) < 2:
                await trio.sleep(0.2)
        verdicts = v.ledger.verdicts()
        failed = [(r.executor_id[-6:], r.reasons, r.commit_seconds, r.expected_seconds) for r in verdicts if not r.passed]
        assert not failed, f"honest executors of a 20-executor miner failed: {failed}"
        assert len(full_groups()) >= 2, f"no two full co-scheduled groups of {EXECUTORS}: {[len(g) for g in groups().values()]}"
        for g in full_groups():
            assert all(r.T == T and r.commit_seconds is not None for r in g)
        nursery.cancel_scope.cancel()
