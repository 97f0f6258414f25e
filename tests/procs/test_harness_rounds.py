"""Rounds end to end, started the way users start them: `gpow harness --rounds` with an admitted
validator that challenges every executor for a round before that round's beacon is public
(`early-round`). Executors refuse (`beacon-unknown`), so the validators the beacon draws find them
free: every honest verdict passes and every honest executor's agreed score is what the honest
validators alone would give it. Before executors refused, this run failed: 1 of 8 honest verdicts
passed and no executor had an agreed score."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.procs.harness_run import run_harness

pytestmark = pytest.mark.slow


def test_a_validator_challenging_before_the_draw_cannot_sink_anyone(tmp_path: Path):
    # small pools: 9 node processes share this machine
    r = run_harness(
        tmp_path, "[harness]\ncpu_memory_bytes = 4194304\n", "--rounds", "--validators", "3", "--cheaters", "early-round"
    )
    assert r["ok"], r["problems"]
    assert r["summary"]["honest_passed"] == r["summary"]["honest_verdicts"] > 0
    (early,) = r["validator_cheaters_neutralised"].values()
    assert early["kind"] == "early-round" and early["neutralised"], early
    honest = [a for a in r["agreed_scores"].values() if a["kind"] == "honest"]
    assert honest and all(a["score"] == pytest.approx(a["baseline"], abs=0.05) for a in honest), honest
