"""Rosters signed entry by entry by the executors: forged entries are refused, an executor listed
by two miners at once is flagged, and one that moves cleanly between miners is not."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from node.gossip.driver import GossipDriver
from node.gossip.params import GossipParams
from node.identity import Identity
from node.net.host import Host
from node.net.params import NetParams
from node.roles.ledger import Ledger
from node.roles.params import ValidatorParams
from node.roles.profiles import ProfileBook
from node.roles.validator import ValidatorService
from node.wire.envelope import Signer, decode_envelope
from node.wire.messages import ExecutorAttestation, Roster


def attestation(executor: Identity, miner: str, uuid: str) -> bytes:
    return Signer(executor).seal(ExecutorAttestation(
        miner_id=miner, engine="gpu", gpu_model="NVIDIA H100 80GB HBM3", memory_bytes=80 << 30, gpu_uuid=uuid,
        pci_bus_id="0000:01:00.0", host_fingerprint="h-" + executor.peer_id[-6:], expires_ms=int(time.time() * 1000) + 600_000,
    ))


def roster(miner: Identity, entries: list[bytes], version: int = 1):
    return decode_envelope(Signer(miner).seal(Roster(version=version, entries=entries)), expect=Roster)


@pytest.fixture
def validator(tmp_path: Path) -> ValidatorService:
    profiles = tmp_path / "p.toml"
    profiles.write_text('[[profile]]\nmodel = "x"\nmemory_bytes = 0\nn = 64\nstep_seconds = 0.01\nmeasured = false\nsource = "t"\n')
    host = Host(Identity.generate(), NetParams(listen_port=0), "validator")
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    yield ValidatorService(host, ValidatorParams(), ledger, ProfileBook.load(profiles), gossip=GossipDriver(host, GossipParams()),
                           data_dir=tmp_path, clock=time.monotonic)
    ledger.close()


def test_forged_roster_entry_is_rejected(validator: ValidatorService):
    miner_a, miner_b, ex = Identity.generate(), Identity.generate(), Identity.generate()
    # miner B lists an attestation that names miner A: it cannot pass off A's executor as its own
    env = roster(miner_b, [attestation(ex, miner_a.peer_id, "GPU-1")])
    assert validator._validate_roster(env) == "reject"
    assert validator.stats.rosters_rejected == 1
    assert ex.peer_id not in validator.executors


def test_executor_in_two_rosters_is_flagged_and_a_clean_move_is_not(validator: ValidatorService):
    miner_a, miner_b, ex, other = (Identity.generate() for _ in range(4))
    env_a = roster(miner_a, [attestation(ex, miner_a.peer_id, "GPU-1"), attestation(other, miner_a.peer_id, "GPU-2")])
    assert validator._validate_roster(env_a) == "accept"
    validator._on_roster(env_a)
    assert not validator.listed_twice(ex.peer_id)
    # the executor also signed an attestation for miner B, which lists it too: one GPU, two earners
    env_b = roster(miner_b, [attestation(ex, miner_b.peer_id, "GPU-1")])
    validator._on_roster(env_b)
    assert validator.listed_twice(ex.peer_id) == {miner_a.peer_id, miner_b.peer_id}
    assert not validator.listed_twice(other.peer_id)
    assert validator.status()["executors"][ex.peer_id]["listed_by"]
    # miner A drops it (a clean move to B): no longer a duplicate
    validator._on_roster(roster(miner_a, [attestation(other, miner_a.peer_id, "GPU-2")], version=2))
    assert not validator.listed_twice(ex.peer_id)
    assert validator.executors[ex.peer_id].miner_id == miner_b.peer_id


def test_probation_challenges_are_short_but_keep_enough_samples(validator: ValidatorService):
    """New executors get small challenges (T <= 32) but at least 8 samples: with 4, a cheater that
    corrupts 20% of its rows would pass 41% of its probation checks."""
    miner, ex = Identity.generate(), Identity.generate()
    env = roster(miner, [attestation(ex, miner.peer_id, "GPU-9")])
    assert validator._validate_roster(env) == "accept"
    validator._on_roster(env)
    e = validator.executors[ex.peer_id]
    p = validator.params
    n, steps, k = validator.size_challenge(e)
    assert p.samples == 32 and steps <= 32 and k == 8
    validator.params = dataclasses.replace(p, samples=16)  # the harness's k: 4 before, 8 now
    assert validator.size_challenge(e)[2] == 8
    validator.params = p
    e.challenges = p.probation_challenges  # probation over: full size
    n2, steps2, k2 = validator.size_challenge(e)
    assert k2 == p.samples and steps2 >= steps and n2 == n
