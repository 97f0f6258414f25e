"""One GPU counted once: the duplicate-UUID rules of the validator's GPU identity registry."""

from __future__ import annotations

from node.roles.gpu_identity import GpuIdentityRegistry

UUID_A = "GPU-1b1e6a2c-0000-4000-8000-00000000000a"
UUID_B = "GPU-1b1e6a2c-0000-4000-8000-00000000000b"


def test_distinct_gpus_are_not_duplicates():
    reg = GpuIdentityRegistry()
    reg.observe("e1", "m1", UUID_A, "0000:17:00.0", "host1", 1000)
    reg.observe("e2", "m1", UUID_B, "0000:65:00.0", "host1", 1000)
    assert reg.duplicates_of("e1") == set()
    assert reg.duplicates_of("e2") == set()
    assert reg.duplicate_groups() == []


def test_one_uuid_under_two_executors_of_one_miner():
    reg = GpuIdentityRegistry()
    reg.observe("e1", "m1", UUID_A, "0000:17:00.0", "host1", 1000)
    reg.observe("e2", "m1", UUID_A, "0000:17:00.0", "host1", 1000)
    # same instant: the lower id holds the UUID; the other is the duplicate
    assert reg.duplicates_of("e1") == set() and reg.holder(UUID_A) == "e1"
    assert reg.duplicates_of("e2") == {"e1"}
    assert reg.contenders_of("e1") == {"e2"}
    assert reg.duplicate_groups() == [{"e1", "e2"}]


def test_one_uuid_under_two_miners_is_a_duplicate_whatever_the_host():
    reg = GpuIdentityRegistry()
    reg.observe("e1", "m1", UUID_A, "0000:17:00.0", "host1", 1000)
    reg.observe("e2", "m2", UUID_A, "0000:b3:00.0", "host2", 2000)
    reg.observe("e3", "m3", UUID_A, "", "host3", 3000)
    assert reg.duplicates_of("e1") == set()  # the first registrant keeps it
    assert reg.duplicates_of("e2") == {"e1", "e3"}
    assert reg.duplicates_of("e3") == {"e1", "e2"}


def test_duplicate_until_one_deregisters_cleanly():
    reg = GpuIdentityRegistry()
    reg.observe("e1", "m1", UUID_A, "", "h", 1000)
    reg.observe("e2", "m2", UUID_A, "", "h", 1000)
    for t in range(2000, 10000, 1000):  # roster refreshes keep them both live
        reg.observe("e1", "m1", UUID_A, "", "h", t)
        reg.observe("e2", "m2", UUID_A, "", "h", t)
        assert reg.duplicates_of("e2") == {"e1"}
    reg.deregister("e2", 10_000)
    assert reg.duplicates_of("e1") == set()
    assert reg.duplicates_of("e2") == set()
    assert reg.sighting("e2") is None


def test_moving_between_miners_after_a_clean_deregister_is_not_a_duplicate():
    reg = GpuIdentityRegistry()
    reg.observe("e1", "m1", UUID_A, "0000:17:00.0", "host1", 1000)
    reg.deregister("e1", 2000)
    reg.observe("e1", "m2", UUID_A, "0000:17:00.0", "host1", 3000)
    assert reg.duplicates_of("e1") == set()
    assert reg.sighting("e1").miner_id == "m2"


def test_moving_between_miners_without_deregister_is_not_a_duplicate_of_itself():
    reg = GpuIdentityRegistry()
    reg.observe("e1", "m1", UUID_A, "", "host1", 1000)
    reg.observe("e1", "m2", UUID_A, "", "host1", 2000)
    assert reg.duplicates_of("e1") == set()
    assert reg.sighting("e1").miner_id == "m2"
    assert reg.sighting("e1").first_seen_ms == 1000


def test_gpu_re_registered_under_a_new_key_after_clean_leave_is_not_a_duplicate():
    # the same card leaves under one executor id and comes back under a new key with a new miner
    reg = GpuIdentityRegistry()
    reg.observe("e-old", "m1", UUID_A, "", "host1", 1000)
    reg.deregister("e-old", 2000)
    reg.observe("e-new", "m2", UUID_A, "", "host1", 3000)
    assert reg.duplicates_of("e-new") == set()


def test_new_key_for_a_gpu_still_held_by_a_live_executor_is_a_duplicate():
    reg = GpuIdentityRegistry()
    reg.observe("e-old", "m1", UUID_A, "", "host1", 1000)
    reg.observe("e-new", "m2", UUID_A, "", "host1", 3000)
    assert reg.duplicates_of("e-new") == {"e-old"}


def test_changing_the_reported_uuid_releases_the_old_one():
    reg = GpuIdentityRegistry()
    reg.observe("e1", "m1", UUID_A, "", "h", 1000)
    reg.observe("e2", "m1", UUID_A, "", "h", 1000)
    reg.observe("e2", "m1", UUID_B, "", "h", 2000)
    assert reg.duplicates_of("e1") == set()
    assert reg.duplicates_of("e2") == set()
    reg.observe("e3", "m9", UUID_B, "", "h", 3000)
    assert reg.duplicates_of("e3") == {"e2"}  # e2 reported UUID_B first


