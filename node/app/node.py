"""A running node: its host (network), its role service, its ledger and its status file."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import trio

from node.app.config import NodeConfig
from node.identity import Identity, load_or_create_key_file
from node.roles.behaviours import make_behaviour
from node.app.runner import NodeStartError
from node.roles.executor import ExecutorService, GpuFacts, PoolBudget, host_fingerprint

log = logging.getLogger("gpow.node")

CPU_MODEL = "cpu-reference"


def default_profiles_path() -> Path:
    here = Path(__file__).resolve().parents[2] / "configs" / "gpu_profiles.toml"
    return here


def _cpu_facts(memory_bytes: int, executor_id: str, host_fp: str, model: str = CPU_MODEL) -> GpuFacts:
    return GpuFacts(
        engine="cpu", gpu_model=model, memory_bytes=memory_bytes,
        gpu_uuid=f"CPU-{executor_id[-16:]}", pci_bus_id="", host_fingerprint=host_fp,
    )


def make_cpu_engine(memory_bytes: int):
    """A CPU engine whose pools are limited by the executor's PoolBudget (``memory_bytes``); the
    engine's own ceiling leaves room for its working buffers (B matrices, temporaries)."""
    from node.pow.cpu_engine import CpuEngine

    return CpuEngine(memory_budget_bytes=2 * memory_bytes + 64 * 1024 * 1024)


def make_gpu_executors(identities: list[Identity], miner_id: str, devices: list[int], **kw: Any) -> list[ExecutorService]:
    from node.gpu.engine import GpuEngine
    from node.gpu.facts import gpu_facts

    out = []
    for ident, dev in zip(identities, devices):
        engine = GpuEngine(device_id=dev)
        f = gpu_facts(dev)
        facts = GpuFacts(engine="gpu", gpu_model=f.model, memory_bytes=engine.memory_budget_bytes(), gpu_uuid=f.uuid,
                         pci_bus_id=f.pci_bus_id, host_fingerprint=host_fingerprint())
        out.append(ExecutorService(ident, miner_id, engine, facts, **kw))
    return out


def visible_gpus() -> list[int]:
    try:
        import cupy

        return list(range(cupy.cuda.runtime.getDeviceCount()))
    except Exception:
        return []


class Node:
    def __init__(self, cfg: NodeConfig, identity: Identity):
        from node.net.host import Host

        self.cfg = cfg
        self.identity = identity
        self.role = cfg.node.role
        self.data_dir = Path(cfg.node.data_dir)
        self.host = Host(identity, cfg.net, self.role, cfg.gossip)
        from node.roles.agreement import Agreement

        self.agreement = Agreement(self.host, cfg.admission, cfg.rounds)
        self.admission = self.agreement.book
        self.service: Any = None
        self.ledger = None
        self.started_ms = int(time.time() * 1000)
        self._remote = None

    # ---- role construction -------------------------------------------------------------------

    def _build_miner(self):
        from node.roles.miner import MinerService

        mp = self.cfg.miner
        host_fp = mp.host_fingerprint or host_fingerprint()
        cheat = mp.cheat
        executors: list[ExecutorService] = []
        if mp.engine == "gpu":
            devices = mp.gpu_devices or visible_gpus()
            if not devices:
                raise NodeStartError("engine = gpu but no CUDA device is visible (use --engine cpu for development)")
            if cheat == "shared-gpu":
                executors = self._shared_gpu_executors(devices[0])
            else:
                idents = [load_or_create_key_file(self.data_dir / f"executor-{d}.key") for d in devices]
                executors = make_gpu_executors(idents, self.identity.peer_id, devices, admission=self.admission,
                                               behaviour=make_behaviour(cheat))
        else:
            count = max(mp.cpu_executors, 2 if cheat in ("shared-gpu", "wrong-executor") else 1)
            shared_engine = make_cpu_engine(mp.cpu_memory_bytes) if cheat == "shared-gpu" else None
            shared_lock = trio.Lock() if shared_engine else None
            shared_budget = PoolBudget(mp.cpu_memory_bytes) if shared_engine else None
            for i in range(count):
                ident = load_or_create_key_file(self.data_dir / f"executor-{i}.key")
                behaviour_spec = cheat if cheat and cheat not in ("shared-gpu", "wrong-executor") else ""
                if cheat == "wrong-executor" and i == 1:
                    behaviour_spec = "wrong-executor"
                executors.append(
                    ExecutorService(
                        ident, self.identity.peer_id,
                        shared_engine or make_cpu_engine(mp.cpu_memory_bytes),
                        _cpu_facts(mp.cpu_memory_bytes, ident.peer_id, host_fp),
                        admission=self.admission,
                        behaviour=make_behaviour(behaviour_spec),
                        lock=shared_lock, budget=shared_budget,
                    )
                )
        route_cheat = "wrong-executor" if cheat == "wrong-executor" else ""
        return MinerService(self.host, executors, roster_interval_s=mp.roster_interval_s,
                            heartbeat_timeout_s=mp.heartbeat_timeout_s, route_cheat=route_cheat)

    def _shared_gpu_executors(self, device: int) -> list[ExecutorService]:
        """Testing only: two executor identities backed by one GPU (one engine, one lock, one
        memory budget); the second reports a made-up GPU UUID, as a cheater would."""
        from node.gpu.engine import GpuEngine
        from node.gpu.facts import gpu_facts

        engine, f = GpuEngine(device_id=device), gpu_facts(device)
        lock, budget = trio.Lock(), PoolBudget(engine.memory_budget_bytes())
        out = []
        for i in range(2):
            ident = load_or_create_key_file(self.data_dir / f"executor-shared-{i}.key")
            facts = GpuFacts(engine="gpu", gpu_model=f.model, memory_bytes=engine.memory_budget_bytes(),
                             gpu_uuid=f.uuid if i == 0 else f"GPU-{ident.peer_id[-12:]}", pci_bus_id=f.pci_bus_id,
                             host_fingerprint=host_fingerprint())
            out.append(ExecutorService(ident, self.identity.peer_id, engine, facts, admission=self.admission,
                                       lock=lock, budget=budget))
        return out

    def _build_validator(self):
        from node.roles.ledger import Ledger
        from node.roles.profiles import ProfileBook
        from node.roles.validator import ValidatorService

        vp = self.cfg.validator
        self.ledger = Ledger(self.data_dir / "ledger.sqlite3")
        profiles = ProfileBook.load(Path(vp.profiles_file) if vp.profiles_file else default_profiles_path())
        return ValidatorService(self.host, vp, self.ledger, profiles, data_dir=self.data_dir, agreement=self.agreement)

    def _build_executor(self):
        from node.roles.miner import RemoteExecutorNode

        ep = self.cfg.executor
        if ep.engine == "gpu":
            (service,) = make_gpu_executors([self.identity], "", [ep.gpu_device], admission=self.admission)
        else:
            host_fp = ep.host_fingerprint or host_fingerprint()
            service = ExecutorService(
                self.identity, "", make_cpu_engine(ep.cpu_memory_bytes),
                _cpu_facts(ep.cpu_memory_bytes, self.identity.peer_id, host_fp),
                admission=self.admission, behaviour=make_behaviour(ep.cheat),
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
            log.info("node started", extra={"fields": {"role": self.role, "peer_id": self.identity.peer_id, "listen": self.host.listen_addr}})
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
            "updated_ms": int(time.time() * 1000),
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
