"""An executor takes a round's challenge only when it can tell whose turn the round is.

Before the round's beacon is known to it, a challenge stamped with that round is refused
('beacon-unknown', no penalty): taken, it would keep the executor BUSY when the validator the
beacon draws comes, and a BUSY naming a challenge of the same round is a miss, so one admitted liar
challenging before the draw is public ('early-round' adversary) could sink any executor. The
validator records no verdict for the refusal. A real ExecutorService on a CPU engine (n = 64, T = 4)
with a beacon view the test sets; the validator's session driven on numbers."""

from __future__ import annotations

import os

import pytest

from node.identity import Identity
from node.pow.chain import sample_commit
from node.pow.cpu_engine import CpuEngine
from node.roles import penalties as P
from node.roles import verdicts as R
from node.roles.admission import ValidatorSetBook
from node.roles.agreed import new_challenge_id
from node.roles.executor import ChallengeRefused, ExecutorService, GpuFacts
from node.wire import decode_envelope
from node.wire.envelope import Signer
from node.wire.messages import Challenge, Commitment

NOW = 1_800_000_000_000


def executor(view: dict[int, bool | None]) -> tuple[Identity, ExecutorService]:
    v, ident = Identity.generate(), Identity.generate()
    facts = GpuFacts("cpu", "cpu-reference", 8 << 20, f"CPU-{ident.peer_id[-16:]}", "", "h")

    def assignment(validator: str, executor_id: str, r: int, now_ms: int) -> bool | None:
        return view.get(r)

    ex = ExecutorService(
        ident,
        "miner",
        CpuEngine(64 << 20),
        facts,
        admission=ValidatorSetBook([v.peer_id]),
        wall_ms=lambda: NOW,
        assignment=assignment,
    )
    return v, ex


def challenge(v: Identity, ex: ExecutorService, r: int) -> bytes:
    body = Challenge(
        challenge_id=new_challenge_id(v.peer_id),
        executor_id=ex.executor_id,
        seed=os.urandom(32),
        n=64,
        steps=4,
        b_matrices=4,
        samples=4,
        commit_deadline_ms=NOW + 5_000,
        openings_timeout_ms=10_000,
        sample_commit=sample_commit(os.urandom(32)),
        round=r,
    )
    return Signer(v, lambda: NOW).seal(body)


async def test_a_round_whose_beacon_is_unknown_is_refused_without_blame():
    v, ex = executor({7: None})
    with pytest.raises(ChallengeRefused) as info:
        await ex.on_challenge(challenge(v, ex, 7))
    assert info.value.reason == R.BEACON_UNKNOWN
    assert P.for_refusal(R.BEACON_UNKNOWN) == 0.0  # clocks and gossip may lag a moment: not misconduct
    assert not ex.busy()  # nothing taken: the validator the beacon draws finds it free


async def test_the_drawn_validator_is_served_and_another_refused():
    v, ex = executor({7: True, 8: False})
    env = decode_envelope(await ex.on_challenge(challenge(v, ex, 7)), expect=Commitment)
    assert isinstance(env.body, Commitment)
    with pytest.raises(ChallengeRefused) as info:
        await ex.on_challenge(challenge(v, ex, 8))
    assert info.value.reason == "not-assigned"


async def test_challenges_outside_rounds_are_not_asked_about_turns():
    v, ex = executor({})  # the view would say "unknown" for every round
    env = decode_envelope(await ex.on_challenge(challenge(v, ex, 0)), expect=Commitment)
    assert isinstance(env.body, Commitment)


def test_the_validator_records_no_verdict_for_a_beacon_unknown_refusal():
    from tests.unit.test_session import World

    w = World(expected_s=1.0)
    w.session.sent(10.0)
    text = f"{R.MISSING_COMMITMENT}:{R.BEACON_UNKNOWN}: round 7's beacon is not known here yet"
    out = w.session.on_commit_failure(text, 10.1)
    assert out.unjudged == R.BEACON_UNKNOWN and out.record.reasons == [] and not out.busy


@pytest.mark.parametrize(
    "text,want",
    [
        (
            "ChallengeRefused: beacon-unknown: round 7's beacon is not known here yet",
            ("beacon-unknown", "round 7's beacon is not known here yet"),
        ),
        ("ChallengeRefused: capacity: 3 GiB needed", ("capacity", "3 GiB needed")),
        ("ChallengeRefused: Not A Reason: x", None),  # the executor's text: only reasons shaped like ours
        ("ChallengeRefused: " + "a" * 60 + ": x", None),
        ("RuntimeError: boom", None),
        (None, None),
    ],
)
def test_a_miner_passes_on_its_remote_executors_refusal_reason(text, want):
    # A remote executor's beacon-unknown must reach the validator as such (no verdict), not as the
    # relay's generic failure (a failed verdict).
    from node.roles.executor import remote_refusal

    assert remote_refusal(text) == want