def test_cpu_placeholder_uuids_never_collide():
    reg = GpuIdentityRegistry()
    ids = [f"12D3KooWexecutor{i:04d}" for i in range(5)]
    for eid in ids:  # as node.app.node._cpu_facts builds them: per executor id
        reg.observe(eid, "m1", f"CPU-{eid[-16:]}", "", "same-host", 1000)
    assert all(reg.duplicates_of(e) == set() for e in ids)


def test_empty_uuids_never_match():
    reg = GpuIdentityRegistry()
    reg.observe("e1", "m1", "", "", "h", 1000)
    reg.observe("e2", "m2", "", "", "h", 1000)
    assert reg.duplicates_of("e1") == set()


def test_unknown_executor_has_no_duplicates_and_deregister_is_idempotent():
    reg = GpuIdentityRegistry()
    assert reg.duplicates_of("nobody") == set()
    reg.deregister("nobody", 1000)
    reg.observe("e1", "m1", UUID_A, "", "h", 1000)
    reg.deregister("e1", 2000)
    reg.deregister("e1", 3000)
    assert reg.duplicates_of("e1") == set()


def test_an_executor_that_vanished_without_a_word_stops_counting_after_the_stale_time():
    reg = GpuIdentityRegistry(stale_after_ms=60_000)
    reg.observe("e1", "m1", UUID_A, "", "h", 0)
    reg.observe("e2", "m2", UUID_A, "", "h", 0)
    assert reg.duplicates_of("e2") == {"e1"}
    reg.observe("e2", "m2", UUID_A, "", "h", 59_000)  # e1's miner went silent
    assert reg.duplicates_of("e2") == {"e1"}
    reg.observe("e2", "m2", UUID_A, "", "h", 61_000)
    assert reg.duplicates_of("e2") == set()
    # stale entries are also forgotten, so the registry does not grow without bound
    reg.observe("e2", "m2", UUID_A, "", "h", 200_000)
    assert reg.sighting("e1") is None
    # and it comes back as a duplicate if it speaks again (e2 holds the UUID now)
    reg.observe("e1", "m1", UUID_A, "", "h", 200_500)
    assert reg.duplicates_of("e1") == {"e2"} and reg.duplicates_of("e2") == set()


def test_sighting_keeps_the_latest_facts():
    reg = GpuIdentityRegistry()
    reg.observe("e1", "m1", UUID_A, "0000:17:00.0", "host1", 1000)
    reg.observe("e1", "m1", UUID_A, "0000:18:00.0", "host2", 5000)
    s = reg.sighting("e1")
    assert (s.pci_bus_id, s.host_fingerprint, s.first_seen_ms, s.last_seen_ms) == ("0000:18:00.0", "host2", 1000, 5000)


def test_copying_a_victims_public_uuid_fails_the_copier_not_the_victim():
    reg = GpuIdentityRegistry()
    reg.observe("victim", "m1", UUID_A, "0000:17:00.0", "host1", 1000)
    reg.observe("copier", "m9", UUID_A, "0000:17:00.0", "host9", 5000)
    assert reg.duplicates_of("victim") == set()
    assert reg.duplicates_of("copier") == {"victim"}


def test_co_scheduled_challenges_settle_a_stolen_uuid_but_one_bad_moment_does_not():
    # the copier registered first (it saw the UUID before the card's owner joined): the owner is the
    # duplicate until co-scheduled challenges fail the copier and pass the owner, SETTLE_LOSSES in a row
    from node.roles.gpu_identity import SETTLE_LOSSES

    reg = GpuIdentityRegistry()
    reg.observe("copier", "m9", UUID_A, "", "host9", 1000)
    reg.observe("owner", "m1", UUID_A, "", "host1", 2000)
    assert reg.duplicates_of("owner") == {"copier"}
    for _ in range(SETTLE_LOSSES - 1):
        assert reg.settle(passed={"owner"}, failed={"copier"}) == []
    assert reg.settle(passed={"owner"}, failed={"copier"}) == [(UUID_A, "owner")]
    assert reg.holder(UUID_A) == "owner"
    assert reg.duplicates_of("owner") == set() and reg.duplicates_of("copier") == {"owner"}
    # the real card late once (a transient failure) while the copier passes: it keeps its UUID
    assert reg.settle(passed={"copier"}, failed={"owner"}) == []
    assert reg.settle(passed={"owner", "copier"}, failed=set()) == []  # a win clears the loss
    for _ in range(SETTLE_LOSSES - 1):
        assert reg.settle(passed={"copier"}, failed={"owner"}) == []
    assert reg.holder(UUID_A) == "owner"
