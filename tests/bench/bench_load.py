"""Load on one validator: verifications per second on 2 cores, and executors kept challenged.

    python tests/bench/bench_load.py verify   [--seconds 10] [--fake-fraction 0.5] [--skip-4096] [--json FILE]
    python tests/bench/bench_load.py schedule [--interval 5] [--miners 4] [--per-miner 16,64,256] [--json FILE]

``verify``: the validator's verification path (``decode_openings`` + ``verify``, what it runs in a
worker thread per challenge) on two worker threads, the process pinned to two cores and BLAS held
to one thread per worker. Honest openings are made once with the numpy engine: n=128 (T=16, m=4,
k=32, the CPU harness's size) and n=4096 (T=8, m=4, k=128, the GPU size: verify-only, the chain
is proved once, about 12 s). Fakes are mixed in at ``--fake-fraction``: half random bytes of the
same size (refused by the decoder), half well-formed openings under a wrong root (refused at the
first sample's Merkle check). Reported: verifications per second, and the mean seconds of a valid
and of a fake one.

``schedule``: a real validator process (``gpow run``, default concurrency 2, co-scheduling on)
and ``--miners`` real miner processes with N CPU executors each. Executors are simulated cheaply:
real ExecutorService identities with real CPU engines, but each declares a tiny memory
(n = 64, T = 8), so proving costs about a millisecond and what is measured is the validator's side:
scheduling, signing, request/response, the ledger's fsync'd writes, verification. The GPU profile
is made lenient (0.5 s a step) because one miner process stands in for many GPUs on a shared CPU,
so time is not judged here; verdicts still fail on anything else. For each N the
run lasts ``--warmup + --window`` seconds; an executor is "kept challenged" when it got a verdict
in the window and never waited more than 1.5 intervals between two. Reported per N: verdicts per second, the share of
executors kept challenged, and the worst gap between two verdicts of one executor.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # must precede the first numpy import

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from node.pow.cpu_engine import CpuEngine  # noqa: E402
from node.pow.engine import ChallengeParams  # noqa: E402
from node.pow.openings import ProofFormatError, build_openings, decode_openings, encode_openings  # noqa: E402
from node.pow.verifier import verify  # noqa: E402


def pin_two_cores() -> str:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(cpus[:2]))
        return f"pinned to CPUs {cpus[:2]} of {len(cpus)}"
    except (AttributeError, OSError):
        return "not pinned"


@dataclasses.dataclass
class Case:
    name: str
    params: ChallengeParams
    k: int
    root: bytes
    d_final: bytes
    reveal: bytes
    valid: bytes
    fakes: list[bytes]


def make_case(n: int, T: int, m: int, k: int) -> tuple[Case, float]:
    params = ChallengeParams(hashlib.sha256(b"gpow-bench-load").digest(), bytes(32), bytes([1]) * 32, n, T, m)
    t0 = time.perf_counter()
    trace = CpuEngine().prove(params)
    prove_s = time.perf_counter() - t0
    reveal = hashlib.sha256(b"gpow-bench-load-reveal").digest()
    blob = encode_openings(build_openings(trace, reveal, k))
    rng = np.random.default_rng(2)
    # fakes: random bytes of the same size; honest-looking openings of another chain (wrong root)
    other = ChallengeParams(hashlib.sha256(b"other").digest(), bytes(32), bytes([1]) * 32, n, T, m)
    other_trace = CpuEngine().prove(other) if n <= 512 else trace
    other_blob = encode_openings(build_openings(other_trace, reveal, k))
    root = trace.root
    case = Case(
        f"n={n} T={T} m={m} k={k}",
        params,
        k,
        root,
        trace.digests[-1],
        reveal,
        blob,
        [rng.bytes(len(blob)), other_blob if n <= 512 else blob],
    )
    if n > 512:  # wrong root for the big case: the same openings checked against a flipped root
        case.fakes[1] = blob
    return case, prove_s


def check(case: Case, blob: bytes, wrong_root: bool = False) -> bool:
    """What the validator does with received openings (decode, then verify; first failure stops)."""
    try:
        op = decode_openings(blob)
    except ProofFormatError:
        return False
    root = bytes([case.root[0] ^ 1]) + case.root[1:] if wrong_root else case.root
    return verify(case.params, case.k, root, case.d_final, case.reveal, op).ok


def bench_verify(case: Case, seconds: float, fake_fraction: float, workers: int = 2) -> dict[str, Any]:
    stop = time.perf_counter() + seconds
    lock = threading.Lock()
    counts = {"valid": 0, "fake": 0, "valid_s": 0.0, "fake_s": 0.0, "wrong": 0}

    def worker(w: int) -> None:
        rng = np.random.default_rng(100 + w)
        while time.perf_counter() < stop:
            fake = rng.random() < fake_fraction
            if fake:
                i = int(rng.integers(2))
                blob, wrong_root = case.fakes[i], (i == 1 and case.fakes[1] is case.valid)
            else:
                blob, wrong_root = case.valid, False
            t0 = time.perf_counter()
            ok = check(case, blob, wrong_root)
            dt = time.perf_counter() - t0
            with lock:
                key = "fake" if fake else "valid"
                counts[key] += 1
                counts[key + "_s"] += dt
                if ok == fake:
                    counts["wrong"] += 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(worker, range(workers)))
    elapsed = time.perf_counter() - t0
    total = counts["valid"] + counts["fake"]
    return {
        "case": case.name,
        "seconds": round(elapsed, 2),
        "workers": workers,
        "fake_fraction": fake_fraction,
        "verifications": total,
        "per_second": round(total / elapsed, 2),
        "valid_per_second": round(counts["valid"] / elapsed, 2),
        "fakes_per_second": round(counts["fake"] / elapsed, 2),
        "mean_valid_s": round(counts["valid_s"] / max(1, counts["valid"]), 5),
        "mean_fake_s": round(counts["fake_s"] / max(1, counts["fake"]), 5),
        "wrong_verdicts": counts["wrong"],
    }


def cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    pin = pin_two_cores()
    out: dict[str, Any] = {"pinning": pin, "results": []}
    sizes = [(128, 16, 4, 32)] + ([] if args.skip_4096 else [(4096, 8, 4, 128)])
    for n, T, m, k in sizes:
        case, prove_s = make_case(n, T, m, k)
        print(f"{case.name}: proved in {prove_s:.1f} s; openings {len(case.valid)} bytes", flush=True)
        for ff in (0.0, args.fake_fraction):
            r = bench_verify(case, args.seconds, ff)
            print(
                f"  fakes {ff:.0%}: {r['per_second']} verifications/s ({r['valid_per_second']} valid, "
                f"{r['fakes_per_second']} fake); valid {r['mean_valid_s'] * 1e3:.2f} ms, fake {r['mean_fake_s'] * 1e3:.3f} ms"
                f"{'; WRONG VERDICTS ' + str(r['wrong_verdicts']) if r['wrong_verdicts'] else ''}",
                flush=True,
            )
            out["results"].append(r)
    return out


# ---- executors kept challenged ---------------------------------------------------------------------


def cmd_schedule(args: argparse.Namespace) -> dict[str, Any]:
    from node.harness.main import write_node_config
    from node.harness.processes import NodeProcess, stop_all

    out: dict[str, Any] = {"interval_s": args.interval, "miners": args.miners, "window_s": args.window, "points": []}
    for per in [int(x) for x in args.per_miner.split(",")]:
        work = Path(tempfile.mkdtemp(prefix="gpow-load-"))
        prof = work / "profiles.toml"
        prof.write_text(
            '[[profile]]\nmodel = "cpu-reference"\nmemory_bytes = 0\nn = 64\nstep_seconds = 0.5\n'
            'measured = false\nsource = "bench: one process simulates many GPUs, time is not judged"\n'
        )
        nodes: list[NodeProcess] = []

        def start(name: str, role: str, sections: dict) -> NodeProcess:
            d = work / name
            d.mkdir()
            base = {
                "node": {"role": role, "data_dir": str(d), "status_interval_s": 1.0},
                "net": {"listen_host": "127.0.0.1", "listen_port": 0, "network": "gpow-load"},
                "gossip": {"heartbeat_s": 0.5},
                "admission": {"open": True},
            }
            for k, v in sections.items():
                base.setdefault(k, {}).update(v)
            write_node_config(d / "config.toml", base)
            p = NodeProcess(
                name,
                role,
                d,
                d / "config.toml",
                ["--log-level", "warning", "run", "--config", str(d / "config.toml")],
                d / "node.log",
            )
            p.start()
            nodes.append(p)
            deadline = time.monotonic() + 60
            while not (p.status() or {}).get("listen"):
                if time.monotonic() > deadline or not p.alive():
                    raise RuntimeError(f"{name} did not start:\n{p.log_tail()}")
                time.sleep(0.1)
            return p

        try:
            v = start(
                "validator",
                "validator",
                {
                    "validator": {
                        "challenge_interval_s": args.interval,
                        "n_cpu": 64,
                        "samples": 8,
                        "probation_challenges": 0,
                        "commit_slack_s": 5.0,
                        "openings_timeout_s": 5.0,
                        "profiles_file": str(prof),
                        "audit": False,
                    }
                },
            )
            boot = [v.status()["listen"]]
            for i in range(args.miners):
                start(
                    f"miner-{i}",
                    "miner",
                    {
                        "net": {"bootstrap": boot},
                        "miner": {
                            "engine": "cpu",
                            "cpu_executors": per,
                            "cpu_memory_bytes": 64 * 64 * 16,
                            "roster_interval_s": 5.0,
                            "host_fingerprint": f"host-{i}",
                        },
                    },
                )
            n_exec = per * args.miners
            deadline = time.monotonic() + 120
            while len(((v.status() or {}).get("validator") or {}).get("executors", {})) < n_exec:
                if time.monotonic() > deadline:
                    raise RuntimeError("the validator did not learn every executor")
                time.sleep(0.5)
            time.sleep(args.warmup)
            t0 = int(time.time() * 1000)
            time.sleep(args.window)
            t1 = int(time.time() * 1000)
            with sqlite3.connect(f"file:{work / 'validator' / 'ledger.sqlite3'}?mode=ro", uri=True) as db:
                rows = db.execute(
                    "SELECT executor_id, created_ms, passed FROM verdicts WHERE created_ms >= ? ORDER BY created_ms",
                    (t0 - int(args.interval * 2000),),
                ).fetchall()
                reasons: dict[str, int] = {}
                for (r,) in db.execute(
                    "SELECT reasons FROM verdicts WHERE created_ms >= ? AND created_ms < ? AND passed = 0", (t0, t1)
                ):
                    for x in json.loads(r):
                        key = x.split(":")[0]
                        reasons[key] = reasons.get(key, 0) + 1
            st = v.status() or {}
            executors = list((st.get("validator") or {}).get("executors") or {})
            by: dict[str, list[int]] = {e: [] for e in executors}
            for e, c, _ in rows:
                by.setdefault(e, []).append(c)
            in_window = {e: [c for c in cs if t0 <= c < t1] for e, cs in by.items()}
            # kept challenged: at least one verdict in the window and never a gap over 1.5 intervals
            worst = {e: max([b - a for a, b in zip(cs, cs[1:]) if b >= t0] + [0]) for e, cs in by.items()}
            kept = sum(1 for e in executors if in_window.get(e) and worst.get(e, 1e18) <= 1500 * args.interval)
            gaps = [g for g in worst.values() if g]
            verdicts = sum(len(cs) for cs in in_window.values())
            failed = sum(1 for e, c, p in rows if t0 <= c < t1 and not p)
            point = {
                "executors": n_exec,
                "per_miner": per,
                "verdicts_per_s": round(verdicts / args.window, 2),
                "due_per_s": round(n_exec / args.interval, 2),
                "kept_challenged": round(kept / max(1, n_exec), 3),
                "failed_in_window": failed,
                "failed_reasons": reasons,
                "worst_gap_s": round(max(gaps) / 1000, 1) if gaps else None,
                "validator_cpu_s": None,
            }
            try:
                with open(f"/proc/{v.proc.pid}/stat") as f:
                    parts = f.read().split()
                point["validator_cpu_s"] = round((int(parts[13]) + int(parts[14])) / os.sysconf("SC_CLK_TCK"), 1)
            except OSError:
                pass
            print(json.dumps(point), flush=True)
            out["points"].append(point)
        finally:
            stop_all(nodes)
            shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("verify")
    a.add_argument("--seconds", type=float, default=10.0)
    a.add_argument("--fake-fraction", type=float, default=0.5)
    a.add_argument("--skip-4096", action="store_true")
    a.add_argument("--json", default="")
    b = sub.add_parser("schedule")
    b.add_argument("--interval", type=float, default=5.0)
    b.add_argument("--miners", type=int, default=4)
    b.add_argument("--per-miner", default="16,64,256")
    b.add_argument("--warmup", type=float, default=5.0)
    b.add_argument("--window", type=float, default=15.0)
    b.add_argument("--json", default="")
    args = ap.parse_args(argv)
    out = cmd_verify(args) if args.cmd == "verify" else cmd_schedule(args)
    out["command"] = "python tests/bench/bench_load.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out["cpu_count"] = os.cpu_count()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
