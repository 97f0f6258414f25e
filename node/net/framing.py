"""Link frames: what travels on a websocket after the handshake.

A frame is one websocket binary message holding canonical msgpack ``{"b": body, "t": type}``.
Link frames are not signed: the link itself was authenticated by the handshake, and anything that
must be attributable (gossip payloads, peer records) is a signed envelope inside the body. The size
is checked before any decoding; decoding is strict (canonical form, schema with ranges), so every
malformed frame becomes a typed WireError.
"""

from __future__ import annotations

from typing import Any

from node.wire.codec import from_wire, pack_canonical, unpack_strict
from node.wire.errors import MalformedMessage, UnknownMessageType
from node.wire.messages import GossipRPC, Goodbye, PeerExchange, Ping, Pong, Request, Response

LINK_TYPES: dict[str, type] = {cls.TYPE: cls for cls in (Goodbye, Ping, Pong, PeerExchange, GossipRPC, Request, Response)}
_KEYS = frozenset({"b", "t"})
# Bytes a frame adds around a request/response payload (map, type name, ids, error string).
FRAME_OVERHEAD = 1024


def encode_frame(msg: Any) -> bytes:
    """Encode one link message (a dataclass from LINK_TYPES)."""
    return pack_canonical({"b": msg, "t": type(msg).TYPE})


def decode_frame(data: bytes, *, max_bytes: int) -> Any:
    """Decode one link frame into its message dataclass; raise a WireError subclass on any fault."""
    top = unpack_strict(data, max_bytes=max_bytes)  # checks the size first
    if not isinstance(top, dict) or set(top) != _KEYS:
        raise MalformedMessage("a link frame is a map with keys 'b' and 't'")
    t = top["t"]
    if not isinstance(t, str):
        raise MalformedMessage("link frame type must be a string")
    cls = LINK_TYPES.get(t)
    if cls is None:
        raise UnknownMessageType(f"unknown link frame type {t[:48]!r}")
    return from_wire(cls, top["b"], where=f"frame:{t}")


def goodbye_frame(reason: str) -> bytes:
    return encode_frame(Goodbye(reason=reason[:256]))
