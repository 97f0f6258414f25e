"""`gpow harness` as users start it: a real process that starts real node processes, ends with a
report and exit code 0, and leaves no process behind - also when interrupted with Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def node_pids(workdir: Path) -> list[int]:
    pids = []
    for st in workdir.glob("*/status.json"):
        try:
            pids.append(json.loads(st.read_text())["pid"])
        except (ValueError, KeyError):
            pass
    return pids


def test_harness_runs_reports_and_cleans_up(tmp_path: Path):
    report, workdir = tmp_path / "r.json", tmp_path / "w"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "node",
            "harness",
            "--validators",
            "2",
            "--miners",
            "2",
            "--remote-executors",
            "1",
            "--duration",
            "12",
            "--cheaters",
            "corrupt-rows",
            "--report",
            str(report),
            "--workdir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(report.read_text())
    assert r["ok"] and r["summary"]["cheaters_caught"] == 1
    assert r["verdicts"] and all({"passed", "reasons", "executor", "commit_seconds"} <= set(v) for v in r["verdicts"])
    assert {n["role"] for n in r["nodes"]} == {"validator", "miner", "executor"}
    assert r["propagation"]["verdict_deliveries"] > 0
    # without a terminal: progress lines, a word between challenging and stopping, a summary not cut at 80 columns
    assert "challenge phase over" in proc.stdout and "honest executors failing now" in proc.stdout
    assert "failure reasons" in proc.stdout and "PASS" in proc.stdout
    pids = node_pids(workdir)
    assert len(pids) == 6
    assert not [p for p in pids if alive(p)], "node processes left behind"


def test_ctrl_c_stops_every_node(tmp_path: Path):
    workdir = tmp_path / "w"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node",
            "harness",
            "--validators",
            "1",
            "--miners",
            "2",
            "--remote-executors",
            "0",
            "--duration",
            "120",
            "--workdir",
            str(workdir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            if "challenging for" in line or time.monotonic() > deadline:
                break
        time.sleep(2)
        pids = node_pids(workdir)
        assert len(pids) == 3 and all(alive(p) for p in pids)
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "INTERRUPTED" in rest and "PASS" not in rest, rest[-2000:]
    time.sleep(0.5)
    assert not [p for p in pids if alive(p)], "node processes left behind after Ctrl-C"
