"""``gpow pow prove`` and ``gpow pow verify``: the standalone tools (the parser lives in node/cli.py).

Exit codes: 0 success (for verify: the proof is valid), 1 the proof is invalid or malformed,
2 bad arguments or unreadable input, 3 the engine is unavailable or the challenge does not fit it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from node.pow.chain import sample_commit
from node.pow.engine import ChallengeParams, Engine, EngineCapacityError

__all__ = ["prove_main", "verify_main", "make_engine"]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_ENGINE = 3


class _UsageError(Exception):
    pass


def _hex32(value: str | None, name: str, default: bytes | None = None) -> bytes:
    if value is None:
        if default is None:
            raise _UsageError(f"--{name} is required")
        return default
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise _UsageError(f"--{name}: not a hex string: {value!r}") from None
    if len(raw) != 32:
        raise _UsageError(f"--{name}: must be 32 bytes (64 hex digits), got {len(raw)} bytes")
    return raw


def make_engine(kind: str) -> Engine:
    """``cpu`` -> the numpy engine; ``gpu`` -> node.gpu.engine.GpuEngine, imported only now."""
    if kind == "cpu":
        from node.pow.cpu_engine import CpuEngine

        return CpuEngine()
    if kind == "gpu":
        try:
            from node.gpu.engine import GpuEngine

            return GpuEngine()
        except Exception as exc:  # ImportError, or CUDA failing on import or when the engine opens
            raise RuntimeError(f"the GPU engine is unavailable: {type(exc).__name__}: {exc}") from exc
    raise _UsageError(f"unknown engine {kind!r} (cpu or gpu)")


class _Progress:
    """Step counter on stderr: silent for the first second, then at most two updates a second."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.shown = False
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        el = now - self.t0
        if el < 1.0 or (now - self.last < 0.5 and done != total):
            return
        self.last = now
        rate = done / el if el > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        line = f"{self.label}: step {done}/{total} ({100 * done / total:.0f}%), {el:.1f} s, eta {eta:.1f} s"
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _params_json(p: ChallengeParams) -> dict[str, Any]:
    return {"seed": p.seed.hex(), "validator": p.validator.hex(), "executor": p.executor.hex(), "n": p.n, "T": p.T, "m": p.m}


def prove_main(args: argparse.Namespace, engine_factory: Callable[[str], Engine] = make_engine) -> int:
    """Run a chain, print its commitment; with --reveal, --samples and --out also write a proof file."""
    from node.pow.openings import ProofFile, build_openings, encode_proof_file

    try:
        seed = _hex32(args.seed, "seed")
        zero = bytes(32)
        validator = _hex32(getattr(args, "validator", None), "validator", zero)
        executor = _hex32(getattr(args, "executor", None), "executor", zero)
        try:
            params = ChallengeParams(
                seed, validator, executor, int(args.n), int(args.steps), int(getattr(args, "b_matrices", 1) or 1)
            )
        except ValueError as exc:
            raise _UsageError(str(exc)) from None
        reveal_hex, k, out = getattr(args, "reveal", None), getattr(args, "samples", None), getattr(args, "out", None)
        proof_wanted = [x is not None for x in (reveal_hex, k, out)]
        if any(proof_wanted) and not all(proof_wanted):
            raise _UsageError("a proof file needs all of --reveal, --samples and --out")
        reveal = _hex32(reveal_hex, "reveal") if reveal_hex is not None else None
        if k is not None and k < 1:
            raise _UsageError(f"--samples must be >= 1, got {k}")
        engine = engine_factory(getattr(args, "engine", "cpu") or "cpu")
    except _UsageError as exc:
        print(f"gpow pow prove: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:
        print(f"gpow pow prove: {exc}", file=sys.stderr)
        return EXIT_ENGINE

    try:
        engine.check_fits(params)
    except EngineCapacityError as exc:
        print(f"gpow pow prove: refused: {exc}", file=sys.stderr)
        return EXIT_ENGINE

    progress = _Progress(sys.stderr, f"proving n={params.n} T={params.T} on {engine.kind}")
    t0 = time.perf_counter()
    trace = engine.prove(params, progress)
    seconds = time.perf_counter() - t0
    progress.finish()
    try:
        result: dict[str, Any] = {
            "params": _params_json(params),
            "engine": engine.kind,
            "root": trace.root.hex(),
            "d_T": trace.digests[-1].hex(),
            "digests": [d.hex() for d in trace.digests],
            "seconds": round(seconds, 6),
        }
        if reveal is not None and k is not None and out is not None:
            openings = build_openings(trace, reveal, k)
            raw = encode_proof_file(ProofFile(params, k, trace.root, trace.digests[-1], reveal, openings))
            Path(out).write_bytes(raw)
            result.update(
                k=k,
                reveal=reveal.hex(),
                sample_commit=sample_commit(reveal).hex(),
                samples=[list(s) for s in openings.samples],
                proof_file=str(out),
                proof_bytes=len(raw),
            )
    finally:
        engine.release(trace)

    if getattr(args, "json", False):
        print(json.dumps(result))
    else:
        p = params
        print(f"chain n={p.n} T={p.T} m={p.m} on {engine.kind}: {seconds:.3f} s ({seconds / p.T * 1e3:.2f} ms/step)")
        print(f"  root R = {result['root']}")
        print(f"  d_T    = {result['d_T']}")
        if "proof_file" in result:
            print(f"  proof file {result['proof_file']}: k={k} samples, {result['proof_bytes']} bytes")
    return EXIT_OK


def verify_main(args: argparse.Namespace) -> int:
    """Verify a proof file; print the verdict; exit 0 only for a valid proof."""
    from node.pow.openings import ProofFormatError, decode_proof_file
    from node.pow.verifier import verify

    as_json = bool(getattr(args, "json", False))
    try:
        raw = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"gpow pow verify: cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        pf = decode_proof_file(raw)
    except ProofFormatError as exc:
        if as_json:
            print(
                json.dumps(
                    {"ok": False, "file": str(args.file), "failures": [{"sample": -1, "check": "format", "message": str(exc)}]}
                )
            )
        else:
            print(f"INVALID {args.file}: malformed proof file: {exc}")
        return EXIT_INVALID
    res = verify(pf.params, pf.k, pf.root, pf.d_T, pf.reveal, pf.openings)
    if as_json:
        print(
            json.dumps(
                {
                    "ok": res.ok,
                    "file": str(args.file),
                    "params": _params_json(pf.params),
                    "k": pf.k,
                    "root": pf.root.hex(),
                    "d_T": pf.d_T.hex(),
                    "failures": [{"sample": f.sample, "check": f.check, "message": f.message} for f in res.failures],
                    "timings": {k: round(v, 6) for k, v in res.timings.items()},
                }
            )
        )
    else:
        p = pf.params
        verdict = "VALID" if res.ok else "INVALID"
        print(f"{verdict} {args.file}: n={p.n} T={p.T} m={p.m} k={pf.k}, checked in {res.timings['total']:.3f} s")
        for f in res.failures:
            print(f"  rejected: {f}")
    return EXIT_OK if res.ok else EXIT_INVALID
