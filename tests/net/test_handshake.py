"""The handshake state machine, driven frame by frame with no sockets."""

from __future__ import annotations

import os

import pytest

from node.identity import Identity
from node.net.errors import HandshakeRefused
from node.net.framing import decode_frame, goodbye_frame
from node.net.handshake import Handshake, State
from node.wire.envelope import decode_envelope, encode_envelope
from node.wire.messages import Goodbye, Hello, HelloAuth

NOW = 1_700_000_000_000


def make(
    identity: Identity, *, network: str = "net-a", expected: str | None = None, nonce: bytes | None = None, role: str = "miner"
) -> Handshake:
    return Handshake(
        identity,
        network=network,
        role=role,
        listen_addrs=["ws://127.0.0.1:1"],
        nonce=nonce or os.urandom(32),
        now_ms=NOW,
        seq=1,
        expected_peer_id=expected,
    )


def run_pair(a: Handshake, b: Handshake) -> None:
    """Deliver frames between two machines until neither has anything to send."""
    to_b, to_a = a.initial_frames(), b.initial_frames()
    while to_a or to_b:
        next_b = [f for frame in to_b for f in b.receive(frame, NOW)]
        next_a = [f for frame in to_a for f in a.receive(frame, NOW)]
        to_a, to_b = next_b, next_a


def test_good_handshake_both_sides_learn_each_other() -> None:
    ia, ib = Identity.generate(), Identity.generate()
    a, b = make(ia, expected=ib.peer_id), make(ib, role="validator")
    run_pair(a, b)
    assert a.done and b.done
    assert a.result.peer_id == ib.peer_id and a.result.role == "validator"
    assert b.result.peer_id == ia.peer_id and b.result.role == "miner"
    assert b.result.listen_addrs == ["ws://127.0.0.1:1"]


def test_wrong_network_is_refused_with_reason() -> None:
    a, b = make(Identity.generate(), network="net-a"), make(Identity.generate(), network="net-b")
    with pytest.raises(HandshakeRefused) as ei:
        b.receive(a.initial_frames()[0], NOW)
    assert ei.value.code == "network"
    assert "net-a" in ei.value.reason and "net-b" in ei.value.reason
    assert b.state is State.FAILED
    # the refusal travels to the other side in a Goodbye frame and is reported there as by_remote
    with pytest.raises(HandshakeRefused) as ei2:
        a.receive(goodbye_frame(ei.value.reason), NOW)
    assert ei2.value.by_remote and ei2.value.code == "remote" and "net-b" in ei2.value.reason


def test_expected_peer_id_differs() -> None:
    ia, ib, other = Identity.generate(), Identity.generate(), Identity.generate()
    a = make(ia, expected=other.peer_id)
    with pytest.raises(HandshakeRefused) as ei:
        a.receive(make(ib).initial_frames()[0], NOW)
    assert ei.value.code == "unexpected-peer"


def test_hello_claiming_another_peer_id_is_refused() -> None:
    """A Hello whose envelope names a victim's peer id but is signed with the attacker's key."""
    victim, attacker, me = Identity.generate(), Identity.generate(), Identity.generate()
    honest = encode_envelope(
        Hello(network="net-a", role="miner", listen_addrs=[], nonce=os.urandom(32), kx=os.urandom(32)),
        attacker,
        seq=1,
        now_ms=NOW,
    )
    env = decode_envelope(honest)
    import msgpack

    top = msgpack.unpackb(honest, raw=False)
    top["sender"] = victim.peer_id  # same signature, other identity
    forged = msgpack.packb(dict(sorted(top.items())), use_bin_type=True)
    assert env.sender == attacker.peer_id
    with pytest.raises(HandshakeRefused) as ei:
        make(me).receive(forged, NOW)
    assert ei.value.code == "bad-signature"


