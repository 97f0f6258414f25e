"""Gossipsub v1.1 peer score: each component, decay, retention and bounds."""

from __future__ import annotations

import pytest

from node.gossip.params import GossipParams
from node.gossip.scoring import PeerScore

T = "topic/1"


def _score(**kw) -> tuple[PeerScore, GossipParams]:
    p = GossipParams(**kw)
    s = PeerScore(p, {T})
    return s, p


def test_p1_time_in_mesh_grows_and_caps() -> None:
    s, p = _score(time_in_mesh_weight=0.5, time_in_mesh_quantum_s=2.0, time_in_mesh_cap=10.0)
    s.add_peer("a", "10.0.0.1", 0.0)
    s.graft("a", T, 0.0)
    assert s.score("a", 4.0) == pytest.approx(0.5 * 2)  # 4 s = 2 quanta
    assert s.score("a", 100.0) == pytest.approx(0.5 * 10)  # capped
    s.prune("a", T)
    assert s.score("a", 200.0) == 0.0  # only while in the mesh


def test_p2_first_deliveries_count_decay_and_cap() -> None:
    s, p = _score(
        first_message_deliveries_weight=2.0,
        first_message_deliveries_cap=3.0,
        first_message_deliveries_decay=0.5,
        time_in_mesh_weight=0.0,
    )
    s.add_peer("a", "10.0.0.1", 0.0)
    for i in range(5):
        mid = bytes([i]) * 32
        s.validate_message("a", mid, 0.0)
        s.deliver_message("a", mid, T, 0.0)
    assert s.score("a", 0.0) == pytest.approx(2.0 * 3)  # capped at 3
    s.refresh(0.0)
    s.refresh(1.0)  # one decay step
    assert s.score("a", 1.0) == pytest.approx(2.0 * 1.5)
    s.refresh(20.0)  # decays to zero (below decay_to_zero)
    assert s.peers["a"].topics[T].first_message_deliveries == 0.0


def test_p2_and_p3_credit_for_duplicates_during_validation() -> None:
    s, p = _score(mesh_message_deliveries_window_s=0.05)
    for q in ("a", "b", "c"):
        s.add_peer(q, "10.0.0.1" if q == "a" else f"10.0.0.{ord(q)}", 0.0)
        s.graft(q, T, 0.0)
    mid = b"m" * 32
    s.validate_message("a", mid, 1.0)
    s.duplicate_message("b", mid, T, 1.01)  # while validating
    s.deliver_message("a", mid, T, 1.02)
    s.duplicate_message("c", mid, T, 1.5)  # long after validation: not a mesh delivery
    ta, tb, tc = (s.peers[q].topics[T] for q in "abc")
    assert ta.first_message_deliveries == 1 and ta.mesh_message_deliveries == 1
    assert tb.first_message_deliveries == 0 and tb.mesh_message_deliveries == 1
    assert tc.mesh_message_deliveries == 0


def test_p3_deficit_only_after_activation_and_p3b_on_prune() -> None:
    s, p = _score(
        mesh_message_deliveries_weight=-2.0,
        mesh_message_deliveries_threshold=4.0,
        mesh_message_deliveries_activation_s=5.0,
        mesh_failure_penalty_weight=-1.0,
        time_in_mesh_weight=0.0,
        first_message_deliveries_weight=0.0,
    )
    s.add_peer("a", "10.0.0.1", 0.0)
    s.graft("a", T, 0.0)
    s.refresh(0.0)
    s.refresh(3.0)
    assert s.score("a", 3.0) == 0.0  # not active yet
    s.refresh(6.0)
    assert s.peers["a"].topics[T].mesh_message_deliveries_active
    assert s.score("a", 6.0) == pytest.approx(-2.0 * 16)  # deficit 4, squared
    mid = b"x" * 32
    s.validate_message("a", mid, 6.0)
    s.deliver_message("a", mid, T, 6.0)
    assert s.score("a", 6.0) == pytest.approx(-2.0 * 9)  # deficit 3
    s.prune("a", T)  # leaves the mesh in deficit: P3b keeps it
    assert s.peers["a"].topics[T].mesh_failure_penalty == pytest.approx(9.0)
    assert s.score("a", 6.0) == pytest.approx(-1.0 * 9)


def test_p4_invalid_squared_and_spread_to_duplicate_senders() -> None:
    s, p = _score(invalid_message_deliveries_weight=-3.0)
    s.add_peer("a", "10.0.0.1", 0.0)
    s.add_peer("b", "10.0.0.2", 0.0)
    for i in range(2):
        mid = bytes([i]) * 32
        s.validate_message("a", mid, 0.0)
        s.duplicate_message("b", mid, T, 0.0)  # b relayed the same bad message
        s.reject_message("a", mid, T, 0.0, invalid=True)
    assert s.score("a", 0.0) == pytest.approx(-3.0 * 4)
    assert s.score("b", 0.0) == pytest.approx(-3.0 * 4)
    # A late duplicate of a known-invalid message counts too.
    s.duplicate_message("b", bytes([0]) * 32, T, 1.0)
    assert s.score("b", 1.0) == pytest.approx(-3.0 * 9)


def test_ignored_messages_are_not_penalised() -> None:
    s, p = _score()
    s.add_peer("a", "10.0.0.1", 0.0)
    s.add_peer("b", "10.0.0.2", 0.0)
    mid = b"i" * 32
    s.validate_message("a", mid, 0.0)
    s.duplicate_message("b", mid, T, 0.0)
    s.reject_message("a", mid, T, 0.0, invalid=False)
    s.duplicate_message("b", mid, T, 1.0)
    assert s.score("a", 1.0) == 0.0 and s.score("b", 1.0) == 0.0


