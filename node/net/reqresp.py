"""Request/response bookkeeping for one link: correlation ids and waiting callers."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from node.wire.messages import Response


@dataclass
class Waiter:
    event: trio.Event = field(default_factory=trio.Event)
    response: Response | None = None
    error: str | None = None  # set when the link closed before a response came


class PendingRequests:
    """Outgoing requests on one link, keyed by request id."""

    def __init__(self) -> None:
        self._next = 0
        self._waiting: dict[int, Waiter] = {}
        self.unsolicited = 0  # responses to ids we do not wait for (late after a timeout)

    def __len__(self) -> int:
        return len(self._waiting)

    def new(self) -> tuple[int, Waiter]:
        self._next += 1
        w = Waiter()
        self._waiting[self._next] = w
        return self._next, w

    def forget(self, req_id: int) -> None:
        self._waiting.pop(req_id, None)

    def resolve(self, resp: Response) -> bool:
        w = self._waiting.pop(resp.req_id, None)
        if w is None:
            self.unsolicited += 1
            return False
        w.response = resp
        w.event.set()
        return True

    def fail_all(self, reason: str) -> None:
        for w in self._waiting.values():
            w.error = reason
            w.event.set()
        self._waiting.clear()


def error_text(exc: BaseException) -> str:
    """The error string sent to a requester: the exception type and message, bounded."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:500]
