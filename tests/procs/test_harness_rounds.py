"""Rounds end to end, started the way users start them: `gpow harness --rounds` with an admitted
validator that challenges every executor for a round before that round's beacon is public
(`early-round`). Executors refuse (`beacon-unknown`), so the validators the beacon draws find them
free: every honest verdict passes and every honest executor's agreed score is what the honest
validators alone would give it. Before executors refused, this run failed: 1 of 8 honest verdicts
passed and no executor had an agreed score."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_a_validator_challenging_before_the_draw_cannot_sink_anyone(tmp_path: Path):
    report, workdir, cfg = tmp_path / "r.json", tmp_path / "w", tmp_path / "harness.toml"
    cfg.write_text("[harness]\ncpu_memory_bytes = 4194304\n")  # small pools: 9 node processes share this machine
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "node",
            "harness",
            "--config",
            str(cfg),
            "--rounds",
            "--validators",
            "3",
            "--cheaters",
            "early-round",
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
    assert r["summary"]["honest_passed"] == r["summary"]["honest_verdicts"] > 0
    (early,) = r["validator_cheaters_neutralised"].values()
    assert early["kind"] == "early-round" and early["neutralised"], early
    honest = [a for a in r["agreed_scores"].values() if a["kind"] == "honest"]
    assert honest and all(a["score"] == pytest.approx(a["baseline"], abs=0.05) for a in honest), honest
