"""Issue 17's done-when as a test: `gpow harness --cheaters <every attack on judging>` ends PASS,
every honest executor passing every challenge, every miner-side cheater caught with its reason
and the validator and outsider kinds neutralised (the report judges each; see
node/harness/report.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.harness.adversaries import ADVERSARIES

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
    report, workdir, cfg = tmp_path / "r.json", tmp_path / "w", tmp_path / "harness.toml"
    # 4 MiB pools (T = 183 at n = 128) and one honest miner: 14 node processes share this machine
    cfg.write_text("[harness]\ncpu_memory_bytes = 4194304\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "node",
            "harness",
            "--config",
            str(cfg),
            "--validators",
            "2",
            "--miners",
            "1",
            "--remote-executors",
            "1",
            "--duration",
            "30",
            "--cheaters",
            ",".join(ISSUE_17),
            "--report",
            str(report),
            "--workdir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    r = json.loads(report.read_text())
    assert r["ok"], r["problems"]
    assert r["summary"]["cheaters"] == r["summary"]["cheaters_caught"] == 6
    assert r["summary"]["honest_passed"] == r["summary"]["honest_verdicts"] > 0
    neutralised = {v["kind"]: v["neutralised"] for v in r["validator_cheaters_neutralised"].values()}
    assert neutralised == {"busy-lock": True, "junk-evidence": True, "frame-miner": True}
    assert all(rows == [] for rows in r["bans"].values())
