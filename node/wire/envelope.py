"""The signed envelope every message travels in.

Wire form: a canonical msgpack map ``{body, seq, sender, sig, ts, type, v}``. The signature is
Ed25519 over ``SIG_DOMAIN_ENVELOPE || canonical(map without sig)``. The sender is a peer id, which
encodes its own public key, so the signature is checked with no key lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from node.clock import now_ms
from node.identity import Identity, IdentityError, public_key_from_peer_id, verify_signature
from node.wire import constants as C
from node.wire.codec import check_fields, from_wire, pack_canonical, unpack_strict
from node.wire.errors import (
    BadSignature,
    MalformedMessage,
    SchemaViolation,
    StaleMessage,
    UnknownMessageType,
    VersionMismatch,
)
from node.wire.messages import MESSAGE_TYPES, U63

_TOP_KEYS = frozenset({"body", "seq", "sender", "sig", "ts", "type", "v"})


@dataclass(frozen=True)
class Envelope:
    version: int
    type: str
    sender: str
    seq: int
    timestamp_ms: int
    body: Any
    signature: bytes
    raw: bytes  # the exact bytes received or sent

    @property
    def sender_key(self) -> bytes:
        return public_key_from_peer_id(self.sender)


def signing_bytes(version: int, mtype: str, sender: str, seq: int, ts: int, body: Any) -> bytes:
    unsigned = {"body": body, "seq": seq, "sender": sender, "ts": ts, "type": mtype, "v": version}
    return C.SIG_DOMAIN_ENVELOPE + pack_canonical(unsigned)


_SIG_ENTRY = b"\xa3sig\xc4\x40"  # the canonical encoding of the key "sig" and a 64-byte bin header


def _signed_part(raw: bytes, sig: bytes) -> bytes:
    """``signing_bytes`` of a received envelope, cut from its bytes instead of re-encoded: the
    envelope is canonical (checked before this), so the map without "sig" is the same bytes with
    that entry removed and the map header one entry shorter. Keys are sorted, so the entry sits
    between "sender" and "ts" and only the short "ts", "type", "v" entries follow it: the last
    occurrence is the entry (the body, before it, cannot hold the signature made over it)."""
    i = raw.rfind(_SIG_ENTRY + sig)
    assert raw[0] == 0x87 and i > 0, "a canonical envelope map has 7 entries and a sig entry"
    return C.SIG_DOMAIN_ENVELOPE + b"\x86" + raw[1:i] + raw[i + len(_SIG_ENTRY) + len(sig) :]


def encode_envelope(body: Any, identity: Identity, *, seq: int, now_ms: int, check: bool = True) -> bytes:
    """Sign and encode a message dataclass."""
    mtype = type(body).TYPE
    if check:
        check_fields(body)
    sender = identity.peer_id
    sig = identity.sign(signing_bytes(C.PROTOCOL_VERSION, mtype, sender, seq, now_ms, body))
    return pack_canonical(
        {"body": body, "seq": seq, "sender": sender, "sig": sig, "ts": now_ms, "type": mtype, "v": C.PROTOCOL_VERSION}
    )


def decode_envelope(
    data: bytes,
    *,
    max_bytes: int = C.DEFAULT_MAX_MESSAGE_BYTES,
    now_ms: int | None = None,
    max_skew_ms: int = C.DEFAULT_MAX_CLOCK_SKEW_MS,
    expect: type | tuple[type, ...] | None = None,
) -> Envelope:
    """Decode and verify one envelope; raise a WireError subclass saying what was wrong.

    Cheapest checks first: size, msgpack, canonical form, top-level shape, version, type, body
    schema, then the signature, then freshness (only when ``now_ms`` is given).
    """
    top = unpack_strict(data, max_bytes=max_bytes)
    if not isinstance(top, dict):
        raise MalformedMessage(f"envelope must be a map, got {type(top).__name__}")
    if set(top) != _TOP_KEYS:
        raise MalformedMessage(f"envelope keys must be {sorted(_TOP_KEYS)}, got {sorted(top)}")
    version, mtype, sender, seq, ts, sig = (top[k] for k in ("v", "type", "sender", "seq", "ts", "sig"))
    if not isinstance(version, int) or isinstance(version, bool):
        raise SchemaViolation("envelope.v: expected an integer")
    if version != C.PROTOCOL_VERSION:
        raise VersionMismatch(f"protocol version {version} is not supported (this node speaks {C.PROTOCOL_VERSION})")
    if not isinstance(mtype, str) or len(mtype) > C.MAX_TYPE_NAME:
        raise SchemaViolation("envelope.type: expected a short string")
    cls = MESSAGE_TYPES.get(mtype)
    if cls is None:
        raise UnknownMessageType(f"unknown message type {mtype!r}")
    if expect is not None and not issubclass(cls, expect):
        names = [getattr(e, "TYPE", e.__name__) for e in (expect if isinstance(expect, tuple) else (expect,))]
        raise UnknownMessageType(f"message type {mtype!r} is not expected here (expected {names})")
    for name, v in (("seq", seq), ("ts", ts)):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= U63:
            raise SchemaViolation(f"envelope.{name}: expected a non-negative 63-bit integer")
    if not isinstance(sig, bytes) or len(sig) != C.SIGNATURE_BYTES:
        raise SchemaViolation(f"envelope.sig: expected {C.SIGNATURE_BYTES} bytes")
    if not isinstance(sender, str):
        raise SchemaViolation("envelope.sender: expected a peer id string")
    try:
        key = public_key_from_peer_id(sender)
    except IdentityError as exc:
        raise SchemaViolation(f"envelope.sender: {exc}") from None
    body: Any = from_wire(cls, top["body"], where=mtype)
    if not verify_signature(key, _signed_part(bytes(data), sig), sig):
        raise BadSignature(f"signature on {mtype!r} does not verify for sender {sender}")
    if now_ms is not None and abs(now_ms - ts) > max_skew_ms:
        raise StaleMessage(
            f"{mtype!r} timestamp is {(now_ms - ts) / 1000:.1f} s off this node's clock (limit {max_skew_ms / 1000:.0f} s)"
        )
    return Envelope(version, mtype, sender, seq, ts, body, sig, bytes(data))


class Signer:
    """Seals message bodies into envelopes with this identity and a strictly increasing seq.

    The seq starts from the wall clock in microseconds, so it keeps increasing across restarts
    and (sender, seq) never repeats for honest nodes.
    """

    def __init__(self, identity: Identity, wall_ms: Callable[[], int] | None = None):

        self.identity = identity
        self._wall_ms = wall_ms or now_ms
        self._seq = self._wall_ms() * 1000

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    @property
    def last_seq(self) -> int:
        """The seq of the envelope ``seal`` returned last."""
        return self._seq

    def seal(self, body: Any) -> bytes:
        self._seq += 1
        return encode_envelope(body, self.identity, seq=self._seq, now_ms=self._wall_ms())
