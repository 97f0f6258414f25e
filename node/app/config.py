"""TOML config files -> typed dataclasses.

Each table of a config file maps onto one parameters dataclass owned by the layer that uses it
(``[net]`` -> ``NetParams``, ``[gossip]`` -> ``GossipParams``, ``[validator]`` ->
``ValidatorParams`` ...). Unknown keys and wrong types are errors that name the file, the key and
the expected type. Command-line flags override file values through ``apply_overrides``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node import schema
from node.gossip.params import GossipParams
from node.net.params import NetParams
from node.net.peerstore import valid_ws_addr
from node.roles.params import (
    AdmissionParams,
    ExecutorParams,
    MinerParams,
    NodeParams,
    RoundParams,
    ValidatorParams,
)
from node.wire import constants as C

ROLES = ("validator", "miner", "executor")


class ConfigError(Exception):
    """A config file or override that cannot be used; the message names file and key."""


LOG_LEVELS = ("debug", "info", "warning", "error")

# Value checks the types alone cannot give: (table, key) -> (accepts the value, what is expected).
# Every other number of the node's own tables must not be negative (see check_values).
_POS = (lambda v: v > 0, "a number > 0")
_RULES: dict[tuple[str, str], tuple[Any, str]] = {
    ("node", "log_level"): (lambda v: v in LOG_LEVELS, "one of " + ", ".join(LOG_LEVELS)),
    ("node", "metrics_port"): (lambda v: 0 <= v <= 65535, "a TCP port 0..65535 (0: metrics off)"),
    ("node", "status_interval_s"): _POS,
    ("validator", "challenge_interval_s"): _POS,
    ("validator", "samples"): (lambda v: 1 <= v <= 4096, "an integer 1..4096"),
    ("validator", "b_matrices"): (lambda v: 1 <= v <= 64, "an integer 1..64"),
    ("validator", "n_gpu"): (lambda v: 64 <= v <= 16384 and v & (v - 1) == 0, "a power of two 64..16384"),
    ("validator", "n_cpu"): (lambda v: 64 <= v <= 16384 and v & (v - 1) == 0, "a power of two 64..16384"),
    ("validator", "memory_fill"): (lambda v: 0 < v <= 1, "a fraction in (0, 1]"),
    ("validator", "max_steps"): (lambda v: v >= 1, "an integer >= 1"),
    ("validator", "tolerance"): (lambda v: v >= 1, "a factor >= 1"),
    ("validator", "openings_timeout_s"): (
        lambda v: 0 < v <= C.MAX_OPENINGS_TIMEOUT_S,
        f"seconds in (0, {C.MAX_OPENINGS_TIMEOUT_S}] (executors refuse longer openings windows)",
    ),
    ("miner", "cpu_executors"): (lambda v: 0 <= v <= 64, "an integer 0..64"),
    ("miner", "cpu_memory_bytes"): (lambda v: v >= 64 * 1024, "at least 65536 (16 states at n = 64)"),
    ("miner", "roster_interval_s"): _POS,
    ("miner", "heartbeat_timeout_s"): _POS,
    ("executor", "cpu_memory_bytes"): (lambda v: v >= 64 * 1024, "at least 65536 (16 states at n = 64)"),
    ("executor", "heartbeat_interval_s"): _POS,
    ("rounds", "round_s"): _POS,
    ("rounds", "window_rounds"): (lambda v: v >= 1, "an integer >= 1"),
    ("rounds", "min_validators"): (lambda v: v >= 1, "an integer >= 1"),
}
# Tables whose numbers are all counts, sizes or durations ([net] and [gossip] check themselves:
# gossip scoring weights are negative on purpose).
_NON_NEGATIVE_TABLES = ("node", "validator", "miner", "executor", "rounds")


def check_values(cfg: NodeConfig, where: str) -> None:
    """Range checks of every value; the error names the place, the key, the value and what is expected."""
    for table in _NON_NEGATIVE_TABLES:
        section = getattr(cfg, table)
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            rule = _RULES.get((table, f.name))
            if rule is None and isinstance(value, (int, float)) and not isinstance(value, bool):
                rule = (lambda v: v >= 0, "a number >= 0")
            if rule is not None and not rule[0](value):
                raise ConfigError(f"{where}[{table}].{f.name} = {value!r}: expected {rule[1]}")
    if cfg.executor.miner and not valid_ws_addr(cfg.executor.miner):
        raise ConfigError(f"{where}[executor].miner = {cfg.executor.miner!r}: expected ws://HOST:PORT of the miner")


def wildcard_host(host: str) -> bool:
    """0.0.0.0, :: and the like: a host to listen on, never one another host can dial."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def check_start(cfg: NodeConfig) -> None:
    """What a node needs before it starts, beyond single values: raises ConfigError saying what to do."""
    role = cfg.node.role
    if not role:
        raise ConfigError("no role: pass --role validator|miner|executor or set [node].role")
    if role == "executor" and not cfg.executor.miner:
        raise ConfigError("an executor needs its miner: pass --miner ws://HOST:PORT or set [executor].miner")
    adv = cfg.net.advertise_addrs
    for a in adv:
        host = a.split("://", 1)[1].rsplit(":", 1)[0]
        if wildcard_host(host):
            raise ConfigError(
                f"advertise address {a}: {host} cannot be dialled by other hosts; "
                "advertise this host's own address or name, e.g. --advertise ws://203.0.113.7:7700"
            )
    if wildcard_host(cfg.net.listen_host) and not adv:
        raise ConfigError(
            f"listening on {cfg.net.listen_host} (every interface) needs the address other hosts "
            f"dial: pass --advertise ws://THIS_HOST:{cfg.net.listen_port or 'PORT'} or set "
            "[net].advertise_addrs (else peers would be told ws://" + cfg.net.listen_host + ")"
        )
    adm = cfg.admission
    if not (adm.open or adm.validators or adm.authority):
        raise ConfigError(
            "no [admission]: list the admitted validators' peer ids ([admission].validators), name an "
            "admitting authority ([admission].authority), or for a test network admit any validator "
            "with [admission].open = true (or --open-admission); `gpow init` writes a config with one"
        )


