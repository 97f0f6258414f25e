"""Issue 17's done-when as a test: `gpow harness --cheaters <every attack on judging>` ends PASS,
every honest executor passing every challenge, every miner-side cheater caught with its reason
and the validator and outsider kinds neutralised (the report judges each; see
node/harness/report.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.harness.adversaries import ADVERSARIES
from tests.procs.harness_run import run_harness

pytestmark = pytest.mark.slow

ISSUE_17 = [
    "cpu-claims-gpu",
    "small-memory-claim",
    "forged-busy",
    "probation-reset",
    "busy-lock",
    "junk-evidence",
    "frame-miner",
    "uuid-copy",
    "slow-sybil",
]


def test_every_attack_on_judging_at_once(tmp_path: Path):
    assert set(ISSUE_17) <= set(ADVERSARIES)
    # 4 MiB pools (T = 183 at n = 128) and one honest miner: 14 node processes share this machine
    r = run_harness(
        tmp_path,
        "[harness]\ncpu_memory_bytes = 4194304\n",
        *("--validators", "2", "--miners", "1", "--remote-executors", "1", "--duration", "30"),
        *("--cheaters", ",".join(ISSUE_17)),
    )
    assert r["ok"], r["problems"]
    assert r["summary"]["cheaters"] == r["summary"]["cheaters_caught"] == 6
    assert r["summary"]["honest_passed"] == r["summary"]["honest_verdicts"] > 0
    neutralised = {v["kind"]: v["neutralised"] for v in r["validator_cheaters_neutralised"].values()}
    assert neutralised == {"busy-lock": True, "junk-evidence": True, "frame-miner": True}
    assert all(rows == [] for rows in r["bans"].values())
