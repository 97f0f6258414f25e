"""A running node: its host (network), its role service, its ledger and its status file."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.app.config import NodeConfig
from node.app.errors import GpuUnavailable
from node.clock import now_ms
from node.identity import Identity, load_or_create_key_file
from node.roles.answerer import Answerer
from node.roles.executor import ExecutorService, GpuFacts, host_fingerprint

if TYPE_CHECKING:
    from node.roles.agreement import Agreement
    from node.roles.miner import MinerService
    from node.roles.validator import ValidatorService

log = logging.getLogger("gpow.node")

CPU_MODEL = "cpu-reference"


def default_profiles_path() -> Path:
    from node.resources import profiles_path  # package data: works from a wheel too

    return profiles_path()


def cpu_facts(memory_bytes: int, executor_id: str, host_fp: str, model: str = CPU_MODEL) -> GpuFacts:
    return GpuFacts(
        engine="cpu",
        gpu_model=model,
        memory_bytes=memory_bytes,
        gpu_uuid=f"CPU-{executor_id[-16:]}",
        pci_bus_id="",
        host_fingerprint=host_fp,
    )


def make_cpu_engine(memory_bytes: int):
    """A CPU engine whose pools are limited by the executor's PoolBudget (``memory_bytes``); the
    engine's own ceiling leaves room for its working buffers (B matrices, temporaries)."""
    from node.pow.cpu_engine import CpuEngine

    return CpuEngine(memory_budget_bytes=2 * memory_bytes + 64 * 1024 * 1024)


def make_gpu_executors(
    identities: list[Identity],
    miner_id: str,
    devices: list[int],
    *,
    answerer: Callable[[int], Answerer] = lambda index: Answerer(),
    executor_class: Callable[[int], type[ExecutorService]] = lambda index: ExecutorService,
    **kw: Any,
) -> list[ExecutorService]:
    from node.gpu.engine import GpuEngine
    from node.gpu.facts import gpu_facts

    out = []
    for i, (ident, dev) in enumerate(zip(identities, devices)):
        engine = GpuEngine(device_id=dev)
        f = gpu_facts(dev)
        facts = GpuFacts(
            engine="gpu",
            gpu_model=f.model,
            memory_bytes=engine.memory_budget_bytes(),
            gpu_uuid=f.uuid,
            pci_bus_id=f.pci_bus_id,
            host_fingerprint=host_fingerprint(),
        )
        out.append(executor_class(i)(ident, miner_id, engine, facts, answerer=answerer(i), **kw))
    return out


def visible_gpus() -> list[int]:
    try:
        import cupy

        return list(range(cupy.cuda.runtime.getDeviceCount()))
    except Exception:
        return []


@dataclass(frozen=True)
class NodeParts:
    """The parts a node is assembled from that callers may replace: each local executor's answerer
    and class, the whole set of a miner's local executors, and the role services' classes.

    ``gpow run`` uses the defaults. Tests and the harness pass their own to build nodes that
    misbehave in one named way, from outside the product's code."""

    answerer: Callable[[int], Answerer] = lambda index: Answerer()
    executor_class: Callable[[int], type[ExecutorService]] = lambda index: ExecutorService
    local_executors: Callable[[Node], list[ExecutorService]] | None = None  # None: per GPU / cpu_executors
    miner_class: type[MinerService] | None = None
    validator_class: type[ValidatorService] | None = None
    agreement_class: type[Agreement] | None = None