@dataclass
class NodeConfig:
    node: NodeParams = field(default_factory=NodeParams)
    net: NetParams = field(default_factory=NetParams)
    gossip: GossipParams = field(default_factory=GossipParams)
    validator: ValidatorParams = field(default_factory=ValidatorParams)
    miner: MinerParams = field(default_factory=MinerParams)
    executor: ExecutorParams = field(default_factory=ExecutorParams)
    admission: AdmissionParams = field(default_factory=AdmissionParams)
    rounds: RoundParams = field(default_factory=RoundParams)
    source: str = "<defaults>"


_SECTIONS = {f.name: f for f in dataclasses.fields(NodeConfig) if f.name != "source"}


def coerce(tp: Any, value: Any, where: str) -> Any:
    """Check one config value against a field type (node/schema.py)."""
    return schema.coerce(tp, value, where, ConfigError)


def build_section(cls: type, table: Any, where: str) -> Any:
    """One config table as its parameter dataclass (node/schema.py)."""
    return schema.build(cls, table, where, ConfigError)


def load_config(path: str | Path | None) -> NodeConfig:
    """Load a node config; ``None`` gives the defaults."""
    if path is None:
        return NodeConfig()
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)} (known: {', '.join(_SECTIONS)})")
    sections = {}
    for name in _SECTIONS:
        cls = typing.get_type_hints(NodeConfig)[name]
        sections[name] = build_section(cls, data.get(name, {}), f"{path}: [{name}]")
    cfg = NodeConfig(**sections, source=str(path))
    check_values(cfg, f"{path}: ")
    return cfg


def apply_overrides(cfg: NodeConfig, overrides: dict[str, Any]) -> NodeConfig:
    """Apply ``{"section.key": value}`` overrides (from CLI flags); None values are skipped."""
    for dotted, value in overrides.items():
        if value is None:
            continue
        section_name, _, key = dotted.partition(".")
        section = getattr(cfg, section_name, None)
        if section is None or section_name not in _SECTIONS:
            raise ConfigError(f"override {dotted}: unknown section {section_name!r}")
        hints = typing.get_type_hints(type(section))
        if key not in hints:
            raise ConfigError(f"override {dotted}: unknown key {key!r} in [{section_name}]")
        where = f"command line: [{section_name}].{key}"
        try:
            setattr(cfg, section_name, dataclasses.replace(section, **{key: coerce(hints[key], value, where)}))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where} = {value!r}: {exc}") from None
    check_values(cfg, "command line: ")  # the file's own values were checked when it was loaded
    return cfg
