"""Harness parameters: defaults, then configs/harness.toml-style file (``--config``), then flags."""

from __future__ import annotations

import argparse
import tomllib
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path


@dataclass
class HarnessParams:
    validators: int = 2
    miners: int = 3
    executors_per_miner: int = 1
    remote_executors: int = 1
    duration: float = 50.0  # seconds of challenging once the mesh is ready
    engine: str = "cpu"
    cheaters: str = ""  # comma-separated cheater kinds (see `gpow harness --help`)
    network: str = "gpow-harness"
    heartbeat_s: float = 0.5  # gossip heartbeat; shorter than production so a short run settles
    challenge_interval_s: float = 6.0
    samples: int = 16
    n_cpu: int = 128
    cpu_memory_bytes: int = 16 * 1024 * 1024  # each CPU executor's declared and enforced pool budget (T = 921 at n = 128)
    cpu_allowance: float = 3.0  # the CPU profile is the calibrated step time times this (loaded machine)
    tolerance: float = 1.5
    commit_slack_s: float = 1.0
    rtt_margin_s: float = 0.05  # loopback: round trip plus signing and thread hand-offs
    openings_timeout_s: float = 5.0
    settle_s: float = 20.0  # after the duration, wait this long at most for challenges in flight
    corrupt_fraction: float = 0.2
    partial_pool_keep: float = 0.34
    netem_delay_ms: float = 20.0  # multi-host mode: delay added on every host's link
    netem_loss_pct: float = 1.0  # multi-host mode: packet loss on every host's link
    rounds: bool = False  # network-wide rounds (beacon, admitted set, agreed scores) instead of intervals
    round_s: float = 5.0
    min_validators: int = 3  # rounds mode: an agreed score needs this many validators' verdicts

    def __post_init__(self) -> None:
        if self.validators < 1 or self.miners < 0 or self.executors_per_miner < 1 or self.remote_executors < 0:
            raise ValueError("need at least one validator, and one executor per miner")
        if self.engine not in ("cpu", "gpu"):
            raise ValueError(f"engine must be cpu or gpu, not {self.engine!r}")
        from node.harness.main import CHEAT_KINDS

        unknown = [c for c in self.cheater_list() if c.split(":")[0] not in CHEAT_KINDS]
        if unknown:
            raise ValueError(f"unknown cheater kind(s) {', '.join(unknown)}; known: {', '.join(CHEAT_KINDS)}")
        cpu_only = {"corrupt-rows", "zero-chain", "partial-pool", "grind-refs"}  # cheats built on the numpy engine
        if self.engine == "gpu" and (bad := [c for c in self.cheater_list() if c.split(":")[0] in cpu_only]):
            raise ValueError(f"cheater kind(s) {', '.join(bad)} run on the CPU engine only (they rewrite its states)")
        if self.remote_executors and not self.miners:
            raise ValueError("remote executors need an honest miner to register with")

    def cheater_list(self) -> list[str]:
        return [c.strip() for c in self.cheaters.split(",") if c.strip()]

    def miner_cheaters(self) -> list[str]:
        from node.harness.main import CHEAT_KINDS

        return [c for c in self.cheater_list() if CHEAT_KINDS[c.split(":")[0]][0] == "miner"]

    def validator_cheaters(self) -> list[str]:
        from node.harness.main import CHEAT_KINDS

        return [c for c in self.cheater_list() if CHEAT_KINDS[c.split(":")[0]][0] == "validator"]


def load_harness_params(args: argparse.Namespace) -> HarnessParams:
    hp = HarnessParams()
    if getattr(args, "config", None):
        path = Path(args.config)
        with open(path, "rb") as f:
            table = tomllib.load(f).get("harness", {})
        hints = typing.get_type_hints(HarnessParams)
        names = {f.name for f in fields(HarnessParams)}
        for k, v in table.items():
            if k not in names:
                raise ValueError(f"{path}: [harness]: unknown key {k}")
            want = hints[k]
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                raise ValueError(f"{path}: [harness].{k}: expected {want.__name__}, got {v!r}")
        hp = replace(hp, **table)
    overrides = {k: getattr(args, k) for k in ("validators", "miners", "executors_per_miner", "remote_executors", "duration", "engine", "cheaters", "rounds", "round_s") if getattr(args, k, None) is not None}
    return replace(hp, **overrides)
