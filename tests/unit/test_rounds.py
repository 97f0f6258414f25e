"""Rounds and the beacon, driven by a simulated wall clock (pure code, no network)."""

from __future__ import annotations

import pytest

from node.identity import Identity
from node.roles.rounds import Beacon, RoundSchedule, assign, secret_commit
from node.wire.messages import BeaconReveal

SCHED = RoundSchedule(round_ms=10_000, window_ms=1_000, jitter_ms=3_000, genesis_ms=1_000_000)


def run_rounds(
    ids: list[str], rounds: range, *, drop: set[tuple[str, int]] = frozenset(), late: set[tuple[str, int]] = frozenset()
):
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
    assert b.on_reveal(ids[2], wrong, SCHED.start_ms(23) + 10) == "unverifiable", "a late message fixes no commitment"
    ok_22 = beacons[ids[0]]
    assert ok_22.on_reveal(ids[0], wrong, SCHED.start_ms(23) + 10) == "bad", "our own commitment for 23 is on record"
    far = BeaconReveal(round=10_000, secret=b"", next_commit=secret_commit(b"x"))
    assert b.on_reveal(ids[1], far, SCHED.start_ms(23) + 10) == "off-schedule"


def test_withheld_reveal_changes_beacon_but_agreement_holds():
    ids = [Identity.generate().peer_id for _ in range(4)]
    _, full = run_rounds(ids, range(40, 43))
    _, withheld = run_rounds(ids, range(40, 43), drop={(ids[3], 42)})
    others = {withheld[2][v][0] for v in ids[:3]}
    assert len(others) == 1, "everyone who did not hear the share agrees on the beacon without it"
    assert others != {full[2][ids[0]][0]}, "the withheld share changes the beacon (the known one-bit bias)"


# ---- a liar in the beacon ----------------------------------------------------------------------

R0 = 100


def network(n: int) -> tuple[list[str], dict[str, Beacon]]:
    ids = sorted(Identity.generate().peer_id for _ in range(n))
    return ids, {v: Beacon(SCHED, v) for v in ids}


def honest_round(beacons: dict[str, Beacon], r: int, senders: list[str], at: int | None = None) -> dict[str, BeaconReveal]:
    """``senders`` reveal at the round's start (or ``at``) and everyone hears them."""
    msgs = {v: beacons[v].make_reveal(r) for v in senders}
    for sender, msg in msgs.items():
        for receiver, b in beacons.items():
            if receiver != sender:
                b.on_reveal(sender, msg, at if at is not None else SCHED.start_ms(r) + 100)
    return msgs


def deliver(beacons: dict[str, Beacon], sender: str, msg: BeaconReveal, at: int) -> set[str]:
    return {beacons[v].on_reveal(sender, msg, at) for v in beacons if v != sender}


def grind(
    r: int, honest_secrets: dict[str, bytes], me: str, executors: list[str], validators: set[str], tries: int = 3000
) -> tuple[bytes, int]:
    """What the attacker of issue 18 did: knowing everyone else's share, pick its own to take the most executors."""
    import hashlib
    import os as _os

    from node.roles.rounds import DOMAIN

    best, best_n = b"", -1
    for _ in range(tries):
        s = _os.urandom(32)
        shares = {**honest_secrets, me: s}
        h = hashlib.sha256(DOMAIN + r.to_bytes(8, "big"))
        for vid in sorted(shares):
            h.update(vid.encode() + b"\x00" + shares[vid])
        n = sum(assign(h.digest(), e, validators) == me for e in executors)
        if n > best_n:
            best, best_n = s, n
    return best, best_n


def test_a_grinder_that_recommits_after_reading_the_reveals_is_dropped_from_the_beacon():
    ids, beacons = network(4)
    grinder, honest = ids[0], ids[1:]
    executors = [Identity.generate().peer_id for _ in range(12)]
    honest_round(beacons, R0, ids)
    honest_round(beacons, R0 + 1, ids)
    r = R0 + 2
    msgs = honest_round(beacons, r, honest)  # the grinder holds its reveal back and reads these
    secret, taken = grind(r, {v: m.secret for v, m in msgs.items()}, grinder, executors, set(ids))
    assert taken >= 7, "grinding works against the shares it read (about 3 of 12 executors are its fair share)"
    t = SCHED.start_ms(r) + 600  # still inside the reveal window
    recommit = BeaconReveal(round=r - 1, secret=b"", next_commit=secret_commit(secret))
    assert deliver(beacons, grinder, recommit, t) == {"equivocation"}, "one commitment per (validator, round): the first"
    ground = BeaconReveal(round=r, secret=secret, next_commit=secret_commit(b"next"))
    assert deliver(beacons, grinder, ground, t + 10) == {"excluded"}
    after = SCHED.window_closes_ms(r)
    values = {beacons[v].value(r, after) for v in honest}
    assert len(values) == 1 and all(beacons[v].contributors(r) == frozenset(honest) for v in honest)
    for later in range(r + 1, r + 4):  # still out: its reveals do not count, it is assigned nothing
        honest_round(beacons, later, ids)
        b = beacons[honest[0]]
        assert b.contributors(later) == frozenset(honest) and b.excluded(grinder, later)
        assert all(assign(b.value(later, SCHED.window_closes_ms(later)), e, b.contributors(later)) != grinder for e in executors)
    assert all(beacons[v].stats.equivocations == 1 for v in honest)


