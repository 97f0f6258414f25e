"""Messages as dataclasses, the canonical signed msgpack envelope, and typed wire errors."""

from node.wire.envelope import Envelope, decode_envelope, encode_envelope
from node.wire.errors import (
    BadSignature,
    MalformedMessage,
    OversizedMessage,
    SchemaViolation,
    StaleMessage,
    UnknownMessageType,
    VersionMismatch,
    WireError,
)

__all__ = [
    "BadSignature",
    "Envelope",
    "MalformedMessage",
    "OversizedMessage",
    "SchemaViolation",
    "StaleMessage",
    "UnknownMessageType",
    "VersionMismatch",
    "WireError",
    "decode_envelope",
    "encode_envelope",
]
