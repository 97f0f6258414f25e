"""One error family for everything that can be wrong with bytes from a peer."""

from __future__ import annotations


class WireError(Exception):
    """Bytes from the network that we refuse. ``reason`` is a short stable code for counters."""

    reason = "wire"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class OversizedMessage(WireError):
    reason = "oversized"


class MalformedMessage(WireError):
    reason = "malformed"


class UnknownMessageType(WireError):
    reason = "unknown-type"


class SchemaViolation(WireError):
    reason = "schema"


class BadSignature(WireError):
    reason = "bad-signature"


class StaleMessage(WireError):
    reason = "stale"


class VersionMismatch(WireError):
    reason = "version"
