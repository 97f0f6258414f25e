"""Every message of the node protocol, as a dataclass with its schema (types and ranges).

A message's ``TYPE`` is its name on the wire. Fields are checked on decode by
``node.wire.codec.from_wire``; ``fld`` carries ranges and lengths. Signed blobs that travel inside
other messages (gossip payloads, roster entries, peer records, openings) are complete encoded
envelopes of their own, carried as ``bytes`` and decoded by whoever needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from node.wire import constants as C
from node.wire.codec import fld

MESSAGE_TYPES: dict[str, type] = {}

U32 = 2**32 - 1
U63 = 2**63 - 1
MAX_BLOB = 64 * 1024 * 1024


def message(cls: type) -> type:
    """Register a message dataclass under its TYPE."""
    name = cls.TYPE  # type: ignore[attr-defined]
    if name in MESSAGE_TYPES:
        raise RuntimeError(f"duplicate message type {name}")
    MESSAGE_TYPES[name] = cls
    return cls


# ---- handshake and link ------------------------------------------------------------------------


@message
@dataclass(frozen=True)
class Hello:
    """First frame each side sends: who it is and a fresh nonce."""

    TYPE: ClassVar[str] = "hello"
    network: str = fld(max_len=64)
    role: str = fld(max_len=16)
    listen_addrs: list[str] = fld(max_len=8)
    nonce: bytes = fld(length=C.NONCE_BYTES)
    agent: str = fld(max_len=64, default="gpow")


@message
@dataclass(frozen=True)
class HelloAuth:
    """Second frame: proves the key by signing both nonces and both peer ids (in the envelope)."""

    TYPE: ClassVar[str] = "hello-auth"
    my_nonce: bytes = fld(length=C.NONCE_BYTES)
    your_nonce: bytes = fld(length=C.NONCE_BYTES)
    your_peer_id: str = fld(max_len=64)


@message
@dataclass(frozen=True)
class Goodbye:
    TYPE: ClassVar[str] = "goodbye"
    reason: str = fld(max_len=256)


@message
@dataclass(frozen=True)
class Ping:
    TYPE: ClassVar[str] = "ping"
    nonce: int = fld(min=0, max=U63)


@message
@dataclass(frozen=True)
class Pong:
    TYPE: ClassVar[str] = "pong"
    nonce: int = fld(min=0, max=U63)


# ---- discovery ---------------------------------------------------------------------------------


@message
@dataclass(frozen=True)
class PeerRecord:
    """Signed by the peer it describes; travels as an encoded envelope."""

    TYPE: ClassVar[str] = "peer-record"
    addrs: list[str] = fld(max_len=8)
    role: str = fld(max_len=16)
    expires_ms: int = fld(min=0, max=U63)


@message
@dataclass(frozen=True)
class PeerExchange:
    TYPE: ClassVar[str] = "peer-exchange"
    records: list[bytes] = fld(max_len=64)


# ---- gossip ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubOpt:
    topic: str = fld(max_len=128)
    subscribe: bool = True


@dataclass(frozen=True)
class PublishedMessage:
    topic: str = fld(max_len=128)
    data: bytes = fld(max_len=C.DEFAULT_MAX_MESSAGE_BYTES)  # an envelope signed by its origin


@dataclass(frozen=True)
class IHave:
    topic: str = fld(max_len=128)
    ids: list[bytes] = fld(max_len=5000)


@dataclass(frozen=True)
class Prune:
    topic: str = fld(max_len=128)
    backoff_s: int = fld(min=0, max=3600)
    peers: list[bytes] = fld(max_len=16)  # signed peer records for peer exchange


@message
@dataclass(frozen=True)
class GossipRPC:
    """One gossipsub RPC: subscriptions, published messages and control, like libp2p's."""

    TYPE: ClassVar[str] = "gossip"
    subscriptions: list[SubOpt] = fld(max_len=256, default_factory=list)
    publish: list[PublishedMessage] = fld(max_len=256, default_factory=list)
    ihave: list[IHave] = fld(max_len=64, default_factory=list)
    iwant: list[bytes] = fld(max_len=5000, default_factory=list)
    graft: list[str] = fld(max_len=64, default_factory=list)
    prune: list[Prune] = fld(max_len=64, default_factory=list)


# ---- request / response ------------------------------------------------------------------------


@message
@dataclass(frozen=True)
class Request:
    TYPE: ClassVar[str] = "request"
    req_id: int = fld(min=0, max=U63)
    protocol: str = fld(max_len=64)
    payload: bytes = fld(max_len=MAX_BLOB)


@message
@dataclass(frozen=True)
class Response:
    TYPE: ClassVar[str] = "response"
    req_id: int = fld(min=0, max=U63)
    ok: bool = True
    error: str = fld(max_len=512, default="")
    payload: bytes = fld(max_len=MAX_BLOB, default=b"")
