import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.identity import Identity
from node.wire import (
    BadSignature,
    MalformedMessage,
    OversizedMessage,
    SchemaViolation,
    StaleMessage,
    UnknownMessageType,
    VersionMismatch,
    WireError,
    decode_envelope,
    encode_envelope,
)
from node.wire.codec import pack_canonical
from node.wire.constants import SIG_DOMAIN_ENVELOPE
from node.wire.messages import (
    MESSAGE_TYPES,
    Challenge,
    GossipRPC,
    Hello,
    IHave,
    Ping,
    PublishedMessage,
    SubOpt,
    Verdict,
)

ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(1, 33)))
NOW = 1_700_000_000_000


def sample_messages():
    return [
        Hello(network="gpow-test", role="miner", listen_addrs=["ws://127.0.0.1:9000"], nonce=b"\x01" * 32, kx=b"\x02" * 32),
        Ping(nonce=7),
        GossipRPC(
            subscriptions=[SubOpt(topic="t", subscribe=True)],
            publish=[PublishedMessage(topic="t", data=b"payload")],
            ihave=[IHave(topic="t", ids=[b"\x02" * 32])],
            graft=["t"],
        ),
        Challenge(
            challenge_id=b"\x03" * 16,
            executor_id=BOB.peer_id,
            seed=b"\x04" * 32,
            n=128,
            steps=10,
            b_matrices=2,
            samples=8,
            commit_deadline_ms=NOW + 5000,
            openings_timeout_ms=5000,
            sample_commit=b"\x05" * 32,
        ),
        Verdict(
            challenge_id=b"\x03" * 16,
            executor_id=BOB.peer_id,
            miner_id=ALICE.peer_id,
            passed=True,
            reasons=["passed"],
            n=128,
            steps=10,
            commit_us=1,
            openings_us=2,
            verify_us=3,
            expected_us=0,
            score_ppm=1_000_000,
        ),
    ]


@pytest.mark.parametrize("body", sample_messages(), ids=lambda b: type(b).TYPE)
def test_round_trip(body):
    raw = encode_envelope(body, ALICE, seq=42, now_ms=NOW)
    env = decode_envelope(raw, now_ms=NOW)
    assert env.body == body
    assert env.sender == ALICE.peer_id and env.seq == 42 and env.timestamp_ms == NOW
    assert env.raw == raw


@pytest.mark.parametrize("body", sample_messages()[:4], ids=lambda b: type(b).TYPE)
def test_every_single_bit_flip_is_rejected(body):
    raw = encode_envelope(body, ALICE, seq=1, now_ms=NOW)
    for bit in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(WireError):
            decode_envelope(bytes(flipped))


def test_oversized_rejected_before_decoding(monkeypatch):
    import node.wire.codec as codec

    def boom(*a, **k):
        raise AssertionError("decoder must not run on an oversized frame")

    monkeypatch.setattr(codec.msgpack, "unpackb", boom)
    with pytest.raises(OversizedMessage, match="exceeds the limit"):
        decode_envelope(b"\x00" * 1025, max_bytes=1024)


def test_signature_by_another_key_is_rejected():
    raw = encode_envelope(Ping(nonce=1), ALICE, seq=1, now_ms=NOW)
    top = msgpack.unpackb(raw)
    top["sender"] = BOB.peer_id  # claims to be Bob, signed by Alice
    with pytest.raises(BadSignature):
        decode_envelope(pack_canonical(top))


def test_typed_errors_name_what_was_wrong():
    good = msgpack.unpackb(encode_envelope(Ping(nonce=1), ALICE, seq=1, now_ms=NOW))

    def resigned(**changes):
        top = dict(good, **changes)
        unsigned = {k: v for k, v in top.items() if k != "sig"}
        top["sig"] = ALICE.sign(SIG_DOMAIN_ENVELOPE + pack_canonical(unsigned))
        return pack_canonical(top)

    with pytest.raises(UnknownMessageType, match="no-such"):
        decode_envelope(resigned(type="no-such"))
    with pytest.raises(VersionMismatch):
        decode_envelope(resigned(v=99))
    with pytest.raises(SchemaViolation, match="ping.nonce: expected an integer"):
        decode_envelope(resigned(body={"nonce": "seven"}))
    with pytest.raises(SchemaViolation, match="below the minimum"):
        decode_envelope(resigned(body={"nonce": -1}))
    with pytest.raises(SchemaViolation, match="unknown field"):
        decode_envelope(resigned(body={"nonce": 1, "extra": 2}))
    with pytest.raises(StaleMessage, match="off this node's clock"):
        decode_envelope(encode_envelope(Ping(nonce=1), ALICE, seq=1, now_ms=NOW), now_ms=NOW + 10**7)
    with pytest.raises(MalformedMessage, match="canonical"):
        decode_envelope(msgpack.packb(dict(reversed(list(good.items())))))
    with pytest.raises(MalformedMessage, match="ext type"):
        decode_envelope(msgpack.packb(msgpack.ExtType(5, b"x")))
    with pytest.raises(MalformedMessage, match="nesting"):
        deep = []
        for _ in range(40):
            deep = [deep]
        decode_envelope(msgpack.packb(deep))
    with pytest.raises(MalformedMessage):
        decode_envelope(msgpack.packb({1: 2}))