class Node:
    def __init__(self, cfg: NodeConfig, identity: Identity, parts: NodeParts | None = None):
        from node.net.host import Host

        self.parts = parts or NodeParts()
        self.cfg = cfg
        self.identity = identity
        self.role = cfg.node.role
        self.data_dir = Path(cfg.node.data_dir)
        self.host = Host(identity, cfg.net, self.role)
        from node.gossip.driver import GossipDriver

        self.gossip = GossipDriver(self.host, cfg.gossip)  # gossip sits on the host (go: NewGossipSub(ctx, host))
        from node.roles.agreement import Agreement

        self.agreement = (self.parts.agreement_class or Agreement)(self.host, cfg.admission, cfg.rounds, gossip=self.gossip)
        self.admission = self.agreement.book
        self.service: Any = None
        self.ledger = None
        self.started_ms = now_ms()
        self._remote = None

    # ---- role construction -------------------------------------------------------------------

    def _build_miner(self) -> MinerService:
        from node.roles.miner import MinerService

        mp = self.cfg.miner
        executors = self.parts.local_executors(self) if self.parts.local_executors else self._local_executors()
        cls = self.parts.miner_class or MinerService
        return cls(
            self.host,
            executors,
            gossip=self.gossip,
            roster_interval_s=mp.roster_interval_s,
            heartbeat_timeout_s=mp.heartbeat_timeout_s,
            allowed_remote=frozenset(mp.remote_executors),
        )

    def _local_executors(self) -> list[ExecutorService]:
        """One executor per visible GPU (``engine = "gpu"``), else ``cpu_executors`` CPU executors."""
        mp, parts = self.cfg.miner, self.parts
        if mp.engine == "gpu":
            devices = mp.gpu_devices or visible_gpus()
            if not devices:
                raise GpuUnavailable("engine = gpu but no CUDA device is visible (use --engine cpu for development)")
            idents = [load_or_create_key_file(self.data_dir / f"executor-{d}.key") for d in devices]
            return make_gpu_executors(
                idents,
                self.identity.peer_id,
                devices,
                admission=self.admission,
                assignment=self.agreement.assigned,
                answerer=parts.answerer,
                executor_class=parts.executor_class,
            )
        host_fp = mp.host_fingerprint or host_fingerprint()
        out = []
        for i in range(mp.cpu_executors):
            ident = load_or_create_key_file(self.data_dir / f"executor-{i}.key")
            out.append(
                parts.executor_class(i)(
                    ident,
                    self.identity.peer_id,
                    make_cpu_engine(mp.cpu_memory_bytes),
                    cpu_facts(mp.cpu_memory_bytes, ident.peer_id, host_fp),
                    admission=self.admission,
                    assignment=self.agreement.assigned,
                    answerer=parts.answerer(i),
                )
            )
        return out

    def _build_validator(self):
        from node.roles.ledger import Ledger
        from node.roles.profiles import ProfileBook
        from node.roles.validator import ValidatorService

        vp = self.cfg.validator
        self.ledger = Ledger(self.data_dir / "ledger.sqlite3")
        profiles = ProfileBook.load(Path(vp.profiles_file) if vp.profiles_file else default_profiles_path())
        cls = self.parts.validator_class or ValidatorService
        return cls(self.host, vp, self.ledger, profiles, gossip=self.gossip, data_dir=self.data_dir, agreement=self.agreement)

    def _build_executor(self):
        from node.roles.miner import RemoteExecutorNode

        ep = self.cfg.executor
        parts = self.parts
        if ep.engine == "gpu":
            (service,) = make_gpu_executors(
                [self.identity],
                "",
                [ep.gpu_device],
                admission=self.admission,
                assignment=self.agreement.assigned,
                signer=self.gossip.signer,
                answerer=parts.answerer,
                executor_class=parts.executor_class,
            )
        else:
            host_fp = ep.host_fingerprint or host_fingerprint()
            service = parts.executor_class(0)(
                self.identity,
                "",
                make_cpu_engine(ep.cpu_memory_bytes),
                cpu_facts(ep.cpu_memory_bytes, self.identity.peer_id, host_fp),
                admission=self.admission,
                assignment=self.agreement.assigned,
                answerer=parts.answerer(0),
                signer=self.gossip.signer,
            )
        self._remote = RemoteExecutorNode(self.host, service, self._miner_peer, heartbeat_interval_s=ep.heartbeat_interval_s)
        return self._remote

    def _miner_peer(self) -> str | None:
        """The connected peer whose address is our configured miner (its id is learned at handshake)."""
        want = self.cfg.executor.miner.rstrip("/")
        for pid, info in self.host.connected_peers().items():
            # Only a link we dialled ourselves to that address proves it is our miner: listen
            # addresses in a Hello are claims, and an inbound peer could claim anything.
            if info.role == "miner" and info.outbound and want in [a.rstrip("/") for a in info.listen_addrs]:
                if self._remote is not None:
                    self._remote.service.miner_id = pid
                return pid
        return None

    # ---- running -----------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.host.run)
            await nursery.start(self.gossip.run)
            await nursery.start(self.agreement.run)
            if self.role == "miner":
                self.service = self._build_miner()
            elif self.role == "validator":
                self.service = self._build_validator()
            else:
                self.service = self._build_executor()
            await nursery.start(self.service.run)
            nursery.start_soon(self._write_status_forever)
            if self.cfg.node.metrics_port:
                from node.app.metrics import serve_metrics

                await nursery.start(serve_metrics, self, self.cfg.node.metrics_port)
            log.info(
                "node started",
                extra={"fields": {"role": self.role, "peer_id": self.identity.peer_id, "listen": self.host.listen_addr}},
            )
            task_status.started(self)

    async def drain(self) -> None:
        if self._remote is not None:
            await self._remote.deregister("shutdown")
        self.write_status()
        if self.ledger is not None:
            self.ledger.close()

    def status(self) -> dict:
        peers = self.host.connected_peers()
        out = {
            "role": self.role,
            "peer_id": self.identity.peer_id,
            "listen": self.host.listen_addr,
            "pid": os.getpid(),
            "started_ms": self.started_ms,
            "updated_ms": now_ms(),
            "peers": {pid: {"role": p.role, "outbound": p.outbound} for pid, p in peers.items()},
            "net": self.host.stats_dict() if hasattr(self.host, "stats_dict") else {},
        }
        out["agreement"] = self.agreement.status()
        if self.service is not None and hasattr(self.service, "status"):
            out[self.role] = self.service.status()
        return out

    def write_status(self) -> None:
        path = self.data_dir / "status.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.status(), default=str, indent=1))
        os.replace(tmp, path)

    async def _write_status_forever(self) -> None:
        while True:
            try:
                self.write_status()
            except OSError as exc:
                log.warning("could not write status", extra={"fields": {"error": str(exc)}})
            await trio.sleep(self.cfg.node.status_interval_s)
