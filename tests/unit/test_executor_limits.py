"""An executor keeps no challenge beyond the protocol's windows (issue 17, "BUSY lock"): a challenge
whose commitment deadline or openings window is beyond MAX_COMMIT_WINDOW_S / MAX_OPENINGS_TIMEOUT_S
is refused ('deadline-too-far') instead of taken, and a committed challenge whose reveal never
comes stops making it BUSY once its windows and a short grace are over.

A real ExecutorService on a real CPU engine (n = 64, T = 4), driven directly; its wall clock is
a number the test sets."""

from __future__ import annotations

import os

import pytest

from node.identity import Identity
from node.pow.chain import sample_commit
from node.pow.cpu_engine import CpuEngine
from node.roles.admission import ValidatorSetBook
from node.roles.agreed import new_challenge_id
from node.roles.executor import ABANDON_GRACE_MS, CLOCK_SKEW_S, ChallengeRefused, ExecutorService, GpuFacts
from node.wire import constants as C
from node.wire import decode_envelope
from node.wire.envelope import Signer
from node.wire.messages import Busy, Challenge, Commitment


class Clock:
    def __init__(self) -> None:
        self.ms = 1_800_000_000_000

    def __call__(self) -> int:
        return self.ms


def setup() -> tuple[Clock, Identity, ExecutorService]:
    clock, v = Clock(), Identity.generate()
    ident = Identity.generate()
    facts = GpuFacts(
        engine="cpu",
        gpu_model="cpu-reference",
        memory_bytes=8 * 1024 * 1024,
        gpu_uuid=f"CPU-{ident.peer_id[-16:]}",
        pci_bus_id="",
        host_fingerprint="h",
    )
    ex = ExecutorService(
        ident, "miner", CpuEngine(64 * 1024 * 1024), facts, admission=ValidatorSetBook([v.peer_id]), wall_ms=clock
    )
    return clock, v, ex


def challenge(clock: Clock, v: Identity, ex: ExecutorService, *, window_ms: int = 5_000, openings_ms: int = 10_000) -> bytes:
    body = Challenge(
        challenge_id=new_challenge_id(v.peer_id),
        executor_id=ex.executor_id,
        seed=os.urandom(32),
        n=64,
        steps=4,
        b_matrices=4,
        samples=4,
        commit_deadline_ms=clock.ms + window_ms,
        openings_timeout_ms=openings_ms,
        sample_commit=sample_commit(os.urandom(32)),
    )
    return Signer(v, clock).seal(body)


@pytest.mark.parametrize(
    "window_ms,openings_ms",
    [
        (86_400_000, 10_000),  # the commitment a day away
        ((C.MAX_COMMIT_WINDOW_S + CLOCK_SKEW_S) * 1000 + 1, 10_000),
        (5_000, 3_600_000),  # openings an hour after the reveal
        (5_000, C.MAX_OPENINGS_TIMEOUT_S * 1000 + 1),
    ],
)
async def test_windows_beyond_the_protocols_are_refused(window_ms: int, openings_ms: int):
    clock, v, ex = setup()
    with pytest.raises(ChallengeRefused) as info:
        await ex.on_challenge(challenge(clock, v, ex, window_ms=window_ms, openings_ms=openings_ms))
    assert info.value.reason == "deadline-too-far"
    assert not ex.busy() and ex.stats["refused"] == 1


async def test_windows_at_the_cap_are_taken():
    clock, v, ex = setup()
    raw = await ex.on_challenge(
        challenge(clock, v, ex, window_ms=C.MAX_COMMIT_WINDOW_S * 1000, openings_ms=C.MAX_OPENINGS_TIMEOUT_S * 1000)
    )
    assert isinstance(decode_envelope(raw).body, Commitment)


async def test_an_unrevealed_challenge_is_dropped_after_its_windows():
    clock, v, ex = setup()
    first = challenge(clock, v, ex, window_ms=5_000, openings_ms=10_000)
    assert isinstance(decode_envelope(await ex.on_challenge(first)).body, Commitment)
    # Committed, never revealed: BUSY for others while the validator may still reveal ...
    clock.ms += 5_000 + 10_000
    answer = decode_envelope(await ex.on_challenge(challenge(clock, v, ex)))
    assert isinstance(answer.body, Busy) and answer.body.busy_with == first
    # ... and no longer once both windows and the grace are over.
    clock.ms += ABANDON_GRACE_MS + 1
    assert isinstance(decode_envelope(await ex.on_challenge(challenge(clock, v, ex))).body, Commitment)


async def test_a_challenges_own_far_deadline_is_capped_even_when_taken():
    # The executor keeps a challenge no longer than the protocol's windows whatever it says
    # (a window just inside the skew allowance is taken, but held only MAX_COMMIT_WINDOW_S).
    clock, v, ex = setup()
    first = challenge(
        clock, v, ex, window_ms=(C.MAX_COMMIT_WINDOW_S + CLOCK_SKEW_S) * 1000, openings_ms=C.MAX_OPENINGS_TIMEOUT_S * 1000
    )
    assert isinstance(decode_envelope(await ex.on_challenge(first)).body, Commitment)
    clock.ms += (C.MAX_COMMIT_WINDOW_S + C.MAX_OPENINGS_TIMEOUT_S) * 1000 + ABANDON_GRACE_MS + 1
    assert isinstance(decode_envelope(await ex.on_challenge(challenge(clock, v, ex))).body, Commitment)
