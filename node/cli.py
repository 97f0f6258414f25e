"""The ``gpow`` command: parses flags and calls into the package. Nothing else lives here."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Callable, Sequence

from node import __version__
from node.logs import setup_logging


def _lazy(target: str) -> Callable[[argparse.Namespace], int]:
    """Import a handler only when its command runs, so `gpow keygen` does not load numpy or cupy."""

    def run(args: argparse.Namespace) -> int:
        module, _, name = target.partition(":")
        try:
            handler = getattr(importlib.import_module(module), name)
        except ModuleNotFoundError as exc:
            if exc.name != "cupy":
                raise
            print(f"gpow {args.command}: needs CuPy and a CUDA GPU; install the gpu extra "
                  "(pip install 'gpow-node[gpu]') on a machine with one", file=sys.stderr)
            return 3
        return handler(args)

    return run


def _keygen(args: argparse.Namespace) -> int:
    from node.identity import Identity, IdentityError, write_key_file

    identity = Identity.generate()
    try:
        write_key_file(Path(args.out), identity, force=args.force)
    except IdentityError as exc:
        print(f"gpow keygen: {exc}", file=sys.stderr)
        return 2
    print(identity.peer_id)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpow", description="gpow: a peer-to-peer network that proves GPUs are real")
    p.add_argument("--version", action="version", version=f"gpow {__version__}")
    p.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    p.add_argument("--log-level", default=None, help="debug, info, warning or error (default: info)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    k = sub.add_parser("keygen", help="write a new Ed25519 node key (mode 0600) and print its peer id")
    k.add_argument("--out", required=True, help="key file to write")
    k.add_argument("--force", action="store_true", help="overwrite an existing key file")
    k.set_defaults(func=_keygen)

    r = sub.add_parser("run", help="run a node as validator, miner or executor")
    r.add_argument("--role", choices=["validator", "miner", "executor"], help="overrides [node].role")
    r.add_argument("--config", help="TOML config file (see configs/)")
    r.add_argument("--listen", help="HOST:PORT to listen on (overrides [net].listen_host/listen_port)")
    r.add_argument("--bootstrap", action="append", help="ws://HOST:PORT of a peer (repeatable; overrides [net].bootstrap)")
    r.add_argument("--data-dir", help="overrides [node].data_dir")
    r.add_argument("--key-file", help="overrides [node].key_file")
    r.add_argument("--engine", choices=["cpu", "gpu"], help="overrides [miner].engine / [executor].engine")
    r.add_argument("--miner", help="ws://HOST:PORT of the miner an executor registers with")
    r.add_argument("--network", help="network id (overrides [net].network)")
    r.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    r.set_defaults(func=_lazy("node.app.runner:run_main"))

    pw = sub.add_parser("pow", help="prove and verify the chain proof-of-work standalone")
    pws = pw.add_subparsers(dest="pow_command", metavar="SUBCOMMAND", required=True)
    pr = pws.add_parser("prove", help="run a chain and print its commitment (and write a proof file)")
    pr.add_argument("--seed", required=True, help="32-byte seed, hex")
    pr.add_argument("--n", type=int, required=True, help="matrix size (power of two, 64..16384)")
    pr.add_argument("--steps", type=int, required=True, help="T, the number of steps")
    pr.add_argument("--b-matrices", type=int, default=1, help="m, the number of B matrices (default 1)")
    pr.add_argument("--engine", choices=["cpu", "gpu"], default="cpu")
    pr.add_argument("--validator", help="validator public key, hex (default: 32 zero bytes)")
    pr.add_argument("--executor", help="executor public key, hex (default: 32 zero bytes)")
    pr.add_argument("--reveal", help="the validator's secret r, hex; with --samples and --out writes a proof file")
    pr.add_argument("--samples", type=int, help="k, rows to open")
    pr.add_argument("--out", help="proof file to write")
    pr.add_argument("--json", action="store_true", help="print a JSON object")
    pr.set_defaults(func=_lazy("node.pow.tool:prove_main"))
    pv = pws.add_parser("verify", help="verify a proof file; exit 0 only if it is valid")
    pv.add_argument("file")
    pv.add_argument("--json", action="store_true")
    pv.set_defaults(func=_lazy("node.pow.tool:verify_main"))

    b = sub.add_parser("bench", help="time the GPU engine's variants against bare cuBLAS")
    b.add_argument("--n", type=int, action="append", help="matrix size (repeatable; default 4096 and 8192)")
    b.add_argument("--steps", type=int, default=32, help="steps per timed chain")
    b.add_argument("--json", help="write the results as JSON to this file")
    b.set_defaults(func=_lazy("node.gpu.bench:bench_main"))

    a = sub.add_parser("attest", help="print a signed attestation of the local GPUs")
    a.add_argument("--key", help="key file to sign with (default: a fresh key)")
    a.add_argument("--out", help="write the attestation here")
    a.set_defaults(func=_lazy("node.gpu.attest:attest_main"))

    h = sub.add_parser("harness", help="run a local multi-node network as real processes")
    h.add_argument("--validators", type=int, default=None)
    h.add_argument("--miners", type=int, default=None)
    h.add_argument("--executors-per-miner", type=int, default=None)
    h.add_argument("--remote-executors", type=int, default=None)
    h.add_argument("--duration", type=float, default=None, help="seconds of challenging")
    h.add_argument("--engine", choices=["cpu", "gpu"], default=None)
    h.add_argument("--cheaters", default=None,
                   help="comma-separated cheater kinds: corrupt-rows, fake-model, partial-pool, replay, wrong-executor, foreign-key, "
                        "relay, zero-chain, grind-refs, shared-gpu, lying-validator[:always-pass|always-fail], unadmitted-validator")
    h.add_argument("--rounds", action="store_true", default=None,
                   help="challenge in network-wide rounds from the validators' beacon, with an admitted set and agreed scores")
    h.add_argument("--round-s", type=float, default=None, help="round length in rounds mode")
    h.add_argument("--report", default=None, help="write a JSON report here")
    h.add_argument("--config", default=None, help="harness TOML config (configs/harness.toml)")
    h.add_argument("--workdir", default=None, help="keep node keys, configs and logs here (default: a temp dir)")
    h.add_argument("--netns", action="store_true", help="multi-host mode in network namespaces (root)")
    h.set_defaults(func=_lazy("node.harness.main:harness_main"))

    ad = sub.add_parser("admission", help="sign or inspect an admitting authority's validator set")
    adsub = ad.add_subparsers(dest="admission_command", metavar="ACTION", required=True)
    sign = adsub.add_parser("sign", help="sign a validator set with the authority's key")
    sign.add_argument("--key", required=True, help="the authority's key file")
    sign.add_argument("--validator", action="append", required=True, help="an admitted validator peer id (repeatable)")
    sign.add_argument("--version", type=int, required=True, help="set version; nodes keep the highest they have seen")
    sign.add_argument("--ttl-days", type=float, default=30.0, help="the set expires after this many days")
    sign.add_argument("--out", required=True, help="file to write (give it to validators as [admission].set_file)")
    sign.set_defaults(func=_lazy("node.roles.admission:sign_main"))
    show = adsub.add_parser("show", help="check and print a signed validator set")
    show.add_argument("file")
    show.add_argument("--authority", help="the peer id it must be signed by")
    show.set_defaults(func=_lazy("node.roles.admission:show_main"))

    s = sub.add_parser("status", help="show a node's peers, executors and scores")
    s.add_argument("--config", help="the node's config file")
    s.add_argument("--data-dir", help="the node's data dir (overrides the config)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_lazy("node.app.status:status_main"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.log_level or "info", args.log_json)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
