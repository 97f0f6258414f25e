"""Our own event loop's stalls, so that a timing never blames a peer for them.

A commitment is timed from the instant its challenge left to the instant the event loop read the
answer. When the loop was held up in between by one long task step (a large frame decoded, a ledger
fsync, the GIL held by a verifier thread), the answer may have waited in the socket for that long:
the executor's true time lies somewhere in ``[measured - stalled, measured]``. ``StallLog`` keeps
the task steps longer than ``min_s`` (``StallMonitor``, a trio instrument, feeds it) and answers how
long the loop had been stalled just before an instant; the judge (``node.roles.judging.judge_time``)
decides what is certain either way and leaves the rest unjudged: neither a failure nor credit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import trio

DEFAULT_MIN_STALL_S = 0.005  # shorter steps are the loop's ordinary work (a frame, a signature)
DEFAULT_KEEP = 4096  # stalls remembered: longer ago than any window a judge asks about
# Stalls this close together count as one: after a stall the loop works through the backlog that
# piled up during it in short steps, and data that arrived in the stall waits for that too.
DEFAULT_GAP_S = 0.05


class StallLog:
    """Intervals ``(start, end)`` of event-loop stalls on one monotonic clock, oldest first."""

    def __init__(self, min_s: float = DEFAULT_MIN_STALL_S, keep: int = DEFAULT_KEEP) -> None:
        self.min_s = min_s
        self._stalls: deque[tuple[float, float]] = deque(maxlen=keep)
        self.count = 0
        self.total_s = 0.0
        self.longest_s = 0.0

    def add(self, start: float, end: float) -> None:
        """One task step ran from ``start`` to ``end``: kept when it was a stall."""
        length = end - start
        if length < self.min_s:
            return
        self._stalls.append((start, end))
        self.count += 1
        self.total_s += length
        self.longest_s = max(self.longest_s, length)

    def trailing(self, at: float, gap_s: float = DEFAULT_GAP_S) -> float:
        """How long before ``at`` the loop had been stalled: from the start of the run of stalls
        that ended at most ``gap_s`` before ``at`` (each within ``gap_s`` of the next), to ``at``.
        Data that reached the socket inside that span was read only at its end, so an answer read
        at ``at`` may have arrived that much earlier; 0.0 when no stall had just ended."""
        edge, start = at, None
        for s, e in reversed(self._stalls):
            if e > at:
                continue  # the step that reads at ``at`` may itself still be logged later
            if edge - e > gap_s:
                break
            start, edge = s, s
        return 0.0 if start is None else at - start


class StallMonitor(trio.abc.Instrument):
    """Times every task step of the trio run it is added to and logs the long ones."""

    def __init__(self, log: StallLog, clock: Callable[[], float] = trio.current_time) -> None:
        self.log = log
        self.clock = clock
        self._started = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._started = self.clock()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        end = self.clock()
        if end - self._started >= self.log.min_s:  # every step passes here: the common case returns at once
            self.log.add(self._started, end)
