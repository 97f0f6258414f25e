"""``gpow run``: build a node from its config and run it until SIGINT/SIGTERM, then drain."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import trio

from node.app.config import ConfigError, NodeConfig, apply_overrides, load_config
from node.identity import Identity, IdentityError, load_key_file, write_key_file

log = logging.getLogger("gpow.node")


def _cfg_from_args(args: argparse.Namespace) -> NodeConfig:
    cfg = load_config(args.config)
    overrides: dict[str, Any] = {
        "node.role": args.role,
        "node.data_dir": args.data_dir,
        "node.key_file": args.key_file,
        "node.metrics_port": args.metrics_port,
        "net.bootstrap": args.bootstrap,
        "net.network": args.network,
        "executor.miner": args.miner,
    }
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        if not port.isdigit():
            raise ConfigError(f"--listen {args.listen}: expected HOST:PORT")
        overrides["net.listen_host"] = host or "127.0.0.1"
        overrides["net.listen_port"] = int(port)
    if args.engine:
        overrides["miner.engine"] = args.engine
        overrides["executor.engine"] = args.engine
    if getattr(args, "log_json", False):
        overrides["node.log_json"] = True
    cfg = apply_overrides(cfg, overrides)
    if not cfg.node.role:
        raise ConfigError("no role: pass --role validator|miner|executor or set [node].role")
    if cfg.node.role == "executor" and not cfg.executor.miner:
        raise ConfigError("an executor needs its miner: pass --miner ws://HOST:PORT or set [executor].miner")
    return cfg


def load_identity(cfg: NodeConfig, name: str = "node.key") -> Identity:
    path = Path(cfg.node.key_file) if cfg.node.key_file else Path(cfg.node.data_dir) / name
    if not path.exists():
        identity = Identity.generate()
        write_key_file(path, identity)
        log.info("created a new node key", extra={"fields": {"path": str(path), "peer_id": identity.peer_id}})
        return identity
    return load_key_file(path)


def run_main(args: argparse.Namespace) -> int:
    try:
        cfg = _cfg_from_args(args)
        Path(cfg.node.data_dir).mkdir(parents=True, exist_ok=True)
        identity = load_identity(cfg)
    except (ConfigError, IdentityError) as exc:
        print(f"gpow run: {exc}", file=sys.stderr)
        return 2
    if cfg.node.log_json or args.log_level:
        from node.logs import setup_logging

        setup_logging(args.log_level or cfg.node.log_level, cfg.node.log_json or args.log_json)
    try:
        trio.run(run_node, cfg, identity)
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:
        # Start-up refusals (no GPU, a port in use, a bad set file) are the user's to fix: one
        # line, not a traceback. Anything else is a bug and keeps its traceback.
        startup = _startup_error(group)
        if startup is None:
            raise
        print(f"gpow run: {startup}", file=sys.stderr)
        return 2
    return 0


class NodeStartError(Exception):
    """The node cannot start as configured; the message says what to change."""


def _startup_error(group: BaseExceptionGroup) -> BaseException | None:
    leaves = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            leaves.append(e)

    from node.net.errors import NetError

    walk(group)
    if len(leaves) == 1 and isinstance(leaves[0], (NodeStartError, NetError, OSError, SystemExit)):
        return leaves[0]
    return None


async def run_node(cfg: NodeConfig, identity: Identity, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run one node until cancelled or signalled. ``task_status`` reports the Node once it listens."""
    from node.app.node import Node

    node = Node(cfg, identity)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signals, nursery.cancel_scope, node)
        await nursery.start(node.run)
        task_status.started(node)


async def _stop_on_signals(scope: trio.CancelScope, node) -> None:
    if not hasattr(trio, "open_signal_receiver"):
        return
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for sig in signals:
                log.info("stopping", extra={"fields": {"signal": signal.Signals(sig).name}})
                with trio.move_on_after(5):
                    await node.drain()
                scope.cancel()
                return
    except ValueError:  # not the main thread (in-process tests): the caller cancels instead
        return