def test_commitments_are_fixed_a_round_ahead():
    ids, beacons = network(3)
    late, honest = ids[0], ids[1:]
    honest_round(beacons, R0, ids)
    r = R0 + 1
    honest_round(beacons, r, honest)
    # It stayed silent in round r and speaks once r's window has closed: too late to commit for r+1.
    msg = beacons[late].make_reveal(r)
    assert deliver(beacons, late, msg, SCHED.window_closes_ms(r) + 1) == {"late"}
    honest_round(beacons, r + 1, ids)
    assert all(beacons[v].contributors(r + 1) == frozenset(honest) for v in honest), "its r+1 share had no commitment in time"
    # A commit-only message for a round whose commitment is on record is a withheld reveal.
    honest_round(beacons, r + 2, honest)
    withheld = BeaconReveal(round=r + 2, secret=b"", next_commit=secret_commit(b"redraw"))
    assert deliver(beacons, late, withheld, SCHED.start_ms(r + 2) + 200) == {"withheld"}
    honest_round(beacons, r + 3, honest)
    msg = BeaconReveal(round=r + 3, secret=b"\x05" * 32, next_commit=secret_commit(b"n"))
    assert deliver(beacons, late, msg, SCHED.start_ms(r + 3) + 100) == {"unverifiable"}, (
        "the withheld message committed it to nothing"
    )
    assert beacons[honest[0]].stats.reveals_withheld == 1


def test_a_second_different_message_for_a_round_is_equivocation_and_a_repeat_is_not():
    ids, beacons = network(3)
    honest_round(beacons, R0, ids)
    msgs = honest_round(beacons, R0 + 1, ids)
    liar = ids[2]
    again = msgs[liar]
    assert deliver(beacons, liar, again, SCHED.start_ms(R0 + 1) + 300) == {"duplicate"}
    other = BeaconReveal(round=R0 + 1, secret=again.secret, next_commit=secret_commit(b"other"))
    assert deliver(beacons, liar, other, SCHED.start_ms(R0 + 1) + 400) == {"equivocation"}
    assert all(liar not in beacons[v].contributors(R0 + 1) for v in ids[:2]), "its share for the open round is dropped too"


def test_colluders_choose_among_at_most_two_to_the_k_beacons():
    """The bias bound of rounds.py: k colluders that see every honest share before deciding can
    only reveal or withhold their own; every other move is refused and adds no beacon."""
    import copy
    import itertools

    ids, beacons = network(6)
    colluders, honest = ids[:2], ids[2:]
    honest_round(beacons, R0, ids)
    r = R0 + 1
    honest_round(beacons, r, honest)
    watcher = beacons[honest[0]]
    own = {v: beacons[v]._my_secrets[r] for v in colluders}
    reachable = set()
    for choice in itertools.product([False, True], repeat=len(colluders)):
        b = copy.deepcopy(watcher)
        for v, reveal in zip(colluders, choice):
            if reveal:
                assert (
                    b.on_reveal(
                        v,
                        BeaconReveal(round=r, secret=own[v], next_commit=secret_commit(b"n" + v.encode())),
                        SCHED.start_ms(r) + 900,
                    )
                    == "counted"
                )
        reachable.add(b.value(r, SCHED.window_closes_ms(r)))
    assert len(reachable) == 2 ** len(colluders)
    tricks = [
        BeaconReveal(round=r - 1, secret=b"", next_commit=secret_commit(b"x")),  # re-commit for r
        BeaconReveal(round=r, secret=b"\x07" * 32, next_commit=secret_commit(b"y")),  # a share never committed
        BeaconReveal(round=r, secret=b"", next_commit=secret_commit(b"z")),  # commit-only for a committed round
    ]
    for trick in tricks:
        b = copy.deepcopy(watcher)
        for v in colluders:
            b.on_reveal(v, trick, SCHED.start_ms(r) + 900)
            b.on_reveal(v, BeaconReveal(round=r, secret=own[v], next_commit=secret_commit(b"n")), SCHED.start_ms(r) + 950)
        assert b.value(r, SCHED.window_closes_ms(r)) in reachable, trick


def test_a_forgotten_round_has_no_beacon():
    ids, beacons = network(2)
    for r in range(R0, R0 + 12):
        honest_round(beacons, r, ids)
    b = beacons[ids[0]]
    assert b.value(R0 + 11, SCHED.window_closes_ms(R0 + 11)) is not None
    assert b.value(R0, SCHED.window_closes_ms(R0 + 11)) is None, "older than the beacon's memory: unknown, not recomputed empty"


def test_a_node_that_just_started_does_not_trust_its_beacon():
    """It heard no commitment for its first rounds, so its beacon there is not everyone's: it
    neither enforces nor counts an assignment until it has listened through a whole round."""
    ids, beacons = network(2)
    honest_round(beacons, R0, ids)
    late = Beacon(SCHED, "watcher", since_ms=SCHED.start_ms(R0 + 1) + 2_000)
    for r in (R0 + 1, R0 + 2, R0 + 3):
        msgs = honest_round(beacons, r, ids)
        for sender, msg in msgs.items():
            if SCHED.start_ms(r) + 100 >= late.since_ms:  # round R0+1's went out before it listened
                assert late.on_reveal(sender, msg, SCHED.start_ms(r) + 100) == ("unverifiable" if r == R0 + 2 else "counted")
    assert not late.trusted(R0 + 1) and not late.trusted(R0 + 2) and late.trusted(R0 + 3)
    after = SCHED.window_closes_ms(R0 + 3)
    assert late.value(R0 + 3, after) == beacons[ids[0]].value(R0 + 3, after)
    assert late.value(R0 + 2, after) != beacons[ids[0]].value(R0 + 2, after), "round r+2's shares were unverifiable to it"