def test_hello_auth_signed_by_another_key_is_refused() -> None:
    """M sends a Hello as itself, then a HelloAuth signed by a different key (impersonation)."""
    me, m, other = Identity.generate(), Identity.generate(), Identity.generate()
    mine = make(me)
    m_hs = make(m)
    mine_hello = mine.initial_frames()[0]
    m_auth = m_hs.receive(mine_hello, NOW)  # M's genuine auth, to copy the fields from
    auth_body = decode_envelope(m_auth[0]).body
    forged = encode_envelope(auth_body, other, seq=9, now_ms=NOW)
    mine.receive(m_hs.initial_frames()[0], NOW)
    with pytest.raises(HandshakeRefused) as ei:
        mine.receive(forged, NOW)
    assert ei.value.code == "impersonation"


def test_replayed_hello_auth_from_an_earlier_session_is_refused() -> None:
    me, peer = Identity.generate(), Identity.generate()
    # session 1 completes; keep the peer's HelloAuth
    s1_me, s1_peer = make(me), make(peer, nonce=b"\x07" * 32)
    s1_me.receive(s1_peer.initial_frames()[0], NOW)
    old_auth = s1_peer.receive(s1_me.initial_frames()[0], NOW)[0]
    s1_me.receive(old_auth, NOW)
    assert s1_me.done
    # session 2: an attacker replays the peer's old Hello (same nonce) and old HelloAuth
    s2_me = make(me)
    s2_me.receive(s1_peer.initial_frames()[0], NOW)
    with pytest.raises(HandshakeRefused) as ei:
        s2_me.receive(old_auth, NOW)
    assert ei.value.code == "replay"
    assert not s2_me.done


def test_relayed_hello_auth_made_for_someone_else_is_refused() -> None:
    """M relays B's HelloAuth (made for M) to A: it names M's id, not A's."""
    a_id, b_id, m_id = Identity.generate(), Identity.generate(), Identity.generate()
    a = make(a_id)
    b_for_m = make(b_id)
    # M talks to B using A's nonce so B signs it, but B signs for M's peer id.
    a_hello = decode_envelope(a.initial_frames()[0]).body
    m_hello = encode_envelope(
        Hello(network="net-a", role="miner", listen_addrs=[], nonce=a_hello.nonce, kx=os.urandom(32)), m_id, seq=1, now_ms=NOW
    )
    b_auth = b_for_m.receive(m_hello, NOW)[0]
    a.receive(b_for_m.initial_frames()[0], NOW)  # B's Hello, relayed
    with pytest.raises(HandshakeRefused) as ei:
        a.receive(b_auth, NOW)
    assert ei.value.code == "relayed"


def test_stale_hello_and_garbage_are_refused() -> None:
    me, peer = Identity.generate(), Identity.generate()
    stale = Handshake(
        peer, network="net-a", role="miner", listen_addrs=[], nonce=os.urandom(32), now_ms=NOW - 10 * 60_000, seq=1
    ).initial_frames()[0]
    with pytest.raises(HandshakeRefused) as ei:
        make(me).receive(stale, NOW)
    assert ei.value.code == "clock-skew"
    with pytest.raises(HandshakeRefused) as ei:
        make(me).receive(b"\x81\xa1x\x01garbage", NOW)
    assert ei.value.code == "malformed"
    with pytest.raises(HandshakeRefused) as ei:
        make(me).receive(b"\x00" * 20000, NOW)
    assert ei.value.code == "oversized"


def test_auth_before_hello_and_self_connection_are_refused() -> None:
    me, peer = Identity.generate(), Identity.generate()
    auth = encode_envelope(
        HelloAuth(my_nonce=os.urandom(32), your_nonce=os.urandom(32), your_peer_id=me.peer_id), peer, seq=1, now_ms=NOW
    )
    with pytest.raises(HandshakeRefused) as ei:
        make(me).receive(auth, NOW)
    assert ei.value.code == "unexpected"
    mine = make(me)
    with pytest.raises(HandshakeRefused) as ei:
        mine.receive(make(me).initial_frames()[0], NOW)
    assert ei.value.code == "self"


def test_goodbye_frame_roundtrip() -> None:
    msg = decode_frame(goodbye_frame("x" * 1000), max_bytes=4096)
    assert isinstance(msg, Goodbye) and len(msg.reason) == 256
