"""TOML config files -> typed dataclasses.

Each table of a config file maps onto one parameters dataclass owned by the layer that uses it
(``[net]`` -> ``NetParams``, ``[gossip]`` -> ``GossipParams``, ``[validator]`` ->
``ValidatorParams`` ...). Unknown keys and wrong types are errors that name the file, the key and
the expected type. Command-line flags override file values through ``apply_overrides``.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.gossip.params import GossipParams
from node.net.params import NetParams
from node.roles.params import AdmissionParams, ExecutorParams, MinerParams, NodeParams, RoundParams, ValidatorParams

ROLES = ("validator", "miner", "executor")


class ConfigError(Exception):
    """A config file or override that cannot be used; the message names file and key."""


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


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(tp: Any, value: Any, where: str) -> Any:
    """Check one TOML value against a dataclass field type (int, float, bool, str, lists, optionals)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or value == "":
            return None
        return coerce(args[0], value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)
        return [coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {_type_name(tp)}")


def build_section(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    kwargs = {k: coerce(hints[k], v, f"{where}.{k}") for k, v in table.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_config(path: str | Path | None) -> NodeConfig:
    """Load a node config; ``None`` gives the defaults."""
    if path is None:
        return NodeConfig()
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)} (known: {', '.join(_SECTIONS)})")
    sections = {}
    for name, f in _SECTIONS.items():
        cls = typing.get_type_hints(NodeConfig)[name]
        sections[name] = build_section(cls, data.get(name, {}), f"{path}: [{name}]")
    cfg = NodeConfig(**sections, source=str(path))
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
        setattr(cfg, section_name, dataclasses.replace(section, **{key: coerce(hints[key], value, f"--{dotted}")}))
    return cfg
