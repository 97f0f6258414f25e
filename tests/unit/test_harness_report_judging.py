"""The harness report's verdict on issue 17's attacks (node/harness/report.py evaluate): a run
fails when an honest validator banned anyone honest, when busy-lock held an executor, when
junk-evidence went unpenalised, or when frame-miner's executor got registered. Pure: hand-made
reports shaped as build_report writes them."""

from __future__ import annotations

import copy

import pytest

from node.harness.report import evaluate


def base_report() -> dict:
    """One honest miner (executor E1), the three issue-17 validator/executor kinds, all neutralised."""
    return {
        "faults": [],
        "params": {"rounds": False},
        "agreed_scores": {},
        "agreement_view": {},
        "executors": {"E1": {"node": "miner-0", "kind": "honest"}, "X1": {"node": "cheater-frame-miner", "kind": "frame-miner"}},
        "nodes": [
            {"name": "miner-0", "role": "miner", "kind": "honest", "peer_id": "M0"},
            {"name": "validator-0", "role": "validator", "kind": "honest", "peer_id": "V0"},
        ],
        "by_node": {"miner-0": {"kind": "honest", "verdicts": 5, "passed": 5, "failed_reasons": {}}},
        "verdicts": [
            {
                "validator": "validator-0",
                "validator_kind": "honest",
                "executor_id": "E1",
                "executor_node": "miner-0",
                "kind": "honest",
                "passed": True,
                "reasons": ["passed"],
                "created_ms": 1,
            }
        ],
        "validator_cheaters": {
            "cheater-busy-lock": {
                "kind": "busy-lock",
                "peer_id": "B",
                "own": {"busy_lock": {"sent": 4, "refused": 4, "taken": 0}},
                "verdicts": [{"reasons": ["missing-commitment:ChallengeRefused: deadline-too-far: ..."]}],
            },
            "cheater-junk-evidence": {
                "kind": "junk-evidence",
                "peer_id": "J",
                "own": {"junk": {"junk": 3, "wrong-reveal": 1}},
                "verdicts": [],
            },
        },
        "audits": {"validator-0": {"audits": 4, "disagreements": 4, "evidence_penalties": 3}},
        "bans": {"validator-0": []},
        "executor_cheaters": {
            "cheater-frame-miner": {"kind": "frame-miner", "peer_id": "X1", "registered": False, "challenges": 0}
        },
    }


def test_all_neutralised_passes():
    ok, problems = evaluate(base_report())
    assert ok, problems


@pytest.mark.parametrize("banned,who", [("E1", "miner-0"), ("M0", "miner-0")])
def test_an_honest_executor_or_miner_banned_fails_the_run(banned: str, who: str):
    r = base_report()
    r["bans"]["validator-0"] = [{"peer_id": banned, "until_ms": 9, "reason": "fraud evidence from J", "created_ms": 1}]
    ok, problems = evaluate(r)
    assert not ok and any(f"banned honest {who}" in p for p in problems), problems


def test_a_busy_lock_that_held_an_executor_fails_the_run():
    r = base_report()
    r["validator_cheaters"]["cheater-busy-lock"]["own"]["busy_lock"]["taken"] = 1
    ok, problems = evaluate(r)
    assert not ok and any("busy-lock" in p for p in problems), problems


def test_a_busy_lock_nobody_refused_is_not_counted_as_neutralised():
    r = base_report()
    r["validator_cheaters"]["cheater-busy-lock"]["verdicts"] = []
    assert not evaluate(r)[0]


def test_junk_evidence_nobody_penalised_fails_the_run():
    r = base_report()
    r["audits"]["validator-0"]["evidence_penalties"] = 0
    ok, problems = evaluate(r)
    assert not ok and any("junk-evidence" in p for p in problems), problems


@pytest.mark.parametrize("change", [{"registered": True}, {"peer_id": None}])
def test_a_registered_frame_miner_fails_the_run(change: dict):
    r = base_report()
    r["executor_cheaters"]["cheater-frame-miner"].update(change)
    ok, problems = evaluate(r)
    assert not ok and any("frame-miner" in p for p in problems), problems


def test_a_judged_frame_miner_fails_the_run():
    r = base_report()
    r["verdicts"].append(
        {
            "validator": "validator-0",
            "validator_kind": "honest",
            "executor_id": "X1",
            "executor_node": "cheater-frame-miner",
            "kind": "frame-miner",
            "passed": False,
            "reasons": ["false-proof:relation"],
            "created_ms": 2,
        }
    )
    assert not evaluate(copy.deepcopy(r))[0]


def early_round_report(own: dict) -> dict:
    r = base_report()
    r["validator_cheaters"]["cheater-early-round"] = {
        "kind": "early-round",
        "peer_id": "ER",
        "own": {"early_round": own},
        "verdicts": [],
    }
    return r


def test_early_round_refused_everywhere_is_neutralised():
    ok, problems = evaluate(early_round_report({"sent": 6, "taken": 0, "refused_beacon_unknown": 6, "refused_other": 0}))
    assert ok, problems


@pytest.mark.parametrize(
    "own",
    [
        {"sent": 6, "taken": 1, "refused_beacon_unknown": 5, "refused_other": 0},  # an executor took one: it was locked
        {"sent": 0, "taken": 0, "refused_beacon_unknown": 0, "refused_other": 0},  # never attacked: proves nothing
    ],
)
def test_early_round_taken_or_never_tried_fails_the_run(own: dict):
    ok, problems = evaluate(early_round_report(own))
    assert not ok and any("early-round" in p for p in problems), problems
