"""What an operator meets first (issue 21 items 3-5), with real `gpow` processes: one line and a
documented exit code instead of a traceback, no silent failure, a lock on the data dir, the
config's log level honoured, unreachable peers reported, Prometheus conventions on /metrics."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

GPOW = [sys.executable, "-m", "node"]


def gpow(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*GPOW, *args], capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line(r: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    """Exit ``code``, no traceback, and every needle in stderr's last line."""
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    for n in needles:
        assert n in last, (n, last)


class Node:
    """A `gpow run` process whose stderr is collected line by line."""

    def __init__(self, *args: str, log: Path) -> None:
        self.log = log
        self.f = open(log, "w")
        self.proc = subprocess.Popen([*GPOW, *args], stdout=self.f, stderr=subprocess.STDOUT, text=True)

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, pattern: str, timeout: float = 45) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.text())
            if m:
                return m.group(0)
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not seen in {timeout} s (exit {self.proc.poll()}):\n{self.text()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.f.close()
        return self.proc.returncode


def test_tracebacks_of_issue_21_are_one_line(tmp_path: Path):
    key = tmp_path / "auth.key"
    assert gpow("keygen", "--out", str(key)).returncode == 0
    one_line(
        gpow("admission", "sign", "--key", str(key), "--validator", "x", "--version", "-1", "--out", str(tmp_path / "s")),
        2,
        "--version",
        "expected an integer >= 0",
    )
    one_line(gpow("keygen", "--out", "/proc/no-such-dir/k.key"), 2, "gpow keygen:", "/proc/no-such-dir")
    one_line(gpow("harness", "--config", str(tmp_path / "missing.toml")), 2, "gpow harness:", "missing.toml")
    run = ["run", "--role", "miner", "--engine", "cpu", "--open-admission", "--listen", "127.0.0.1:0"]
    one_line(
        gpow(*run, "--data-dir", str(tmp_path / "d"), "--bootstrap", "127.0.0.1:7700"),
        2,
        "expected ws://HOST:PORT",
        "did you mean ws://127.0.0.1:7700?",
    )
    one_line(gpow(*run, "--data-dir", str(tmp_path / "d"), "--network", ""), 2, "[net].network", "1..64 characters")
    one_line(gpow(*run, "--data-dir", "/proc/no-such-dir/d"), 2, "cannot create the data dir /proc/no-such-dir/d")
    binary = tmp_path / "binary.key"
    binary.write_bytes(bytes(range(256)))
    binary.chmod(0o600)
    one_line(gpow(*run, "--data-dir", str(tmp_path / "d"), "--key-file", str(binary)), 2, "is not a gpow key file")


def test_silent_failures_of_issue_21_are_refused(tmp_path: Path):
    run = ["run", "--open-admission", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d")]
    one_line(gpow(*run, "--role", "executor", "--miner", "127.0.0.1:7710"), 2, "--miner", "expected ws://HOST:PORT")
    missing = tmp_path / "mine.key"
    one_line(gpow(*run, "--role", "miner", "--key-file", str(missing)), 2, f"key file {missing}", "does not exist", "gpow keygen")
    assert not missing.exists() and not (tmp_path / "d" / "node.key").exists()  # no identity was made up
    one_line(gpow(*run, "--role", "miner", "--metrics-port", "99999"), 2, "--metrics-port", "0..65535")
    for table, line, needle in (
        ("validator", "samples = -5", "[validator].samples = -5: expected an integer 1..4096"),
        ("node", 'log_level = "verbose"', "[node].log_level = 'verbose': expected one of debug"),
        ("node", "metrics_port = 99999", "[node].metrics_port = 99999: expected a TCP port"),
    ):
        cfg = tmp_path / f"{table}.toml"
        cfg.write_text(f"[{table}]\n{line}\n")
        one_line(gpow(*run, "--role", "validator", "--config", str(cfg)), 2, str(cfg), needle)
    one_line(gpow("run", "--role", "miner", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d")), 2, "no [admission]")
    one_line(
        gpow(*run[:1], "--open-admission", "--listen", "0.0.0.0:7799", "--role", "miner", "--data-dir", str(tmp_path / "d")),
        2,
        "listening on 0.0.0.0",
        "--advertise ws://THIS_HOST:7799",
    )
    one_line(gpow(*run, "--role", "miner", "--advertise", "ws://0.0.0.0:7700"), 2, "0.0.0.0 cannot be dialled")


def test_lock_log_level_open_admission_and_unreachable_peers(tmp_path: Path):
    data = tmp_path / "d"
    cfg = tmp_path / "c.toml"
    cfg.write_text('[node]\nlog_level = "debug"\n')
    dead = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    boot = Node(
        "run",
        "--role",
        "miner",
        "--engine",
        "cpu",
        "--open-admission",
        "--data-dir",
        str(tmp_path / "b"),
        "--listen",
        "127.0.0.1:0",
        "--bootstrap",
        dead,
        log=tmp_path / "boot.log",
    )
    first = Node(
        "run",
        "--role",
        "executor",
        "--engine",
        "cpu",
        "--config",
        str(cfg),
        "--open-admission",
        "--data-dir",
        str(data),
        "--listen",
        "127.0.0.1:0",
        "--miner",
        dead,
        log=tmp_path / "first.log",
    )
    try:
        first.wait_for(r"node started")
        text = first.text()
        assert " D gpow" in text, "log_level = debug from the config file was not honoured"
        assert "W gpow.node: OPEN ADMISSION" in text
        # a second process on the same data dir is refused at once, naming the holder
        r = gpow(
            "run",
            "--role",
            "executor",
            "--engine",
            "cpu",
            "--open-admission",
            "--data-dir",
            str(data),
            "--listen",
            "127.0.0.1:0",
            "--miner",
            dead,
        )
        one_line(r, 2, f"the data dir {data} is in use by another gpow process (pid {first.proc.pid})")
        first.wait_for(rf"W gpow.node: cannot reach the miner {dead} \(the executor cannot register")
        boot.wait_for(rf"W gpow.node: cannot reach the bootstrap peer {dead}: check that a gpow node runs there")
    finally:
        assert first.stop() == 0
        assert boot.stop() == 0
    # the lock died with the process: the data dir is usable again
    again = Node(
        "--log-level",
        "warning",
        "run",
        "--role",
        "miner",
        "--engine",
        "cpu",
        "--open-admission",
        "--data-dir",
        str(data),
        "--listen",
        "127.0.0.1:0",
        log=tmp_path / "again.log",
    )
    try:
        deadline = time.monotonic() + 30
        while f'"pid": {again.proc.pid},' not in ((data / "status.json").read_text() if (data / "status.json").exists() else ""):
            assert again.proc.poll() is None and time.monotonic() < deadline, again.text()
            time.sleep(0.1)
        assert " I gpow" not in again.text()  # --log-level warning wins over the config's default
    finally:
        assert again.stop() == 0


def test_metrics_follow_prometheus_conventions(tmp_path: Path):
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    node = Node(
        "run",
        "--role",
        "miner",
        "--engine",
        "cpu",
        "--open-admission",
        "--data-dir",
        str(tmp_path / "m"),
        "--listen",
        "127.0.0.1:0",
        "--metrics-port",
        str(port),
        "--metrics-host",
        "127.0.0.1",
        log=tmp_path / "m.log",
    )
    try:
        node.wait_for("node started")
        deadline = time.monotonic() + 20
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        node.stop()
    families = list(text_string_to_metric_families(body))
    names = {f.name for f in families}
    assert {"gpow_node_info", "gpow_net_peers", "gpow_miner_executors", "gpow_miner_executor_busy"} <= names
    for f in families:
        assert f.documentation.strip(), f"{f.name} has no help text"
        assert f.type in ("counter", "gauge", "info"), f.name
        assert not re.search(r"_(ms|milliseconds|kb|mb|mib)(_|$)", f.name), f"{f.name}: not in base units"
        if f.type == "gauge":
            assert not f.name.endswith("_total"), f"gauge {f.name} named like a counter"
        for s in f.samples:
            assert s.labels.get("role") == "miner", (s.name, s.labels)
            if f.type == "counter" and not s.name.endswith("_created"):
                assert s.name.endswith("_total"), s.name
    local = [s for f in families if f.name == "gpow_miner_executors" for s in f.samples if s.labels["location"] == "local"]
    assert local and local[0].value == 1
