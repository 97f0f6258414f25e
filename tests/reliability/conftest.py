"""Shared helpers of the reliability tests: in-process nodes on loopback with fast timings, the
fuzz module of tests/bench loaded by path (the tests directory is not a package), and a log
handler that collects ERROR records so a test can assert that nothing inside a node failed."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import trio

from node.app.config import NodeConfig
from node.app.node import Node, NodeParts
from node.identity import Identity

ROOT = Path(__file__).resolve().parents[2]
NETWORK = "gpow-reliability"
SMALL_CPU_MEMORY = 64 * 64 * 40  # n = 64: about 35 states, a challenge proves in milliseconds


def load_bench(name: str) -> ModuleType:
    """Import tests/bench/<name>.py by path."""
    key = f"gpow_bench_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, ROOT / "tests" / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    spec.loader.exec_module(mod)
    return mod


def write_profiles(tmp: Path) -> Path:
    path = tmp / "profiles.toml"
    path.write_text(
        '[[profile]]\nmodel = "cpu-reference"\nmemory_bytes = 0\nn = 64\nstep_seconds = 0.01\n'
        'measured = false\nsource = "test: generous"\n'
    )
    return path


def make_cfg(tmp: Path, name: str, role: str, bootstrap: list[str], **sections: dict) -> NodeConfig:
    cfg = NodeConfig()
    cfg.node = dataclasses.replace(cfg.node, role=role, data_dir=str(tmp / name), status_interval_s=0.5)
    cfg.net = dataclasses.replace(
        cfg.net,
        listen_host="127.0.0.1",
        listen_port=0,
        bootstrap=bootstrap,
        network=NETWORK,
        maintain_interval_s=0.2,
        reconnect_min_s=0.1,
        reconnect_max_s=1.0,
    )
    cfg.gossip = dataclasses.replace(cfg.gossip, heartbeat_s=0.2)
    cfg.validator = dataclasses.replace(
        cfg.validator,
        challenge_interval_s=0.5,
        n_cpu=64,
        samples=8,
        probation_challenges=0,
        commit_slack_s=5.0,
        openings_timeout_s=5.0,
        profiles_file=str(write_profiles(tmp)),
    )
    cfg.miner = dataclasses.replace(
        cfg.miner,
        engine="cpu",
        cpu_memory_bytes=SMALL_CPU_MEMORY,
        roster_interval_s=0.5,
        heartbeat_timeout_s=2.0,
        host_fingerprint=f"host-{name}",
    )
    for k, v in sections.items():
        setattr(cfg, k, dataclasses.replace(getattr(cfg, k), **v))
    return cfg


async def start_node(
    nursery: trio.Nursery, cfg: NodeConfig, identity: Identity | None = None, parts: NodeParts | None = None
) -> Node:
    node = Node(cfg, identity or Identity.generate(), parts)
    await nursery.start(node.run)
    return node


async def wait_for(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(step)
        return
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class ErrorLog(logging.Handler):
    """Collects ERROR and worse records of the gpow loggers (a bug inside a node logs one)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> list[str]:
        fmt = logging.Formatter()
        return [
            f"{r.name}: {r.getMessage()} {fmt.formatException(r.exc_info) if r.exc_info else ''}"[-1500:] for r in self.records
        ]


@pytest.fixture
def error_log() -> Iterator[ErrorLog]:
    h = ErrorLog()
    root = logging.getLogger("gpow")
    root.addHandler(h)
    try:
        yield h
    finally:
        root.removeHandler(h)
