"""``gpow run``: build a node from its config and run it until SIGINT/SIGTERM, then drain."""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.app.config import (
    ConfigError,
    NodeConfig,
    apply_overrides,
    check_start,
    load_config,
)
from node.app.errors import GpuUnavailable, NodeStartError
from node.identity import Identity, IdentityError, load_key_file, write_key_file

if TYPE_CHECKING:
    from node.app.node import NodeParts

log = logging.getLogger("gpow.node")


def _cfg_from_args(args: argparse.Namespace) -> NodeConfig:
    cfg = load_config(args.config)
    overrides: dict[str, Any] = {
        "node.role": args.role,
        "node.data_dir": args.data_dir,
        "node.key_file": args.key_file,
        "node.metrics_port": args.metrics_port,
        "node.metrics_host": getattr(args, "metrics_host", None),
        "net.bootstrap": args.bootstrap,
        "net.advertise_addrs": getattr(args, "advertise", None),
        "net.network": args.network,
        "executor.miner": args.miner,
        "admission.open": True if getattr(args, "open_admission", False) else None,
    }
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        if not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"--listen {args.listen}: expected HOST:PORT with a port 0..65535")
        overrides["net.listen_host"] = host or "127.0.0.1"
        overrides["net.listen_port"] = int(port)
    if args.engine:
        overrides["miner.engine"] = args.engine
        overrides["executor.engine"] = args.engine
    if getattr(args, "log_json", False):
        overrides["node.log_json"] = True
    cfg = apply_overrides(cfg, overrides)
    if getattr(args, "allow_executor", None):
        cfg = apply_overrides(cfg, {"miner.remote_executors": sorted({*cfg.miner.remote_executors, *args.allow_executor})})
    check_start(cfg)
    if cfg.node.role == "executor" and cfg.executor.miner not in cfg.net.bootstrap:
        # The executor reaches its miner over a link it dials itself: keep that link up like a bootstrap's.
        cfg = apply_overrides(cfg, {"net.bootstrap": [*cfg.net.bootstrap, cfg.executor.miner]})
    return cfg


class DataDirBusy(Exception):
    """Another process holds the data dir's lock."""


def lock_data_dir(data_dir: Path) -> int:
    """Hold ``<data_dir>/gpow.lock`` for the life of the process (released by the kernel on any exit,
    kill -9 included): two nodes on one data dir would share one identity and one ledger, and each
    would refuse the other's links as duplicates forever. Returns the descriptor to keep open."""
    path = data_dir / "gpow.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DataDirBusy(
            f"the data dir {data_dir} is in use by another gpow process (pid {holder}); stop that node, "
            "or give this one its own --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def load_identity(cfg: NodeConfig, name: str = "node.key") -> Identity:
    if cfg.node.key_file:
        # An explicit key file is an identity the operator chose: never replace it with a new one.
        path = Path(cfg.node.key_file)
        if not path.exists():
            raise IdentityError(
                f"key file {path} (--key-file / [node].key_file) does not exist; create it with "
                f"`gpow keygen --out {path}`, or leave key_file empty to use <data_dir>/{name}"
            )
    else:
        path = Path(cfg.node.data_dir) / name
        if not path.exists():
            identity = Identity.generate()
            write_key_file(path, identity)
            log.info("created a new node key", extra={"fields": {"path": str(path), "peer_id": identity.peer_id}})
            return identity
    try:
        return load_key_file(path)
    except (UnicodeDecodeError, ValueError):
        raise IdentityError(
            f"{path} is not a gpow key file (a binary or damaged file); write a new one with `gpow keygen --out {path}`"
        ) from None
    except OSError as exc:
        raise IdentityError(f"cannot read the key file {path}: {exc.strerror}") from None


def run_main(args: argparse.Namespace, parts: NodeParts | None = None) -> int:
    from node.logs import setup_logging

    try:
        cfg = _cfg_from_args(args)
        # The file's log_level counts unless --log-level is given.
        setup_logging(args.log_level or cfg.node.log_level, cfg.node.log_json or args.log_json)
        data_dir = Path(cfg.node.data_dir)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the data dir {data_dir}: {exc.strerror}; "
                "point --data-dir or [node].data_dir at a writable directory"
            ) from None
        lock_fd = lock_data_dir(data_dir)
        identity = load_identity(cfg)
    except (ConfigError, IdentityError, DataDirBusy) as exc:
        print(f"gpow run: {exc}", file=sys.stderr)
        return 2
    if cfg.admission.open:
        log.warning(
            "OPEN ADMISSION: this node accepts challenges and verdicts from ANY validator, so anyone can keep "
            "its executors busy and flood its ledger. Use it on test networks only; on a real network list "
            "the admitted validators in [admission].validators or name an [admission].authority"
        )
    try:
        trio.run(run_node, cfg, identity, parts)
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:
        # Start-up refusals (no GPU, a port in use, a bad set file) are the user's to fix: one
        # line, exit 2 (3 for a missing GPU). Anything else is a bug: gpow's top-level handler
        # reports it (exit 70, the traceback in a file).
        startup = _startup_error(group)
        if startup is None:
            raise
        print(f"gpow run: {startup}", file=sys.stderr)
        return 3 if isinstance(startup, GpuUnavailable) else 2
    finally:
        os.close(lock_fd)
    return 0


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


