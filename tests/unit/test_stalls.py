"""Our own event loop's stalls never decide an executor's time (issue 19, item 3): the stall log,
the three-way time judgement and the session's unjudged outcomes, on numbers; the trio instrument
on a real run."""

from __future__ import annotations

import time

import pytest
import trio

from node.roles import verdicts as R
from node.roles.judging import judge_time
from node.roles.params import ValidatorParams
from node.roles.stalls import StallLog, StallMonitor

PARAMS = ValidatorParams(rtt_margin_s=0.05, tolerance=1.5)


def test_short_steps_are_not_stalls() -> None:
    log = StallLog(min_s=0.005)
    log.add(1.0, 1.004)
    assert log.count == 0 and log.trailing(1.01) == 0.0


def test_trailing_is_the_run_of_stalls_that_just_ended() -> None:
    log = StallLog(min_s=0.005)
    log.add(1.0, 1.5)  # long ago: not part of the run below
    log.add(5.0, 5.7)
    log.add(5.72, 5.9)  # 20 ms after the first: the backlog after one stall, the same run
    assert log.trailing(5.95, gap_s=0.05) == pytest.approx(0.95)  # from 5.0 to 5.95
    assert log.trailing(6.5, gap_s=0.05) == 0.0  # the loop has been running freely since 5.9
    assert log.trailing(1.52, gap_s=0.05) == pytest.approx(0.52)
    assert log.count == 3 and log.longest_s == pytest.approx(0.7)


def test_the_log_is_bounded() -> None:
    log = StallLog(min_s=0.001, keep=8)
    for i in range(100):
        log.add(float(i), i + 0.5)
    assert len(log._stalls) == 8 and log.count == 100


def test_judge_time_is_certain_either_way_or_leaves_it_unjudged() -> None:
    margin = PARAMS.rtt_margin_s
    limit = 1.0 * PARAMS.tolerance
    assert judge_time(1.0, limit + margin, PARAMS, stalled_s=5.0)[0] is True  # in time even as read
    assert (
        judge_time(1.0, limit + margin + 0.3, PARAMS, stalled_s=0.2)[0] is False
    )  # late even if it came first thing in the stall
    assert judge_time(1.0, limit + margin + 0.3, PARAMS, stalled_s=0.4)[0] is None  # the stall decides: unjudged
    assert judge_time(1.0, limit + margin + 0.3, PARAMS)[0] is False  # no stall: late


async def test_the_monitor_logs_a_blocking_step_of_a_real_run() -> None:
    log = StallLog(min_s=0.02)
    monitor = StallMonitor(log, trio.current_time)
    trio.lowlevel.add_instrument(monitor)
    try:
        await trio.sleep(0)
        t0 = trio.current_time()
        time.sleep(0.1)  # a step that holds the loop, as a huge frame's decode did
        await trio.sleep(0)
        read_at = trio.current_time()
    finally:
        trio.lowlevel.remove_instrument(monitor)
    assert log.count >= 1 and log.longest_s >= 0.1
    assert log.trailing(read_at) >= read_at - t0 - 0.01


def test_reasons_vocabulary_has_no_stall_reason() -> None:
    # An unjudged challenge has no reason at all: nothing about the executor is recorded or gossiped.
    assert not any("stall" in r for r in vars(R).values() if isinstance(r, str))
