"""Rounds and the beacon, driven by a simulated wall clock (pure code, no network)."""

from __future__ import annotations

import pytest

from node.identity import Identity
from node.roles.agreed import AgreedScores, VerdictView
from node.roles.rounds import Beacon, RoundSchedule, assign, secret_commit
from node.wire.messages import BeaconReveal

SCHED = RoundSchedule(round_ms=10_000, window_ms=1_000, jitter_ms=3_000, genesis_ms=1_000_000)


def run_rounds(ids: list[str], rounds: range, *, drop: set[tuple[str, int]] = frozenset(), late: set[tuple[str, int]] = frozenset()):
    """Every validator reveals at its round's start and hears all others' reveals (simulated gossip)."""
    beacons = {v: Beacon(SCHED, v) for v in ids}
    results = []
    for r in rounds:
        t0 = SCHED.start_ms(r)
        msgs = {v: beacons[v].make_reveal(r) for v in ids}
        for sender, msg in msgs.items():
            if (sender, r) in drop:
                continue
            at = SCHED.window_closes_ms(r) + 50 if (sender, r) in late else t0 + 100
            for receiver in ids:
                if receiver != sender:
                    beacons[receiver].on_reveal(sender, msg, at)
        after = SCHED.window_closes_ms(r)
        results.append({v: (beacons[v].value(r, after), beacons[v].contributors(r)) for v in ids})
    return beacons, results


def test_schedule_is_the_same_for_everyone_and_inside_the_round():
    assert SCHED.round_at(SCHED.start_ms(7)) == 7 and SCHED.round_at(SCHED.start_ms(8) - 1) == 7
    for i in range(50):
        beacon = bytes([i]) * 32
        at = SCHED.challenge_ms(7, beacon)
        assert SCHED.window_closes_ms(7) <= at < SCHED.window_closes_ms(7) + SCHED.jitter_ms
    with pytest.raises(ValueError):
        RoundSchedule(round_ms=1000, window_ms=600, jitter_ms=400)


def test_all_validators_agree_on_beacon_instant_and_assignment():
    ids = [Identity.generate().peer_id for _ in range(4)]
    _, results = run_rounds(ids, range(300, 306))
    executors = [Identity.generate().peer_id for _ in range(20)]
    instants = set()
    for r_index, per_validator in enumerate(results[1:], start=301):
        values = {val for val, _ in per_validator.values()}
        assert len(values) == 1, "every validator computes the same beacon"
        (beacon,) = values
        contributors = {c for _, c in per_validator.values()}
        assert contributors == {frozenset(ids)}, "everyone revealed from the second round on"
        instants.add(SCHED.challenge_ms(r_index, beacon) - SCHED.start_ms(r_index))
        for e in executors:
            chosen = {assign(beacon, e, set(c)) for _, c in per_validator.values()}
            assert len(chosen) == 1 and chosen <= set(ids), "each executor has exactly one validator per round"
    assert len(instants) > 1, "the instant within the round moves with the beacon"


def test_the_first_round_has_only_commitments_and_a_fixed_fallback():
    ids = [Identity.generate().peer_id for _ in range(3)]
    beacons, results = run_rounds(ids, range(10, 11))
    assert all(c == frozenset() for _, c in results[0].values())
    assert beacons[ids[0]].stats.empty_beacons == 1


def test_bad_late_and_off_schedule_reveals_do_not_count():
    ids = [Identity.generate().peer_id for _ in range(3)]
    beacons, results = run_rounds(ids, range(20, 23), late={(ids[2], 22)}, drop={(ids[1], 22)})
    _, contributors = results[2][ids[0]]
    assert contributors == {ids[0]}
    assert beacons[ids[0]].stats.reveals_late == 1
    b = beacons[ids[0]]
    wrong = BeaconReveal(round=23, secret=b"\x01" * 32, next_commit=secret_commit(b"x"))
    assert b.on_reveal(ids[1], wrong, SCHED.start_ms(23) + 10) == "unverifiable", "its commitment never reached us"
    assert b.on_reveal(ids[2], wrong, SCHED.start_ms(23) + 10) == "bad"
    far = BeaconReveal(round=10_000, secret=b"", next_commit=secret_commit(b"x"))
    assert b.on_reveal(ids[1], far, SCHED.start_ms(23) + 10) == "off-schedule"


def test_withheld_reveal_changes_beacon_but_agreement_holds():
    ids = [Identity.generate().peer_id for _ in range(4)]
    _, full = run_rounds(ids, range(40, 43))
    _, withheld = run_rounds(ids, range(40, 43), drop={(ids[3], 42)})
    others = {withheld[2][v][0] for v in ids[:3]}
    assert len(others) == 1, "everyone who did not hear the share agrees on the beacon without it"
    assert others != {full[2][ids[0]][0]}, "the withheld share changes the beacon (the known one-bit bias)"


@pytest.mark.parametrize("lie", [True, False])
def test_one_lying_validator_does_not_move_the_agreed_score(lie: bool):
    honest = ["v1", "v2", "v3"]
    scores_with = AgreedScores(window_rounds=10, min_validators=3)
    scores_without = AgreedScores(window_rounds=10, min_validators=3)
    truth = {"good": True, "cheat": False}
    n = 0
    for r in range(1, 11):
        for e, ok in truth.items():
            for v in honest:
                n += 1
                view = VerdictView(v, e, r, ok, f"c{n}")
                scores_with.add(view)
                scores_without.add(view)
            n += 1
            scores_with.add(VerdictView("liar", e, r, lie, f"c{n}"))
    for e, ok in truth.items():
        a, b = scores_with.score(e, 10), scores_without.score(e, 10)
        assert a.value == b.value == (1.0 if ok else 0.0)
        assert set(a.per_validator) == {*honest, "liar"}


def test_agreed_score_needs_enough_validators_and_respects_the_window():
    s = AgreedScores(window_rounds=3, min_validators=3)
    for i, v in enumerate(["a", "b"]):
        s.add(VerdictView(v, "e", 5, True, f"x{i}"))
    assert s.score("e", 5).value is None
    s.add(VerdictView("c", "e", 1, True, "old"))
    assert s.score("e", 5).value is None, "round 1 is outside a 3-round window at round 5"
    s.add(VerdictView("c", "e", 4, False, "new"))
    assert s.score("e", 5).value == 1.0
    assert not s.add(VerdictView("c", "e", 4, False, "new")), "a challenge id counts once"
