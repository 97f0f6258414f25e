"""One GPU counted once, measured: an honest miner with one executor on a device, then a cheating
miner that announces two executors backed by that one device (one engine, one memory budget),
each challenged by a real validator (in-process nodes on loopback, real engines, real ledgers).

    python tests/bench/shared_gpu.py --engine gpu [--n 8192] [--json FILE]
    python tests/bench/shared_gpu.py --engine cpu --memory 16777216 --n 128     (no GPU)

The profile the validator judges by is measured here first (a short chain on the same engine),
so the honest phase passing and the shared phase failing show the co-scheduling, not a guess.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import trio

from node.app.config import NodeConfig
from node.app.node import Node, make_cpu_engine
from node.harness.adversaries import node_parts
from node.harness.main import wall_step_seconds
from node.identity import Identity


def measure_step(engine_kind: str, n: int, memory: int, steps: int = 64) -> tuple[str, float, int]:
    """(model, seconds per step, memory the executor declares) for the engine under test."""
    if engine_kind == "gpu":
        from node.gpu.engine import GpuEngine
        from node.gpu.facts import gpu_facts

        engine, model = GpuEngine(device_id=0), gpu_facts(0).model
        declared = engine.memory_budget_bytes()
    else:
        engine, model, declared = make_cpu_engine(memory), "cpu-reference", memory
    best = wall_step_seconds(engine, n, steps)
    del engine
    return model, best, declared


def config(tmp: Path, name: str, role: str, boot: list[str], a: argparse.Namespace, profiles: Path) -> NodeConfig:
    c = NodeConfig()
    c.node = dataclasses.replace(c.node, role=role, data_dir=str(tmp / name), status_interval_s=1.0)
    c.net = dataclasses.replace(c.net, listen_port=0, bootstrap=boot, network="gpow-shared-gpu")
    c.gossip = dataclasses.replace(c.gossip, heartbeat_s=0.5)
    c.validator = dataclasses.replace(
        c.validator,
        challenge_interval_s=2.0,
        n_gpu=a.n,
        n_cpu=a.n,
        samples=32,
        probation_challenges=0,
        profiles_file=str(profiles),
        rtt_margin_s=0.05,
        commit_slack_s=1.0,
        openings_timeout_s=60.0,
        concurrency=1,
    )
    c.miner = dataclasses.replace(
        c.miner, engine=a.engine, cpu_memory_bytes=a.memory, host_fingerprint="shared-gpu-bench", roster_interval_s=1.0
    )
    return c


async def phase(tmp: Path, a: argparse.Namespace, profiles: Path, cheat: str, want: int) -> list[dict]:
    out: list[dict] = []
    async with trio.open_nursery() as nursery:
        v = Node(config(tmp, f"v-{cheat or 'honest'}", "validator", [], a, profiles), Identity.generate())
        await nursery.start(v.run)
        m = Node(
            config(tmp, f"m-{cheat or 'honest'}", "miner", [v.host.listen_addr], a, profiles),
            Identity.generate(),
            node_parts(cheat) if cheat else None,
        )
        await nursery.start(m.run)
        with trio.move_on_after(a.timeout):
            while len(v.ledger.verdicts()) < want:
                await trio.sleep(0.2)
        for r in v.ledger.verdicts():
            out.append(
                {
                    "executor": r.executor_id[-8:],
                    "passed": r.passed,
                    "reasons": r.reasons,
                    "n": r.n,
                    "T": r.T,
                    "commit_s": r.commit_seconds,
                    "expected_s": r.expected_seconds,
                }
            )
        nursery.cancel_scope.cancel()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["cpu", "gpu"], default="gpu")
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--memory", type=int, default=16 << 20, help="declared memory of a CPU executor")
    ap.add_argument("--verdicts", type=int, default=2, help="verdicts to collect per phase")
    ap.add_argument("--timeout", type=float, default=240.0)
    ap.add_argument("--allowance", type=float, default=1.3, help="profile = measured step time x this")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    model, step, declared = measure_step(a.engine, a.n, a.memory)
    tmp = Path(tempfile.mkdtemp(prefix="gpow-shared-gpu-"))
    profiles = tmp / "profiles.toml"
    profiles.write_text(
        f'[[profile]]\nmodel = "{model}"\nmemory_bytes = {declared}\nn = {a.n}\n'
        f'step_seconds = {step * a.allowance:.6g}\nmeasured = true\nsource = "measured by shared_gpu.py just now"\n'
    )
    print(f"{model}: {step * 1e3:.3f} ms/step at n={a.n}, declared memory {declared / 2**30:.2f} GiB", flush=True)
    honest = trio.run(phase, tmp, a, profiles, "", a.verdicts)
    shared = trio.run(phase, tmp, a, profiles, "shared-gpu", 2 * a.verdicts)
    result = {
        "engine": a.engine,
        "model": model,
        "n": a.n,
        "step_s": step,
        "declared_bytes": declared,
        "honest": honest,
        "shared": shared,
        "honest_all_passed": bool(honest) and all(v["passed"] for v in honest),
        "shared_caught": any(not v["passed"] for v in shared),
    }
    print(json.dumps(result, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return 0 if result["honest_all_passed"] and result["shared_caught"] else 1


if __name__ == "__main__":
    sys.exit(main())
