"""Start gpow nodes as real OS processes, the way users start them, and stop them without orphans."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # If the harness itself is killed (even with SIGKILL), the kernel ends its nodes too.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


@dataclass
class NodeProcess:
    name: str
    role: str
    data_dir: Path
    config: Path
    args: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None
    kind: str = "honest"  # or an adversary kind (node/harness/adversaries)
    started_at: float = 0.0
    exit_code: int | None = None
    extra: dict = field(default_factory=dict)
    prefix: list[str] = field(default_factory=list)  # e.g. `ip netns exec NS` in multi-host mode
    module: str = "node"  # `python -m MODULE ARGS`: node (the gpow command) or node.harness.adversaries

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        cmd = [*self.prefix, sys.executable, "-m", self.module, *self.args]
        self.proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        self.started_at = time.monotonic()

    def status(self) -> dict | None:
        try:
            return json.loads((self.data_dir / "status.json").read_text())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            self.exit_code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.exit_code

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_all(nodes: list[NodeProcess], grace_s: float = 8.0) -> None:
    """SIGTERM the validators first and let them drain (a challenge they still have in flight
    needs its miner and executor up: stopped together, a miner's goodbye would fail an honest
    executor's openings), then every other node; SIGKILL whatever is left after each grace."""
    validators = [n for n in nodes if n.role == "validator"]
    _stop(validators, grace_s)
    _stop([n for n in nodes if n.role != "validator"], grace_s)


def _stop(nodes: list[NodeProcess], grace_s: float) -> None:
    for n in nodes:
        n.terminate()
    deadline = time.monotonic() + grace_s
    for n in nodes:
        n.wait(max(0.0, deadline - time.monotonic()))
    for n in nodes:
        if n.alive():
            n.kill()
            n.wait(2.0)
