"""Harness parameters: defaults, then configs/harness.toml-style file (``--config``), then flags."""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from node import schema


@dataclass
class HarnessParams:
    validators: int = 2
    miners: int = 3
    executors_per_miner: int = 1
    remote_executors: int = 1
    duration: float = 50.0  # seconds of challenging once the mesh is ready
    engine: str = "cpu"
    adversaries: str = ""  # comma-separated adversary kinds, `--cheaters` on the command line (see `gpow harness --help`)
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
        from node.harness.adversaries import parse_kind

        kinds = [parse_kind(c)[0] for c in self.adversary_list()]  # raises on an unknown kind, naming the known ones
        if self.engine == "gpu" and (bad := [a.kind for a in kinds if a.cpu_only]):
            raise ValueError(f"adversary kind(s) {', '.join(bad)} run on the CPU engine only (they rewrite its states)")
        if (self.remote_executors or any(a.role == "executor" for a in kinds)) and not self.miners:
            raise ValueError("remote executors need an honest miner to register with")

    def adversary_list(self) -> list[str]:
        return [c.strip() for c in self.adversaries.split(",") if c.strip()]

    def _of_role(self, role: str) -> list[str]:
        from node.harness.adversaries import parse_kind

        return [c for c in self.adversary_list() if parse_kind(c)[0].role == role]

    def miner_adversaries(self) -> list[str]:
        return self._of_role("miner")

    def validator_adversaries(self) -> list[str]:
        return self._of_role("validator")

    def executor_adversaries(self) -> list[str]:
        """Remote executors of outsiders (frame-miner): they try to register with an honest miner."""
        return self._of_role("executor")


def load_harness_params(args: argparse.Namespace) -> HarnessParams:
    hp = HarnessParams()
    if getattr(args, "config", None):
        path = Path(args.config)
        try:
            with open(path, "rb") as f:
                table = tomllib.load(f).get("harness", {})
        except FileNotFoundError:
            raise ValueError(f"harness config {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None
        hp = schema.build(HarnessParams, table, f"{path}: [harness]", ValueError)
    overrides = {
        k: getattr(args, k)
        for k in ("validators", "miners", "executors_per_miner", "remote_executors", "duration", "engine", "rounds", "round_s")
        if getattr(args, k, None) is not None
    }
    if getattr(args, "cheaters", None) is not None:
        overrides["adversaries"] = args.cheaters
    return replace(hp, **overrides)
