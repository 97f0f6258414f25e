"""Agreed scores against lying validators (issue 18): verdicts keyed by their validator, challenge
ids that name their issuer, one verdict per (validator, executor, round), bounded memory per
validator, and a median over the validators the beacon assigned. Pure code, rounds passed in."""

from __future__ import annotations

import hashlib
import random

import pytest

from node.roles import agreed as A
from node.roles.agreed import AgreedScores, VerdictView, issued_by, new_challenge_id
from node.roles.rounds import assign


def view(v: str, e: str, r: int, ok: bool, cid: bytes | None = None) -> VerdictView:
    return VerdictView(v, e, r, ok, (cid or new_challenge_id(v)).hex())


def beacon(r: int, seed: int = 0) -> bytes:
    return hashlib.sha256(f"{seed}:{r}".encode()).digest()


def test_challenge_ids_name_their_issuer():
    cid = new_challenge_id("v1")
    assert issued_by(cid, "v1") and not issued_by(cid, "v2")
    assert new_challenge_id("v1") != cid, "the rest is random"


def test_a_leaked_challenge_id_cannot_erase_the_honest_verdict():
    """The eraser read an honest validator's challenge id in a BUSY and published its own verdict
    under it first. Before: first verdict per challenge id won, whoever signed it."""
    s = AgreedScores(window_rounds=10, min_validators=1)
    honest_cid = new_challenge_id("honest")
    assert s.add(view("eraser", "e", 5, False, honest_cid), "honest", 5) == A.FOREIGN_ID
    assert s.add(view("honest", "e", 5, True, honest_cid), "honest", 5) == A.COUNTED
    assert s.score("e", 5).per_validator == {"honest": 1.0}
    # Under its own id it is the eraser's verdict, in a slot of its own (and counted only when assigned).
    assert s.add(view("eraser", "e", 5, False), "honest", 5) == A.UNASSIGNED
    assert s.score("e", 5).value == 1.0


def test_one_verdict_per_validator_executor_and_round():
    s = AgreedScores(window_rounds=10, min_validators=1)
    assert s.add(view("v", "e", 3, True), "v", 3) == A.COUNTED
    assert s.add(view("v", "e", 3, False), "v", 3) == A.DUPLICATE, "a second verdict for the round adds no weight"
    assert s.add(view("v", "e", 4, False), "v", 4) == A.COUNTED
    assert s.score("e", 4).per_validator == {"v": 0.5}
    assert s.add(view("v", "e", 9, True), "v", 5) == A.EARLY
    assert s.add(view("v", "e", 5, True), None, 5) == A.UNVERIFIABLE, "no beacon here for that round"


def test_a_flood_evicts_only_its_own_verdicts():
    """Before: one FIFO of 200k verdicts for everyone, so one validator evicted all the others'."""
    s = AgreedScores(window_rounds=1000, min_validators=2, per_validator=50)
    for r in range(1, 11):
        for v in ("h1", "h2"):
            assert s.add(view(v, "e", r, True), v, 10) == A.COUNTED
    for i in range(5000):  # made-up executors, each "assigned" to the flooder
        s.add(view("flood", f"fake-{i}", 10, False), "flood", 10)
    assert s.stored("flood") == 50 and s.stored("h1") == 10 and s.stored("h2") == 10
    assert s.score("e", 10).value == 1.0
    assert len(s.executors()) == 51


def test_only_assigned_verdicts_count_and_missing_coverage_means_no_score():
    """Two colluders lift an executor that fails every honest check: they challenge it out of turn
    and its miner answers the honest validators with forged BUSYs, so no honest verdict exists.
    Before: the median over whoever judged was their 1.0."""
    validators = ["h1", "h2", "h3", "c1", "c2"]
    s = AgreedScores(window_rounds=20, min_validators=3)
    for r in range(1, 21):
        who = assign(beacon(r), "bad", validators)
        for c in ("c1", "c2"):
            s.add(view(c, "bad", r, True), who, r)
    sc = s.score("bad", 20, frozenset(validators))
    assert sc.value is None, sc
    assert set(sc.per_validator) <= {"c1", "c2"} and sc.missing >= 3
    assert sum(s.refused.get(c, {}).get(A.UNASSIGNED, 0) for c in ("c1", "c2")) > 20


