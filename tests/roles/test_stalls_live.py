"""Issue 19, item 3, on live nodes: a stall of the validator's own event loop while a commitment is
in flight (a huge frame decoded, say) must not fail an honest executor. One validator and one
honest miner in one trio run on loopback; every other commitment is signed inside a step that
holds the shared loop for longer than the profile allows, so the validator reads it late. Those
challenges end unjudged (no verdict, nothing gossiped); the others are judged and pass."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio

from node.app.config import NodeConfig
from node.app.node import Node, NodeParts
from node.harness.main import calibrate_cpu_step, write_profiles
from node.identity import Identity
from node.pow.engine import pool_bytes
from node.roles.answerer import Answerer
from node.wire.envelope import Signer
from node.wire.messages import Commitment
from tests.roles.loopback import loopback_config

pytestmark = pytest.mark.slow

N, T = 64, 32
MEMORY = int(pool_bytes(N, T) / 0.9) + 1  # a full challenge is T = 32 at n = 64: tens of ms
ALLOWANCE = 25.0  # the honest chain is never near its limit, whatever this machine's load


class StallsTheLoopWhileCommitting(Answerer):
    """Every other commitment is signed in a step that holds the (shared) event loop."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.commitments = 0

    def sign(self, signer: Signer, body: Any) -> bytes:
        if isinstance(body, Commitment):
            self.commitments += 1
            if self.commitments % 2 == 0:
                time.sleep(self.stall_s)  # blocks every task of this process, the validator's too
        return super().sign(signer, body)


VALIDATOR = dict(
    challenge_interval_s=0.5,
    n_cpu=N,
    samples=16,
    probation_challenges=0,
    commit_slack_s=3.0,
    tolerance=1.5,
    rtt_margin_s=0.02,
)


def cfg_for(tmp: Path, name: str, role: str, bootstrap: list[str], admission: list[str]) -> NodeConfig:
    return loopback_config(
        tmp,
        name,
        role,
        bootstrap,
        network="gpow-stall-test",
        validator=VALIDATOR,
        miner={"cpu_memory_bytes": MEMORY},
        admission={"validators": admission},
    )


async def test_our_stall_leaves_a_challenge_unjudged_and_never_fails_the_executor(tmp_path: Path):
    step_s = calibrate_cpu_step(N)
    write_profiles(tmp_path / "profiles.toml", N, step_s, allowance=ALLOWANCE)
    limit_s = step_s * ALLOWANCE * T * 1.5
    stall_s = max(1.0, 2 * limit_s)  # read that much later, a commitment is past its limit
    v_id = Identity.generate()
    admission = [v_id.peer_id]
    async with trio.open_nursery() as nursery:
        v = Node(cfg_for(tmp_path, "v", "validator", [], admission), v_id)
        await nursery.start(v.run)
        m = Node(
            cfg_for(tmp_path, "m", "miner", [v.host.listen_addr], admission),
            Identity.generate(),
            NodeParts(answerer=lambda index: StallsTheLoopWhileCommitting(stall_s)),
        )
        await nursery.start(m.run)
        service = v.service

        def verdicts() -> list:
            return v.ledger.verdicts()

        with trio.move_on_after(60):
            while not (service.stats.timing_stalls >= 2 and sum(r.passed for r in verdicts()) >= 2):
                await trio.sleep(0.1)
        failed = [(r.reasons, r.commit_seconds, r.expected_seconds) for r in verdicts() if not r.passed]
        assert not failed, f"an honest executor failed for our own stall: {failed}"
        assert service.stats.timing_stalls >= 2, service.stats
        assert sum(r.passed for r in verdicts()) >= 2  # the challenges without a stall are judged
        status = service.status()["loop_stalls"]
        assert status["count"] >= 2 and status["longest_s"] >= stall_s * 0.9
        nursery.cancel_scope.cancel()