def test_canonical_check_limits() -> None:
    """Exactly MAX_NESTING levels pass, one more does not; keys are strings in sorted order; no floats;
    the smallest integer encoding only."""
    from node.wire.codec import unpack_strict
    from node.wire.constants import MAX_NESTING

    def nested(levels: int) -> object:
        v: object = 1
        for _ in range(levels):
            v = [v]
        return v

    assert unpack_strict(msgpack.packb(nested(MAX_NESTING))) == nested(MAX_NESTING)
    with pytest.raises(MalformedMessage, match="nesting"):
        unpack_strict(msgpack.packb(nested(MAX_NESTING + 1)))
    assert unpack_strict(msgpack.packb({"a": 1, "b": {"c": [], "d": {}}})) == {"a": 1, "b": {"c": [], "d": {}}}
    with pytest.raises(MalformedMessage, match="out of order"):
        unpack_strict(msgpack.packb({"b": 1, "a": 2}))
    with pytest.raises(MalformedMessage, match="strings"):
        unpack_strict(msgpack.packb({b"a": 1}, use_bin_type=True))
    with pytest.raises(SchemaViolation, match="floats"):
        unpack_strict(msgpack.packb({"a": [1.5]}))
    with pytest.raises(MalformedMessage, match="canonical"):
        unpack_strict(b"\xcd\x00\x05")  # 5 as uint16


def test_expect_restricts_types():
    raw = encode_envelope(Ping(nonce=1), ALICE, seq=1, now_ms=NOW)
    with pytest.raises(UnknownMessageType, match="not expected"):
        decode_envelope(raw, expect=Hello)


def test_every_message_type_registered_once():
    assert len(MESSAGE_TYPES) == len(set(MESSAGE_TYPES.values()))


VALID = [encode_envelope(b, ALICE, seq=i, now_ms=NOW) for i, b in enumerate(sample_messages())]
FUZZ = settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_random_bytes_only_raise_wire_errors(data):
    try:
        decode_envelope(data)
    except WireError:
        pass


@FUZZ
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 10_000),
    st.binary(max_size=16),
)
def test_fuzz_mutated_valid_messages_only_raise_wire_errors(raw, edits, cut, insert):
    data = bytearray(raw)
    for pos, val in edits:
        data[pos % len(data)] = val
    pos = cut % (len(data) + 1)
    data = data[:pos] + insert + data[pos:]
    try:
        env = decode_envelope(bytes(data))
    except WireError:
        return
    assert bytes(data) == raw  # only the untouched message may pass
    assert env.raw == raw


def test_gossip_rpc_bounds_ihave_and_iwant_like_gossipsub() -> None:
    """Issue 19 item 3: an RPC of 64 IHAVEs of 5,000 ids (10.9 MB) decoded in 0.73 s and stalled
    the event loop. One RPC now carries at most MAX_IHAVE_PER_RPC x MAX_IHAVE_IDS + MAX_IWANT_IDS
    ids; anything past a bound is a typed refusal before any per-id work."""
    from node.net.framing import decode_frame, encode_frame
    from node.wire import constants as C
    from node.wire.errors import SchemaViolation
    from node.wire.messages import GossipRPC, IHave

    mid = bytes(32)
    old_max = GossipRPC(ihave=[IHave(topic="t", ids=[mid] * 5000) for _ in range(64)])
    frame = pack_canonical({"b": old_max, "t": "gossip"})  # as an attacker sends it, unchecked
    with pytest.raises(SchemaViolation):
        decode_frame(frame, max_bytes=32 * 1024 * 1024)
    for too_many in (
        GossipRPC(ihave=[IHave(topic="t", ids=[mid])] * (C.MAX_IHAVE_PER_RPC + 1)),
        GossipRPC(ihave=[IHave(topic="t", ids=[mid] * (C.MAX_IHAVE_IDS + 1))]),
        GossipRPC(iwant=[mid] * (C.MAX_IWANT_IDS + 1)),
    ):
        with pytest.raises(SchemaViolation):
            decode_frame(pack_canonical({"b": too_many, "t": "gossip"}), max_bytes=32 * 1024 * 1024)
    biggest = GossipRPC(
        ihave=[IHave(topic="t", ids=[mid] * C.MAX_IHAVE_IDS)] * C.MAX_IHAVE_PER_RPC, iwant=[mid] * C.MAX_IWANT_IDS
    )
    data = encode_frame(biggest)
    assert decode_frame(data, max_bytes=32 * 1024 * 1024) == biggest
    assert len(data) < 400 * 1024  # vs 10.9 MB before
