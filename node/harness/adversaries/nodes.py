"""Adversarial role services and executor sets, built by subclassing the product's services at
their seams (``MinerService._route``, ``ValidatorService._finish`` / ``_round_validators``) or by
replacing how a miner's local executors are made."""

from __future__ import annotations

import trio

from node.app.node import Node, make_cpu_engine
from node.identity import load_or_create_key_file
from node.roles import verdicts as R
from node.roles.executor import ExecutorService, GpuFacts, PoolBudget, host_fingerprint
from node.roles.miner import MinerService
from node.roles.validator import ChallengeOutcome, KnownExecutor, ValidatorService


class MisroutingMiner(MinerService):
    """Hands each challenge to a different local executor than the one it names."""

    def _route(self, executor_id: str) -> str:
        others = [e for e in self.local if e != executor_id]
        return others[0] if others else executor_id


def lying_validator(mode: str) -> type[ValidatorService]:
    """An admitted validator whose verdicts say ``always-pass`` or ``always-fail``, whatever it saw."""
    if mode not in ("always-pass", "always-fail"):
        raise ValueError(f"lying-validator mode must be always-pass or always-fail, not {mode!r}")

    class LyingValidator(ValidatorService):
        def _finish(self, e: KnownExecutor, out: ChallengeOutcome, round_no: int = 0) -> None:
            rec = out.record
            if mode == "always-pass":
                rec.passed, rec.reasons = True, [R.PASSED]
            else:
                rec.passed, rec.reasons = False, [R.SLOW_FOR_PROFILE]
            super()._finish(e, out, round_no)

    return LyingValidator


class SelfAdmittedValidator(ValidatorService):
    """A validator outside the admitted set that challenges as if it alone were admitted."""

    def _round_validators(self, r: int) -> frozenset[str]:
        return frozenset({self.host.identity.peer_id})


def shared_engine_executors(node: Node, count: int = 2) -> list[ExecutorService]:
    """``count`` executor identities backed by one engine, one lock and one memory budget; on a GPU
    all but the first report made-up GPU UUIDs. Co-scheduled challenges expose the shared engine:
    the last of them waits for every other chain (and its openings) before its own starts."""
    mp = node.cfg.miner
    host_fp = mp.host_fingerprint or host_fingerprint()
    idents = [load_or_create_key_file(node.data_dir / f"executor-shared-{i}.key") for i in range(count)]
    if mp.engine == "gpu":
        from node.gpu.engine import GpuEngine
        from node.gpu.facts import gpu_facts

        device = (mp.gpu_devices or [0])[0]
        engine, f = GpuEngine(device_id=device), gpu_facts(device)
        memory = engine.memory_budget_bytes()
        facts = [
            GpuFacts(
                engine="gpu",
                gpu_model=f.model,
                memory_bytes=memory,
                gpu_uuid=f.uuid if i == 0 else f"GPU-{ident.peer_id[-12:]}",
                pci_bus_id=f.pci_bus_id,
                host_fingerprint=host_fp,
            )
            for i, ident in enumerate(idents)
        ]
    else:
        from node.app.node import cpu_facts

        engine, memory = make_cpu_engine(mp.cpu_memory_bytes), mp.cpu_memory_bytes
        facts = [cpu_facts(memory, ident.peer_id, host_fp) for ident in idents]
    lock, budget = trio.Lock(), PoolBudget(memory)
    return [
        ExecutorService(
            ident,
            node.identity.peer_id,
            engine,
            fact,
            admission=node.admission,
            assignment=node.agreement.assigned,
            lock=lock,
            budget=budget,
        )
        for ident, fact in zip(idents, facts)
    ]