def test_a_validator_outside_the_admitted_set_stops_counting():
    s = AgreedScores(window_rounds=10, min_validators=1)
    for v in ("a", "b", "c"):
        s.add(view(v, "e", 1, v != "c"), v, 1)
    assert s.score("e", 1).value == 1.0
    assert s.score("e", 1, frozenset({"c"})).value == 0.0
    assert s.score("e", 1, frozenset({"a", "b", "z"})).missing == 1


def simulate(honest: int, liars: int, min_validators: int, rounds: int, seed: int) -> list[tuple[float | None, float, float]]:
    """Every round the beacon assigns each executor to one validator; honest validators report
    what they saw (an executor passes with its own probability), liars the opposite of the truth.
    Returns, per executor, (agreed score, lowest honest rate, highest honest rate)."""
    rng = random.Random(seed)
    validators = [f"h{i}" for i in range(honest)] + [f"L{i}" for i in range(liars)]
    truth = {f"e{i}": rng.choice([0.0, 0.2, 0.9, 1.0]) for i in range(8)}
    s = AgreedScores(window_rounds=rounds, min_validators=min_validators)
    for r in range(1, rounds + 1):
        b = rng.randbytes(32)
        for e, p in truth.items():
            who = assign(b, e, validators)
            ok = rng.random() < p
            for v in validators:  # everyone tries; only the assigned verdict may count
                s.add(view(v, e, r, (not ok) if v.startswith("L") else ok), who, r)
    out = []
    for e in truth:
        sc = s.score(e, rounds, frozenset(validators))
        hr = [x for v, x in sc.per_validator.items() if v.startswith("h")]
        out.append((sc.value, min(hr, default=0.0), max(hr, default=1.0)))
    return out


@pytest.mark.parametrize("liars", [1, 2])
def test_f_liars_are_tolerated_with_min_validators_2f_plus_1(liars: int):
    """README's guarantee: with min_validators = 2f + 1, an agreed score either does not exist or
    lies within the honest validators' pass rates, whatever f liars say and however the beacon
    spreads the executors (here 5 honest validators, as in the harness)."""
    scored = 0
    for seed in range(30):
        for value, lo, hi in simulate(5, liars, 2 * liars + 1, rounds=12, seed=seed):
            if value is not None:
                scored += 1
                assert lo <= value <= hi, (seed, value, lo, hi)
    assert scored > 100, "scores exist: the bound is not met by never scoring"


def test_with_too_small_a_quorum_two_liars_do_move_the_score():
    """The same simulation with min_validators = 2f: the bound is tight, the check above can fail."""
    broken = 0
    for seed in range(30):
        broken += sum(
            1 for value, lo, hi in simulate(5, 2, 3, rounds=6, seed=seed) if value is not None and not lo <= value <= hi
        )
    assert broken > 0


def test_agreed_score_needs_enough_validators_and_respects_the_window():
    s = AgreedScores(window_rounds=3, min_validators=3)
    for v in ["a", "b"]:
        s.add(view(v, "e", 5, True), v, 5)
    assert s.score("e", 5).value is None
    assert s.add(view("c", "e", 1, True), "c", 5) == A.STALE, "round 1 is outside a 3-round window at round 5"
    assert s.score("e", 5).value is None
    s.add(view("c", "e", 4, False), "c", 5)
    assert s.score("e", 5).value == 1.0
    assert s.score("e", 8).value is None, "the window moved past them"


def test_without_rounds_verdicts_are_keyed_by_validator_and_challenge_id():
    s = AgreedScores(window_rounds=10, min_validators=1, rounds=False)
    cid = new_challenge_id("v")
    assert s.add(view("v", "e", 0, True, cid), None, 0) == A.COUNTED
    assert s.add(view("v", "e", 0, True, cid), None, 0) == A.DUPLICATE
    assert s.add(view("v", "e", 0, False), None, 0) == A.COUNTED
    assert s.add(view("w", "e", 0, False, cid), None, 0) == A.FOREIGN_ID
    assert s.score("e", 0).per_validator == {"v": 0.5}