async def run_node(
    cfg: NodeConfig, identity: Identity, parts: NodeParts | None = None, *, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    """Run one node until cancelled or signalled. ``task_status`` reports the Node once it listens."""
    from node.app.node import Node

    node = Node(cfg, identity, parts)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signals, nursery.cancel_scope, node)
        await nursery.start(node.run)
        # what peers are told to dial (the advertised addresses, else the listen address)
        log.info("advertising", extra={"fields": {"addrs": cfg.net.advertise_addrs or [node.host.listen_addr]}})
        nursery.start_soon(warn_unreachable, node)
        task_status.started(node)


REACH_GRACE_S = 10.0  # a bootstrap peer or miner not connected this long after start is reported
REACH_REPEAT_S = 60.0  # and again this often while it stays unreachable


def _linked(node: Any, addr: str) -> bool:
    """Whether a link to the node at ``addr`` is up (by its announced address or the dial that made it)."""
    peers = node.host.connected_peers()
    want = addr.rstrip("/")
    if any(want in (a.rstrip("/") for a in p.listen_addrs) for p in peers.values()):
        return True
    return node.host.bootstrap_peer(addr) in peers  # the peer a bootstrap dial reached, whatever it announces


async def warn_unreachable(node: Any, grace_s: float = REACH_GRACE_S, repeat_s: float = REACH_REPEAT_S) -> None:
    """Say, at WARNING and with what to check, which bootstrap peer or miner this node cannot reach
    (the host redials them quietly with backoff), and at INFO when the link comes up after all."""
    cfg = node.cfg
    watched = {a: "bootstrap peer" for a in cfg.net.bootstrap}
    if cfg.node.role == "executor":
        watched[cfg.executor.miner] = "miner"
    if not watched:
        return
    await trio.sleep(grace_s)
    warned_at: dict[str, float] = {}
    while True:
        now = trio.current_time()
        for addr, what in watched.items():
            if _linked(node, addr):
                if warned_at.pop(addr, None) is not None:
                    log.info(f"{what} reached", extra={"fields": {"addr": addr}})
            elif now - warned_at.get(addr, -repeat_s) >= repeat_s:
                warned_at[addr] = now
                hint = " (the executor cannot register, so it gets no challenges)" if what == "miner" else ""
                log.warning(
                    f"cannot reach the {what} {addr}{hint}: check that a gpow node runs there and listens on that "
                    "address, that no firewall blocks the port, and that both use the same [net].network",
                    extra={"fields": {"addr": addr}},
                )
        await trio.sleep(1.0)


DRAIN_MAX_S = 30.0  # on SIGTERM, challenges this node's executors are proving get this long to finish


def _executors(node: Any) -> list[Any]:
    svc = node.service
    if svc is None:
        return []
    if hasattr(svc, "local"):  # a miner: its local executors
        return list(svc.local.values())
    return [svc.service] if hasattr(svc, "service") else []  # a remote executor node


def _validator_in_flight(node: Any) -> int:
    if node.role != "validator" or node.service is None:
        return 0
    return int(node.service.status().get("in_flight_groups", 0))


async def drain_work(node: Any, max_s: float = DRAIN_MAX_S) -> int:
    """Let the challenges in flight finish before the node stops, at most ``max_s``: a proof cut
    off by our own shutdown would be scored as the executor's failure, and a validator's verdict
    cut off would be lost (closed as timed-out-at-restart). An executor waits for the challenges it
    is answering; a validator until a moment with no challenge group in flight. Returns how many
    executors or groups were in flight when it began."""
    busy = [e for e in _executors(node) if e.busy()]
    groups = _validator_in_flight(node)
    if busy or groups:
        log.info(
            "stopping: letting challenges in flight finish",
            extra={"fields": {"executors": len(busy), "groups": groups, "at_most_s": max_s}},
        )
        with trio.move_on_after(max_s) as scope:
            while any(e.busy() for e in busy) or _validator_in_flight(node):
                await trio.sleep(0.1)
        if scope.cancelled_caught:
            log.warning("stopping with challenges still in flight", extra={"fields": {"after_s": max_s}})
    return len(busy) + groups


async def _stop_on_signals(scope: trio.CancelScope, node) -> None:
    if not hasattr(trio, "open_signal_receiver"):
        return
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for sig in signals:
                log.info("stopping", extra={"fields": {"signal": signal.Signals(sig).name}})
                with trio.CancelScope() as drain_scope:
                    async with trio.open_nursery() as nursery:

                        async def second_signal() -> None:  # a second Ctrl-C / SIGTERM stops at once
                            async for _ in signals:
                                log.info("stopping now, without waiting for challenges in flight")
                                drain_scope.cancel()

                        nursery.start_soon(second_signal)
                        await drain_work(node)
                        with trio.move_on_after(5):
                            await node.drain()
                        nursery.cancel_scope.cancel()
                scope.cancel()
                return
    except ValueError:  # not the main thread (in-process tests): the caller cancels instead
        return
