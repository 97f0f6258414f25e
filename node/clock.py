"""Wall-clock time in the one unit the protocol uses (milliseconds since the epoch).

Protocol cores take time as an argument; this is the default the thin drivers pass in. Tests pass
their own (trio's MockClock for durations, a fixed or stepped function for wall time)."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
