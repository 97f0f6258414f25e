"""``gpow attest``: a signed attestation of the local GPUs, the input of the validators' profiles.

For every visible GPU: its facts (model, UUID, PCI bus id, memory, driver and CUDA versions, SM
count) and the measured steady-state step time of the GPU engine at n = 4096 and 8192 (a short
chain each, CUDA events). The body is canonical JSON (sorted keys, no spaces); the signature is
Ed25519 over ``b"gpow.gpu-attestation.v1" || body`` by the given key (node.identity, imported
only here, at the command's entry).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import cupy as cp

from node.clock import now_ms
from node.gpu.engine import GpuEngine
from node.gpu.facts import gpu_facts
from node.pow.engine import ChallengeParams

__all__ = ["ATTEST_DOMAIN", "measure_steps", "attestation_body", "attest_main"]

ATTEST_DOMAIN = b"gpow.gpu-attestation.v1"
SIZES = (4096, 8192)
STEPS = 24


def measure_steps(device_id: int, sizes: tuple[int, ...] = SIZES, steps: int = STEPS) -> list[dict[str, Any]]:
    engine = GpuEngine(device_id=device_id)
    out = []
    for n in sizes:
        params = ChallengeParams(bytes([n & 0xFF]) * 32, bytes(32), bytes(32), n, steps, 4)
        engine.release(engine.prove(ChallengeParams(bytes(32), bytes(32), bytes(32), n, 2, 4)))  # warm-up
        tr = engine.prove(params)
        out.append({"n": n, "T": steps, "m": 4, "step_seconds": tr.timing["step_s"], "variant": tr.variant})
        engine.release(tr)
    engine.close()
    return out


def attestation_body(peer_id: str, now_ms: int) -> dict[str, Any]:
    gpus = []
    for d in range(cp.cuda.runtime.getDeviceCount()):
        f = gpu_facts(d).to_dict()
        f["steps"] = measure_steps(d)
        gpus.append(f)
    return {"format": "gpow-gpu-attestation", "v": 1, "peer_id": peer_id, "created_ms": now_ms, "gpus": gpus}


def attest_main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from node.identity import Identity, load_key_file

    ident = load_key_file(Path(args.key)) if args.key else Identity.generate()
    body = attestation_body(ident.peer_id, now_ms())
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    doc = {"body": body, "signature": ident.sign(ATTEST_DOMAIN + raw).hex(), "public_key": ident.public_key.hex()}
    text = json.dumps(doc, indent=1, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--key")
    ap.add_argument("--out")
    sys.exit(attest_main(ap.parse_args()))
