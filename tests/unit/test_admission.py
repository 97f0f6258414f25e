"""The admitted validator set: static allowlists and authority-signed sets."""

from __future__ import annotations

import pytest

from node.identity import Identity
from node.roles.admission import AdmissionError, ValidatorSetBook
from node.roles.agreed import new_challenge_id
from node.roles.executor import ChallengeRefused
from node.wire.envelope import decode_envelope, encode_envelope
from node.wire.messages import ValidatorSet

NOW = 1_700_000_000_000


def signed_set(by: Identity, version: int, validators: list[str], expires_ms: int = NOW + 60_000):
    raw = encode_envelope(
        ValidatorSet(version=version, validators=validators, expires_ms=expires_ms), by, seq=version, now_ms=NOW
    )
    return decode_envelope(raw, expect=ValidatorSet)


def test_open_network_admits_anyone_and_static_list_only_its_members():
    assert ValidatorSetBook().is_admitted("anyone", NOW)
    book = ValidatorSetBook(["v1", "v2"])
    assert book.is_admitted("v1", NOW) and not book.is_admitted("v3", NOW)
    assert book.source == "static allowlist"


def test_authority_set_newest_version_wins_and_others_are_refused():
    authority, mallory = Identity.generate(), Identity.generate()
    book = ValidatorSetBook(authority=authority.peer_id)
    assert not book.is_admitted("v1", NOW), "no set yet: nobody is admitted"
    assert book.offer(signed_set(authority, 2, ["v1", "v2"]), NOW)
    assert book.is_admitted("v1", NOW)
    assert not book.offer(signed_set(authority, 1, ["v9"]), NOW), "older versions are not taken"
    with pytest.raises(AdmissionError) as exc:
        book.offer(signed_set(mallory, 9, ["mallory"]), NOW)
    assert exc.value.reason == "not-authority"
    with pytest.raises(AdmissionError) as exc:
        book.offer(signed_set(authority, 5, ["v5"], expires_ms=NOW - 1), NOW)
    assert exc.value.reason == "expired"
    assert book.members(NOW) == {"v1", "v2"}
    assert book.members(NOW + 120_000) == frozenset(), "an expired set admits nobody"


async def test_executor_refuses_a_challenge_from_outside_the_set():
    import os
    import time

    from node.pow.cpu_engine import CpuEngine
    from node.roles.executor import ExecutorService, GpuFacts
    from node.wire.envelope import Signer
    from node.wire.messages import Challenge

    admitted, outsider, ex = Identity.generate(), Identity.generate(), Identity.generate()
    book = ValidatorSetBook([admitted.peer_id])
    facts = GpuFacts(
        engine="cpu", gpu_model="cpu-reference", memory_bytes=1 << 22, gpu_uuid="CPU-x", pci_bus_id="", host_fingerprint="h"
    )
    service = ExecutorService(ex, "miner", CpuEngine(memory_budget_bytes=1 << 24), facts, admission=book)
    body = Challenge(
        challenge_id=new_challenge_id(outsider.peer_id),
        executor_id=ex.peer_id,
        seed=os.urandom(32),
        n=64,
        steps=2,
        b_matrices=1,
        samples=2,
        commit_deadline_ms=int(time.time() * 1000) + 10_000,
        openings_timeout_ms=5000,
        sample_commit=os.urandom(32),
    )
    with pytest.raises(ChallengeRefused) as exc:
        await service.on_challenge(Signer(outsider).seal(body))
    assert exc.value.reason == "unadmitted-validator"
    assert book.stats.refused == 1


async def test_pool_budget_refuses_a_pool_larger_than_declared():
    from node.pow.engine import EngineCapacityError
    from node.roles.executor import PoolBudget

    budget = PoolBudget(1000)
    with pytest.raises(EngineCapacityError, match="declared memory"):
        await budget.reserve(1001)
    await budget.reserve(600)
    assert budget.used == 600
