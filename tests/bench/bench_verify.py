"""CPU verifier benchmark: the cost of accepting a valid proof, and of rejecting junk.

    python tests/bench/bench_verify.py [--n 4096 --m 4 --k 128 --T 8 --repeat 5 --json FILE]

Runs on ONE CPU core: BLAS/OpenMP threads are set to 1 before numpy is imported and the process is
pinned to one core. It proves an honest chain with the numpy engine (T steps of n x n products:
about 12 s for the defaults), writes its proof file in memory, and times ``decode_proof_file`` +
``verify`` (what ``gpow pow verify`` does) on:

- the valid proof, with the verifier's breakdown (Philox, products, hashing, total); target < 1 s
  for n=4096, m=4, k=128 (issue 3);
- junk (issue 13): random bytes; a well-formed proof whose hashes and rows are random; a wrong
  root; a wrong row length, a bad top proof, a bad Merkle path and a wrong row at the last sample;
  and the one junk that cannot be cheap, a committed false relation at the last sample (every
  Merkle proof holds, only the product finds it).

Each case is timed ``--repeat`` times; the median is reported. Exit status 1 if any verdict is not
the expected one. Not a test: nothing here runs under pytest.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"  # must precede the first numpy import

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from node.pow.chain import SAMPLE_DOMAIN, derive_samples  # noqa: E402
from node.pow.cpu_engine import CpuEngine, CpuTrace  # noqa: E402
from node.pow.engine import ChallengeParams  # noqa: E402
from node.pow.openings import (  # noqa: E402
    DigestOpening,
    Openings,
    ProofFile,
    ProofFormatError,
    RowOpening,
    build_openings,
    decode_proof_file,
    encode_proof_file,
)
from node.pow.verifier import verify  # noqa: E402


def _pin_one_core() -> str:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[0]})
        return f"pinned to CPU {cpus[0]} of {len(cpus)}"
    except (AttributeError, OSError):
        return "not pinned (no sched_setaffinity)"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _flip(b: bytes, at: int = 0) -> bytes:
    return b[:at] + bytes([b[at] ^ 0x01]) + b[at + 1 :]


def _with_rows(pf: ProofFile, rows: dict[tuple[int, int], RowOpening]) -> ProofFile:
    return dataclasses.replace(pf, openings=dataclasses.replace(pf.openings, rows=rows))


def _check_raw(raw: bytes) -> tuple[str, dict[str, float]]:
    """What `gpow pow verify` does: strict decode, then verify (stop at the first failure)."""
    t0 = time.perf_counter()
    try:
        pf = decode_proof_file(raw)
    except ProofFormatError:
        return "format", {"decode": time.perf_counter() - t0, "total": time.perf_counter() - t0}
    t1 = time.perf_counter()
    res = verify(pf.params, pf.k, pf.root, pf.d_T, pf.reveal, pf.openings)
    t2 = time.perf_counter()
    timings = {
        "decode": t1 - t0,
        **{k: v for k, v in res.timings.items() if k != "total"},
        "verify": res.timings["total"],
        "total": t2 - t0,
    }
    verdict = "valid" if res.ok else f"sample {res.failures[0].sample}: {res.failures[0].check}"
    return verdict, timings


def _median_timings(raw: bytes, repeat: int) -> tuple[str, dict[str, float]]:
    runs = [_check_raw(raw) for _ in range(repeat)]
    verdicts = {v for v, _ in runs}
    assert len(verdicts) == 1, verdicts  # deterministic
    keys = runs[0][1].keys()
    return runs[0][0], {k: statistics.median(t[k] for _, t in runs) for k in keys}


def _last_sample_row(pf: ProofFile) -> tuple[int, int]:
    t, i = pf.openings.samples[-1]
    return (t + 1, i)


def _cheat_proof(params: ChallengeParams, honest: CpuTrace, k: int) -> tuple[bytes, tuple[int, int]]:
    """A committed false relation at the last sample: X_T[i*] is wrong in one element, the trace
    is committed honestly over the changed state (all Merkle proofs hold), and the reveal is one
    whose last sample, and no other, is the false relation (T-1, i*)."""
    n, T = params.n, params.T
    states = honest.states.copy()
    i_bad = 7 % n
    states[T, i_bad, 0] ^= 0x01
    tr = CpuTrace.from_states(params, states)
    target = (T - 1, i_bad)
    last = struct.pack("<I", k - 1)
    for x in range(1 << 24):  # expected about T*n tries of one hash each
        reveal = hashlib.sha256(b"bench-cheat-reveal" + x.to_bytes(4, "little")).digest()
        d = hashlib.sha256(SAMPLE_DOMAIN + tr.root + reveal + last).digest()
        if (int.from_bytes(d[0:8], "little") % T, int.from_bytes(d[8:16], "little") % n) != target:
            continue
        if derive_samples(tr.root, reveal, k, T, n).count(target) == 1:
            op = build_openings(tr, reveal, k)
            return encode_proof_file(ProofFile(params, k, tr.root, tr.digests[-1], reveal, op)), target
    raise RuntimeError("no reveal put the false relation at the last sample")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--m", type=int, default=4)
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument("--T", type=int, default=8, help="steps of the proved chain (>= m uses every B)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    pin = _pin_one_core()
    print(
        f"CPU verifier benchmark: n={args.n} m={args.m} k={args.k} T={args.T}; {_cpu_name()}, "
        f"{os.cpu_count()} cores, {pin}; numpy {np.__version__}"
    )

    params = ChallengeParams(hashlib.sha256(b"gpow-bench-verify").digest(), bytes(32), bytes([1]) * 32, args.n, args.T, args.m)
    t0 = time.perf_counter()
    trace = CpuEngine().prove(params)
    prove_s = time.perf_counter() - t0
    reveal = hashlib.sha256(b"gpow-bench-reveal").digest()
    pf = ProofFile(params, args.k, trace.root, trace.digests[-1], reveal, build_openings(trace, reveal, args.k))
    valid = encode_proof_file(pf)
    print(
        f"proved the chain in {prove_s:.1f} s (numpy engine, one core); proof file {len(valid)} bytes, "
        f"{len(pf.openings.rows)} rows, {len(pf.openings.digests)} digests"
    )

    rng = np.random.default_rng(1)
    rand = lambda size: rng.bytes(size)  # noqa: E731
    last_key = _last_sample_row(pf)
    last_t = pf.openings.samples[-1][0]

    def junk_random_content() -> bytes:
        op = pf.openings
        # The opened d_T is copied from the commitment, as a forger would, so it gets past phase 0.
        ds = {
            s: DigestOpening(pf.d_T if s == params.T else rand(32), tuple(rand(32) for _ in d.proof))
            for s, d in op.digests.items()
        }
        rows = {key: RowOpening(rand(len(r.row)), tuple(rand(32) for _ in r.path)) for key, r in op.rows.items()}
        return encode_proof_file(dataclasses.replace(pf, openings=Openings(op.samples, ds, rows)))

    def junk_row(change: Callable[[RowOpening], RowOpening]) -> bytes:
        rows = dict(pf.openings.rows)
        rows[last_key] = change(rows[last_key])
        return encode_proof_file(_with_rows(pf, rows))

    def junk_top_proof() -> bytes:
        s = last_t + 1
        ds = dict(pf.openings.digests)
        d = ds[s]
        ds[s] = DigestOpening(d.digest, d.proof[:-1] + (_flip(d.proof[-1]),))
        return encode_proof_file(dataclasses.replace(pf, openings=dataclasses.replace(pf.openings, digests=ds)))

    t0 = time.perf_counter()
    cheat, target = _cheat_proof(params, trace, args.k)
    cheat_s = time.perf_counter() - t0
    cases: list[tuple[str, bytes, str]] = [
        ("valid proof (accept)", valid, "valid"),
        ("random bytes (same size)", rand(len(valid)), "format"),
        ("random hashes and rows, right layout", junk_random_content(), "top-proof"),
        ("wrong root (one bit)", encode_proof_file(dataclasses.replace(pf, root=_flip(pf.root))), "sample-mismatch"),
        ("last sample: row one byte short", junk_row(lambda r: RowOpening(r.row[:-1], r.path)), "row-length"),
        ("last sample: bad top proof", junk_top_proof(), "top-proof"),
        ("last sample: bad Merkle path", junk_row(lambda r: RowOpening(r.row, (_flip(r.path[0]),) + r.path[1:])), "row-path"),
        ("last sample: wrong row (one byte)", junk_row(lambda r: RowOpening(_flip(r.row, 9), r.path)), "row-path"),
        (f"last sample: committed false relation {target}", cheat, "relation"),
    ]
    results: list[dict[str, Any]] = []
    bad = 0
    for name, raw, want in cases:
        verdict, tm = _median_timings(raw, args.repeat)
        ok = verdict == want if want in ("valid", "format") else verdict.endswith(f": {want}")
        bad += not ok
        results.append(
            {
                "case": name,
                "verdict": verdict,
                "expected": want,
                "as_expected": ok,
                "seconds": {k: round(v, 6) for k, v in tm.items()},
            }
        )
    base = results[0]["seconds"]["total"]
    print(f"\nmedian of {args.repeat} runs, seconds (decode + verify = what `gpow pow verify` costs):")
    print(f"{'case':44} {'verdict':32} {'decode':>7} {'philox':>7} {'product':>7} {'hashing':>7} {'total':>7} {'vs valid':>8}")
    for r in results:
        s = r["seconds"]
        cols = " ".join(f"{s.get(k, 0.0):7.4f}" for k in ("decode", "philox", "products", "hashing", "total"))
        flag = "" if r["as_expected"] else f"   UNEXPECTED (wanted {r['expected']})"
        print(f"{r['case']:44} {r['verdict'][:32]:32} {cols} {100 * s['total'] / base:7.2f}%{flag}")
    v = results[0]["seconds"]
    print(
        f"\nvalid proof: verify {v['verify']:.3f} s (Philox {v['philox']:.3f}, products {v['products']:.3f}, "
        f"hashing {v['hashing']:.3f}) + decode {v['decode']:.3f} s; target < 1 s: "
        f"{'met' if v['total'] < 1.0 else 'MISSED'}"
    )
    print(f"(building the false-relation proof took {cheat_s:.1f} s, not counted)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "n": args.n,
                    "m": args.m,
                    "k": args.k,
                    "T": args.T,
                    "repeat": args.repeat,
                    "cpu": _cpu_name(),
                    "cores": os.cpu_count(),
                    "pinning": pin,
                    "prove_seconds": round(prove_s, 3),
                    "proof_bytes": len(valid),
                    "results": results,
                },
                indent=2,
            )
        )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
