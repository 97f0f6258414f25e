"""``gpow init --role R --dir D``: a node's directory, ready to start on a real host.

Writes ``D/node.key`` (mode 0600; an existing key is kept) and ``D/config.toml``: the role's
commented example config shipped with the package, with this node's values filled in (data dir,
listen and advertised address, bootstrap peers, network, miner, admission). The result is loaded
and start-checked before anything is written, so ``gpow run --config D/config.toml`` starts.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from node.app.config import ConfigError, check_start, load_config
from node.identity import (
    Identity,
    load_key_file,
    public_key_from_peer_id,
    write_key_file,
)
from node.resources import shipped
from node.schema import toml_value
from node.wire import constants as C

DEFAULT_PORTS = {"validator": 7700, "miner": 7710, "executor": 7720}
CPU_TRYOUT_MEMORY = 8 * 1024 * 1024  # a CPU executor's declared pool when `gpow init --engine cpu`


def set_key(text: str, table: str, key: str, value: Any) -> str:
    """Replace ``key``'s value inside ``[table]`` of a config text, keeping its comment."""
    head = re.search(rf"^\[{re.escape(table)}\][^\n]*\n", text, re.MULTILINE)
    if head is None:
        raise ValueError(f"the example config has no [{table}] table")
    end = re.search(r"^\[", text[head.end() :], re.MULTILINE)
    body_end = head.end() + (end.start() if end else len(text) - head.end())
    body = text[head.end() : body_end]
    line = re.compile(rf"^({re.escape(key)}\s*=\s*)([^#\n]*?)(\s*#[^\n]*)?$", re.MULTILINE)
    if not line.search(body):
        raise ValueError(f"the example config has no [{table}].{key}")

    def keep_width(m: re.Match[str]) -> str:
        new = toml_value(value)
        comment = m.group(3) or ""
        pad = max(1, len(m.group(2)) + len(comment) - len(comment.lstrip()) - len(new)) if comment else 0
        return m.group(1) + new + (" " * pad + comment.lstrip() if comment else "")

    return text[: head.end()] + line.sub(keep_width, body, count=1) + text[body_end:]


def init_main(args: argparse.Namespace) -> int:
    """Create the node directory; exit 2 (one line) when the flags cannot give a node that starts."""
    role: str = args.role
    d = Path(args.dir).absolute()
    cfg_path = d / "config.toml"
    if cfg_path.exists() and not args.force:
        raise ConfigError(f"{cfg_path} already exists; pass --force to overwrite it (the key is kept either way)")
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)  # it holds the key and, for a validator, the ledger
    key_path = d / "node.key"
    if key_path.exists():
        identity, created = load_key_file(key_path), False
    else:
        identity, created = Identity.generate(), True
    host, _, port = (args.listen or f"127.0.0.1:{DEFAULT_PORTS[role]}").rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"--listen {args.listen}: expected HOST:PORT")
    admitted = list(args.admit or [])
    for pid in [*admitted, *([args.authority] if args.authority else []), *(args.allow_executor or [])]:
        public_key_from_peer_id(pid)  # a typo would lock every validator out: refuse it here
    if not (admitted or args.authority or args.open_admission):
        if role != "validator":
            raise ConfigError(
                f"a {role} must know who may challenge it: pass --admit PEER_ID for each admitted validator "
                "(the id its `gpow init` printed), --authority PEER_ID, or --open-admission (test networks only)"
            )
        admitted = [identity.peer_id]  # a first validator admits itself; others are added with --admit
    values: list[tuple[str, str, Any]] = [
        ("node", "data_dir", str(d)),
        ("node", "key_file", ""),
        ("net", "listen_host", host or "0.0.0.0"),
        ("net", "listen_port", int(port)),
        ("net", "advertise_addrs", list(args.advertise or [])),
        ("net", "bootstrap", list(args.bootstrap or ([args.miner] if role == "executor" and args.miner else []))),
        ("net", "network", args.network),
        ("admission", "validators", admitted),
        ("admission", "authority", args.authority or ""),
        ("admission", "open", bool(args.open_admission)),
    ]
    if args.metrics_port is not None:
        values.append(("node", "metrics_port", args.metrics_port))
    if role in ("miner", "executor"):
        values.append((role, "engine", args.engine))
        if args.engine == "cpu":  # a full CPU challenge stays a few seconds on one core (T = 367 at n = 128)
            values.append((role, "cpu_memory_bytes", CPU_TRYOUT_MEMORY))
    if role == "executor":
        values.append(("executor", "miner", args.miner or ""))
    if role == "miner":
        values.append(("miner", "remote_executors", sorted(set(args.allow_executor or []))))
    text = shipped("configs", f"{role}.toml").read_text()
    text = text.replace("gpow run --config configs/", f"gpow run --config {d}/").replace(f"{d}/{role}.toml", str(cfg_path))
    for table, key, value in values:
        text = set_key(text, table, key, value)
    text = f"# Written by `gpow init --role {role}` for node {identity.peer_id}.\n" + text
    # Check before writing: the config must load and pass the start checks `gpow run` applies.
    tmp = d / ".config.toml.tmp"
    tmp.write_text(text)
    try:
        cfg = load_config(tmp)
        check_start(cfg)
    except ConfigError as exc:
        tmp.unlink()
        raise ConfigError(str(exc).replace(str(tmp), str(cfg_path))) from None
    os.replace(tmp, cfg_path)
    if created:
        write_key_file(key_path, identity)
    print(identity.peer_id)
    print(f"{'wrote' if created else 'kept'} {key_path} (mode 0600), wrote {cfg_path}", file=sys.stderr)
    if cfg.admission.open:
        print("warning: open admission: ANY validator may challenge this node; for test networks only", file=sys.stderr)
    print(f"start it with: gpow run --config {cfg_path}", file=sys.stderr)
    return 0


def add_init_arguments(p: argparse.ArgumentParser) -> None:
    from node.app.runner_args import port, ws_addr

    p.add_argument("--role", required=True, choices=["validator", "miner", "executor"])
    p.add_argument("--dir", required=True, help="the node's directory (created; holds key, config, data)")
    p.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1 and the role's port; 0.0.0.0 needs --advertise)")
    p.add_argument(
        "--advertise",
        action="append",
        type=ws_addr,
        metavar="ws://HOST:PORT",
        help="the address other hosts dial to reach this node (repeatable)",
    )
    p.add_argument(
        "--bootstrap", action="append", type=ws_addr, metavar="ws://HOST:PORT", help="a node of the network (repeatable)"
    )
    p.add_argument("--network", default=C.NETWORK_DEFAULT, help=f"network id (default {C.NETWORK_DEFAULT})")
    p.add_argument("--miner", type=ws_addr, help="executor: ws://HOST:PORT of its miner")
    p.add_argument("--engine", choices=["cpu", "gpu"], default="gpu", help="miner, executor: proving engine (default gpu)")
    p.add_argument(
        "--admit",
        action="append",
        metavar="PEER_ID",
        help="an admitted validator's peer id (repeatable; a validator admits itself when none is given)",
    )
    p.add_argument("--authority", metavar="PEER_ID", help="instead of --admit: the admitting authority's peer id")
    p.add_argument("--open-admission", action="store_true", help="admit ANY validator (test networks only)")
    p.add_argument(
        "--allow-executor",
        action="append",
        metavar="PEER_ID",
        help="miner: a remote executor allowed to register (repeatable; the id its `gpow init` printed)",
    )
    p.add_argument("--metrics-port", type=port, help="serve Prometheus metrics on this port")
    p.add_argument("--force", action="store_true", help="overwrite an existing config.toml (the key is kept)")
