"""Issue 21 item 7: a miner stopped with SIGTERM while its executor is answering a challenge
finishes that challenge first, so the validator records a pass, not a failure caused by our own
shutdown (real processes; the SIGTERM is sent when the miner's status says its executor is busy)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from node.harness.main import write_node_config
from node.harness.processes import NodeProcess, stop_all
from node.identity import load_or_create_key_file

pytestmark = pytest.mark.slow


def start(tmp: Path, name: str, role: str, sections: dict) -> NodeProcess:
    d = tmp / name
    d.mkdir(exist_ok=True)
    base = {
        "node": {"role": role, "data_dir": str(d), "status_interval_s": 0.1},
        "net": {"listen_host": "127.0.0.1", "listen_port": 0, "network": "gpow-drain-test"},
        "gossip": {"heartbeat_s": 0.2},
    }
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    write_node_config(d / "config.toml", base)
    p = NodeProcess(name, role, d, d / "config.toml", ["run", "--config", str(d / "config.toml")], d / "node.log")
    p.start()
    return p


def wait(pred, timeout: float, what: str, nodes: list[NodeProcess]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        for n in nodes:
            assert n.alive(), f"{n.name} exited:\n{n.log_tail()}"
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout} s:\n" + "\n".join(f"--- {n.name}\n{n.log_tail()}" for n in nodes))


def test_sigterm_lets_the_challenge_in_flight_finish(tmp_path: Path):
    vid = load_or_create_key_file(tmp_path / "validator" / "node.key").peer_id
    profiles = tmp_path / "profiles.toml"
    # generous: correctness is what is judged here, never this machine's speed
    profiles.write_text(
        '[[profile]]\nmodel = "cpu-reference"\nmemory_bytes = 0\nn = 64\nstep_seconds = 0.02\n'
        'measured = false\nsource = "test: generous"\n'
    )
    admission = {"admission": {"validators": [vid]}}
    nodes: list[NodeProcess] = []
    try:
        v = start(
            tmp_path,
            "validator",
            "validator",
            {
                **admission,
                "validator": {
                    "challenge_interval_s": 1.0,
                    "n_cpu": 64,
                    "probation_challenges": 0,
                    "samples": 8,
                    "concurrency": 1,
                    "profiles_file": str(profiles),
                },
            },
        )
        nodes.append(v)
        wait(lambda: (v.status() or {}).get("listen", "").rsplit(":", 1)[-1] not in ("", "0"), 30, "validator listening", nodes)
        # a pool of 8 MiB at n = 64: T = 1227 steps, seconds of work for the CPU engine
        m = start(
            tmp_path,
            "miner",
            "miner",
            {
                **admission,
                "net": {"bootstrap": [v.status()["listen"]]},
                "miner": {"engine": "cpu", "cpu_memory_bytes": 8 * 1024 * 1024, "roster_interval_s": 0.5},
            },
        )
        nodes.append(m)

        def executor_busy() -> bool:
            local = ((m.status() or {}).get("miner") or {}).get("local_executors") or {}
            return any(e.get("busy") for e in local.values())

        wait(executor_busy, 90, "the miner's executor busy with a challenge", nodes)
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(timeout=60) == 0, m.log_tail()
        log = (m.data_dir / "node.log").read_text()
        assert "letting challenges in flight finish" in log, log[-3000:]

        def stats() -> dict:
            return ((v.status() or {}).get("validator") or {}).get("stats") or {}

        wait(
            lambda: stats().get("verdicts", 0) >= 1 and v.status()["validator"]["in_flight_groups"] == 0,
            30,
            "the validator's verdict",
            [v],
        )
        s = stats()
        assert s["failed"] == 0 and s["passed"] >= 1, s
    finally:
        stop_all(nodes)


def test_sigterm_lets_the_validators_challenges_finish(tmp_path: Path):
    """The validator's side: SIGTERM while a challenge group is in flight; it finishes the group and
    stores its verdict, so nothing is left in flight for the next start to close as timed out."""
    from node.roles.ledger import Ledger

    vid = load_or_create_key_file(tmp_path / "validator" / "node.key").peer_id
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        '[[profile]]\nmodel = "cpu-reference"\nmemory_bytes = 0\nn = 64\nstep_seconds = 0.02\n'
        'measured = false\nsource = "test: generous"\n'
    )
    admission = {"admission": {"validators": [vid]}}
    nodes: list[NodeProcess] = []
    try:
        v = start(
            tmp_path,
            "validator",
            "validator",
            {
                **admission,
                "validator": {
                    "challenge_interval_s": 1.0,
                    "n_cpu": 64,
                    "probation_challenges": 0,
                    "samples": 8,
                    "concurrency": 1,
                    "profiles_file": str(profiles),
                },
            },
        )
        nodes.append(v)
        wait(lambda: (v.status() or {}).get("listen", "").rsplit(":", 1)[-1] not in ("", "0"), 30, "validator listening", nodes)
        m = start(
            tmp_path,
            "miner",
            "miner",
            {
                **admission,
                "net": {"bootstrap": [v.status()["listen"]]},
                "miner": {"engine": "cpu", "cpu_memory_bytes": 8 * 1024 * 1024, "roster_interval_s": 0.5},
            },
        )
        nodes.append(m)
        wait(
            lambda: ((v.status() or {}).get("validator") or {}).get("in_flight_groups", 0) > 0,
            90,
            "a challenge group in flight",
            nodes,
        )
        v.proc.send_signal(signal.SIGTERM)
        assert v.proc.wait(timeout=60) == 0, v.log_tail()
        assert "letting challenges in flight finish" in (v.data_dir / "node.log").read_text()
    finally:
        stop_all(nodes)
    ledger = Ledger(v.data_dir / "ledger.sqlite3")
    try:
        assert ledger.resume(0) == [], "a challenge was left in flight by the stop"
        passed = [r for r in ledger.verdicts() if r.passed]
        assert passed, [r.reasons for r in ledger.verdicts()]
    finally:
        ledger.close()
