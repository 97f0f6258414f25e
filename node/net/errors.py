"""Errors of the network layer."""

from __future__ import annotations


class NetError(Exception):
    """Anything the network layer reports to its callers."""


class RequestTimeout(NetError):
    """No response within the caller's timeout."""


class RequestFailed(NetError):
    """The request did not get a response: the remote's error string, no route, or the link closed."""

    def __init__(self, message: str, *, remote_error: str | None = None):
        super().__init__(message)
        self.remote_error = remote_error  # set when the remote answered with an error


class PeerUnreachable(RequestFailed):
    """No link to the peer and none could be made (no address known, dial or handshake failed)."""


class HandshakeRefused(NetError):
    """The authenticated handshake failed. ``code`` is a short stable word for counters,
    ``reason`` the human explanation; ``by_remote`` is True when the other side refused us."""

    def __init__(self, code: str, reason: str, *, by_remote: bool = False):
        super().__init__(f"handshake refused ({code}): {reason}")
        self.code = code
        self.reason = reason
        self.by_remote = by_remote


class LinkClosed(NetError):
    """Internal: a send on a link that is closing or closed."""


class LinkIntegrityError(NetError):
    """A frame on an established link failed to open under the link's session key: it was tampered
    with, injected, replayed or reordered on the way. The link cannot continue and is closed."""
