"""`gpow run` started the way users start it: clear one-line refusals, a clean stop on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def gpow(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=timeout)


def test_port_in_use_is_one_clear_line(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = gpow("run", "--role", "validator", "--open-admission", "--data-dir", str(tmp_path), "--listen", f"127.0.0.1:{port}")
    assert r.returncode == 2
    assert f"gpow run: cannot listen on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr


def test_missing_role_and_bad_config_are_refused(tmp_path: Path):
    r = gpow("run", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "no role" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[validator]\nsamples = -1x\n")
    r = gpow("run", "--role", "validator", "--config", str(bad))
    assert r.returncode == 2 and "not valid TOML" in r.stderr


def test_gpu_miner_without_gpu_says_what_to_do(tmp_path: Path):
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("this machine has a GPU")
    except Exception:
        pass
    r = gpow(
        "run", "--role", "miner", "--open-admission", "--engine", "gpu", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0"
    )
    assert r.returncode == 3  # README "Exit codes": missing GPU stack
    assert "no CUDA device is visible (use --engine cpu" in r.stderr and "Traceback" not in r.stderr


def test_sigterm_drains_and_exits_zero(tmp_path: Path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node",
            "run",
            "--role",
            "miner",
            "--open-admission",
            "--engine",
            "cpu",
            "--data-dir",
            str(tmp_path),
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "status.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-2000:]
    assert "stopping" in out


def test_gpu_commands_without_cupy_say_so():
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    for cmd in ("bench", "attest"):
        r = gpow(cmd)
        assert r.returncode == 3 and "needs CuPy and a CUDA GPU" in r.stderr and "Traceback" not in r.stderr
