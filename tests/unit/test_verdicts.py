"""Verdict reasons and the verdict record."""

from __future__ import annotations

import json

import pytest

from node.roles import verdicts as R
from node.roles.verdicts import VerdictRecord

EXPECTED_REASONS = {
    "PASSED": "passed",
    "FALSE_PROOF": "false-proof",
    "LATE_COMMITMENT": "late-commitment",
    "MISSING_COMMITMENT": "missing-commitment",
    "LATE_OPENINGS": "late-openings",
    "MISSING_OPENINGS": "missing-openings",
    "CO_SCHEDULED_TIMEOUT": "co-scheduled-timeout",
    "WRONG_EXECUTOR": "wrong-executor",
    "WRONG_SIGNER": "wrong-signer",
    "REPLAY": "replay",
    "BAD_SIGNATURE": "bad-signature",
    "SLOW_FOR_PROFILE": "slow-for-profile",
    "UNKNOWN_PROFILE": "unknown-profile",
    "DUPLICATE_GPU": "duplicate-gpu",
    "TIMED_OUT_AT_RESTART": "timed-out-at-restart",
}


def make_record(**over) -> VerdictRecord:
    base = dict(
        challenge_id="ab" * 16,
        validator_id="12D3KooWval",
        executor_id="12D3KooWexe",
        miner_id="12D3KooWmin",
        passed=True,
        reasons=[R.PASSED],
        n=8192,
        T=100,
        m=4,
        k=32,
        commit_seconds=0.21,
        openings_seconds=0.05,
        verify_seconds=0.8,
        expected_seconds=0.13,
        performance_factor=1.0,
        created_ms=1_764_000_000_000,
    )
    base.update(over)
    return VerdictRecord(**base)


def test_reason_strings_are_the_documented_ones_and_distinct():
    for name, value in EXPECTED_REASONS.items():
        assert getattr(R, name) == value
    assert len(set(EXPECTED_REASONS.values())) == len(EXPECTED_REASONS)
    # the report matches cheaters by these prefixes: none may be a prefix of another
    values = sorted(EXPECTED_REASONS.values())
    for a in values:
        for b in values:
            assert a == b or not b.startswith(a + ":")


def test_reason_kind_strips_the_detail():
    assert R.reason_kind("false-proof:row-merkle") == R.FALSE_PROOF
    assert R.reason_kind("missing-commitment:capacity: pool too big") == R.MISSING_COMMITMENT
    assert R.reason_kind(R.DUPLICATE_GPU) == R.DUPLICATE_GPU


def test_only_restart_timeouts_are_unscored():
    assert R.is_scored([R.PASSED])
    assert R.is_scored([R.FALSE_PROOF + ":format"])
    assert R.is_scored([R.LATE_COMMITMENT])
    assert not R.is_scored([R.TIMED_OUT_AT_RESTART])


def test_record_field_order_matches_the_validator():
    names = list(make_record().to_dict())
    assert names == [
        "challenge_id",
        "validator_id",
        "executor_id",
        "miner_id",
        "passed",
        "reasons",
        "n",
        "T",
        "m",
        "k",
        "commit_seconds",
        "openings_seconds",
        "verify_seconds",
        "expected_seconds",
        "performance_factor",
        "created_ms",
    ]


def test_record_round_trips_through_json():
    rec = make_record(
        passed=False,
        reasons=["false-proof:relation", "false-proof:row-merkle"],
        expected_seconds=None,
        commit_seconds=None,
        performance_factor=0.0,
    )
    d = json.loads(json.dumps(rec.to_dict()))
    assert VerdictRecord.from_dict(d) == rec


def test_to_dict_copies_the_reasons():
    rec = make_record()
    d = rec.to_dict()
    d["reasons"].append("tampered")
    assert rec.reasons == [R.PASSED]


def test_from_dict_names_missing_and_unknown_keys():
    d = make_record().to_dict()
    del d["k"]
    with pytest.raises(ValueError, match="'k'"):
        VerdictRecord.from_dict(d)
    d = make_record().to_dict()
    d["score"] = 1.0
    with pytest.raises(ValueError, match="'score'"):
        VerdictRecord.from_dict(d)
