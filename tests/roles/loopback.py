"""The configuration of an in-process test node on loopback: ephemeral port, fast status and gossip
heartbeats, the CPU engine, profiles from ``tmp/profiles.toml``; each test says its own validator
and miner settings and any other section's."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from node.app.config import NodeConfig


def loopback_config(
    tmp: Path,
    name: str,
    role: str,
    bootstrap: list[str],
    *,
    network: str,
    validator: dict[str, Any],
    miner: dict[str, Any],
    **sections: dict[str, Any],
) -> NodeConfig:
    cfg = NodeConfig()
    cfg.node = dataclasses.replace(cfg.node, role=role, data_dir=str(tmp / name), status_interval_s=0.5)
    cfg.net = dataclasses.replace(cfg.net, listen_host="127.0.0.1", listen_port=0, bootstrap=bootstrap, network=network)
    cfg.gossip = dataclasses.replace(cfg.gossip, heartbeat_s=0.2)
    cfg.validator = dataclasses.replace(cfg.validator, profiles_file=str(tmp / "profiles.toml"), **validator)
    cfg.miner = dataclasses.replace(cfg.miner, engine="cpu", roster_interval_s=0.5, **miner)
    for k, v in sections.items():
        setattr(cfg, k, dataclasses.replace(getattr(cfg, k), **v))
    return cfg
