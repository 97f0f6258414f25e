"""Link frames: what travels on a websocket after the handshake.

A frame is one websocket binary message holding canonical msgpack ``{"b": body, "t": type}``.
Link frames are not signed: the link itself was authenticated by the handshake, and anything that
must be attributable (gossip payloads, peer records) is a signed envelope inside the body. The size
is checked before any decoding; decoding is strict (canonical form, schema with ranges), so every
malformed frame becomes a typed WireError.
"""

from __future__ import annotations

from typing import Any

from node.wire import constants as C
from node.wire.codec import from_wire, pack_canonical, unpack_strict
from node.wire.errors import MalformedMessage, UnknownMessageType
from node.wire.messages import Goodbye, GossipRPC, PeerExchange, Ping, Pong, PublishedMessage, Request, Response

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


def rpc_size(rpc: GossipRPC) -> int:
    """An upper bound on ``len(encode_frame(rpc))`` (msgpack headers and key names included)."""
    n = 96 + sum(len(m.data) + len(m.topic) + 32 for m in rpc.publish)
    n += sum(len(s.topic) + 24 for s in rpc.subscriptions) + 40 * len(rpc.iwant)
    n += sum(len(h.topic) + 24 + 40 * len(h.ids) for h in rpc.ihave)
    n += sum(len(t) + 8 for t in rpc.graft)
    n += sum(len(p.topic) + 40 + sum(len(r) + 8 for r in p.peers) for p in rpc.prune)
    return n


def coalesce_rpcs(rpcs: list[GossipRPC], max_bytes: int) -> list[GossipRPC]:
    """Merge consecutive publish-only gossip RPCs into as few as fit (in count and bytes); an RPC
    with control or subscriptions stays whole and in its place, so the order of control is kept."""
    if len(rpcs) == 1:
        return rpcs
    out: list[GossipRPC] = []
    run: list[PublishedMessage] = []
    size = 0

    def end_run() -> None:
        nonlocal size
        if run:
            out.append(GossipRPC(publish=list(run)))
            run.clear()
        size = 0

    for rpc in rpcs:
        if rpc.subscriptions or rpc.ihave or rpc.iwant or rpc.graft or rpc.prune:
            end_run()
            out.append(rpc)
            continue
        for m in rpc.publish:
            m_size = len(m.data) + len(m.topic) + 32
            if run and (len(run) >= C.MAX_PUBLISH_PER_RPC or size + m_size + 96 > max_bytes):
                end_run()
            run.append(m)
            size += m_size
    end_run()
    return out