def test_p6_ip_colocation_and_whitelist() -> None:
    s, p = _score(
        ip_colocation_factor_weight=-5.0, ip_colocation_factor_threshold=2, ip_colocation_factor_whitelist="192.168.0.0/16"
    )
    for i in range(5):
        s.add_peer(f"s{i}", "10.1.1.1", 0.0)
    for i in range(5):
        s.add_peer(f"w{i}", "192.168.7.7", 0.0)
    s.add_peer("v6", "2001:db8::1", 0.0)
    assert s.score("s0", 0.0) == pytest.approx(-5.0 * 9)  # 5 on one IP, 2 allowed: surplus 3
    assert s.score("w0", 0.0) == 0.0
    assert s.score("v6", 0.0) == 0.0
    s.remove_peer("s4", 1.0)
    s.remove_peer("s3", 1.0)
    assert s.score("s0", 1.0) == pytest.approx(-5.0 * 1)


def test_p7_behaviour_penalty_threshold_and_decay() -> None:
    s, p = _score(behaviour_penalty_weight=-2.0, behaviour_penalty_threshold=1.0, behaviour_penalty_decay=0.5)
    s.add_peer("a", "10.0.0.1", 0.0)
    s.add_penalty("a", 1.0)
    assert s.score("a", 0.0) == 0.0  # at the threshold: free
    s.add_penalty("a", 3.0)
    assert s.score("a", 0.0) == pytest.approx(-2.0 * 9)
    s.refresh(0.0)
    s.refresh(1.0)
    assert s.peers["a"].behaviour_penalty == pytest.approx(2.0)
    assert s.score("a", 1.0) == pytest.approx(-2.0 * 1)
    assert s.add_penalty("nobody", 1.0) is False


def test_topic_score_cap_limits_only_the_positive_topic_part() -> None:
    s, p = _score(
        topic_score_cap=2.0,
        first_message_deliveries_weight=1.0,
        first_message_deliveries_cap=100.0,
        behaviour_penalty_weight=-1.0,
    )
    s.add_peer("a", "10.0.0.1", 0.0)
    for i in range(10):
        mid = bytes([i]) * 32
        s.validate_message("a", mid, 0.0)
        s.deliver_message("a", mid, T, 0.0)
    assert s.score("a", 0.0) == pytest.approx(2.0)
    s.add_penalty("a", 3.0)
    assert s.score("a", 0.0) == pytest.approx(2.0 - 9.0)


def test_negative_score_is_retained_across_reconnect() -> None:
    s, p = _score(retain_score_s=100.0)
    s.add_peer("bad", "10.0.0.1", 0.0)
    s.add_penalty("bad", 5.0)
    before = s.score("bad", 0.0)
    assert before < 0
    s.remove_peer("bad", 1.0)
    s.add_peer("bad", "10.0.0.9", 2.0)  # reconnecting does not wash the score
    assert s.score("bad", 2.0) == pytest.approx(before)
    s.remove_peer("bad", 3.0)
    s.refresh(3.0)
    s.refresh(200.0)  # retention over: forgotten
    assert "bad" not in s.peers
    # A well-behaved peer's record is dropped at once on disconnect.
    s.add_peer("good", "10.0.0.2", 300.0)
    mid = b"g" * 32
    s.validate_message("good", mid, 300.0)
    s.deliver_message("good", mid, T, 300.0)
    s.remove_peer("good", 301.0)
    assert "good" not in s.peers


def test_tables_are_bounded() -> None:
    s, p = _score(max_retained_scores=50, seen_max=1000)
    for i in range(200):
        pid = f"p{i}"
        s.add_peer(pid, f"10.0.{i // 200}.{i % 200}", float(i))
        s.add_penalty(pid, 1.0)
        s.remove_peer(pid, float(i))
    assert len(s.peers) <= 51
    assert not s.peer_ips  # disconnected peers hold no IP slots
    for i in range(5000):
        s.validate_message("x", i.to_bytes(32, "big"), 0.0)
    assert len(s.deliveries) == max(1024, p.seen_max)  # oldest records dropped first
    s.refresh(0.0)
    s.refresh(p.seen_ttl_s + 1)
    assert len(s.deliveries) == 0


def test_topic_stats_only_for_our_topics() -> None:
    s, p = _score()
    s.add_peer("a", "10.0.0.1", 0.0)
    s.graft("a", "someone-elses/topic", 0.0)
    assert "someone-elses/topic" not in s.peers["a"].topics
    # An invalid message on a topic we do not track is charged as behaviour.
    s.validate_message("a", b"z" * 32, 0.0)
    s.reject_message("a", b"z" * 32, "someone-elses/topic", 0.0, invalid=True)
    assert s.peers["a"].behaviour_penalty == 1.0


def test_params_are_plain_toml_values() -> None:
    # The [gossip] table of a config file maps onto GossipParams field by field.
    import dataclasses
    import tomllib

    from node.app.config import build_section

    fields = dataclasses.fields(GossipParams)
    assert all(f.type in ("int", "float", "bool", "str", int, float, bool, str) for f in fields)
    text = "\n".join(f"{f.name} = {_toml(getattr(GossipParams(), f.name))}" for f in fields)
    loaded = build_section(GossipParams, tomllib.loads(text), "[gossip]")
    assert loaded == GossipParams()
    assert build_section(GossipParams, {"D": 8, "D_hi": 16, "heartbeat_s": 0.5}, "[gossip]").D == 8


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)
