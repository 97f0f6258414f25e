"""The ``gpow`` command: parses flags and calls into the package. Nothing else lives here."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from node import __version__
from node.app.runner_args import add_global_arguments, add_run_arguments
from node.logs import setup_logging


def _lazy(target: str) -> Callable[[argparse.Namespace], int]:
    """Import a handler only when its command runs, so `gpow keygen` does not load numpy or cupy."""

    def run(args: argparse.Namespace) -> int:
        module, _, name = target.partition(":")
        handler = getattr(importlib.import_module(module), name)  # a missing CuPy: exit 3 in main
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


def _adversary_kinds() -> str:
    from node.harness.adversaries import ADVERSARIES

    return ", ".join(ADVERSARIES)


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpow", description="gpow: a peer-to-peer network that proves GPUs are real")
    p.add_argument("--version", action="version", version=f"gpow {__version__}")
    add_global_arguments(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    k = sub.add_parser("keygen", help="write a new Ed25519 node key (mode 0600) and print its peer id")
    k.add_argument("--out", required=True, help="key file to write")
    k.add_argument("--force", action="store_true", help="overwrite an existing key file")
    k.set_defaults(func=_keygen)

    r = sub.add_parser("run", help="run a node as validator, miner or executor")
    add_run_arguments(r)
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
    pr.set_defaults(func=_lazy("node.app.pow_tool:prove_main"))
    pv = pws.add_parser("verify", help="verify a proof file; exit 0 only if it is valid")
    pv.add_argument("file")
    pv.add_argument("--json", action="store_true")
    pv.set_defaults(func=_lazy("node.app.pow_tool:verify_main"))

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
    h.add_argument(
        "--cheaters",
        "--adversaries",
        dest="cheaters",
        default=None,
        help="comma-separated adversary kinds (kind or kind:arg): " + _adversary_kinds(),
    )
    h.add_argument(
        "--rounds",
        action="store_true",
        default=None,
        help="challenge in network-wide rounds from the validators' beacon, with an admitted set and agreed scores",
    )
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
    sign.add_argument(
        "--version", type=_non_negative_int, required=True, help="set version; nodes keep the highest they have seen"
    )
    sign.add_argument("--ttl-days", type=_positive_float, default=30.0, help="the set expires after this many days")
    sign.add_argument("--out", required=True, help="file to write (give it to validators as [admission].set_file)")
    sign.set_defaults(func=_lazy("node.roles.admission:sign_main"))
    show = adsub.add_parser("show", help="check and print a signed validator set")
    show.add_argument("file")
    show.add_argument("--authority", help="the peer id it must be signed by")
    show.set_defaults(func=_lazy("node.roles.admission:show_main"))

    i = sub.add_parser("init", help="create a node's directory: key (0600) and a commented config with the admission set")
    from node.app.init import add_init_arguments

    add_init_arguments(i)
    i.set_defaults(func=_lazy("node.app.init:init_main"))

    s = sub.add_parser("status", help="show a node's peers, executors and scores")
    s.add_argument("--config", help="the node's config file")
    s.add_argument("--data-dir", help="the node's data dir (overrides the config)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_lazy("node.app.status:status_main"))
    return p


# Exit codes, one place (README "Exit codes"); argparse itself exits 2 on bad flags.
EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # a check failed: an invalid proof, a failing harness run, nothing to show
EXIT_USAGE = 2  # flags, config, files or surroundings the user can fix; the message says what
EXIT_NO_GPU = 3  # a GPU command without CuPy or a usable CUDA device
EXIT_INTERNAL = 70  # a bug in gpow (EX_SOFTWARE): one line here, the traceback in a file
EXIT_INTERRUPTED = 130  # Ctrl-C


def _leaf(exc: BaseException) -> BaseException:
    """The one error inside (nested) exception groups of one member, as trio raises them."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def classify(exc: BaseException) -> tuple[int, str]:
    """Exit code and one-line message for an error that reached the top."""
    from node.app.config import ConfigError
    from node.app.errors import NodeStartError
    from node.identity import IdentityError
    from node.resources import ResourceError
    from node.wire.errors import WireError

    exc = _leaf(exc)
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in ("cupy", "cupy_backends", "pynvml"):
        return EXIT_NO_GPU, (
            "needs CuPy and a CUDA GPU; install the gpu extra (pip install 'gpow-node[gpu]') on a machine with one"
        )
    if type(exc).__module__.split(".")[0] in ("cupy", "cupy_backends", "pynvml"):
        return EXIT_NO_GPU, f"the CUDA stack is not usable here: {type(exc).__name__}: {exc}"
    if isinstance(exc, (ConfigError, IdentityError, ResourceError, NodeStartError, WireError)):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, OSError):
        what = f"{exc.strerror or exc}"
        if exc.filename is not None:
            what += f": {exc.filename}"
        return EXIT_USAGE, what
    return EXIT_INTERNAL, f"{type(exc).__name__}: {exc}"


def _report_internal(command: str, exc: BaseException, message: str) -> str:
    """Write the traceback of a bug to a file the user can attach to a report; returns its path."""
    import os
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix=f"gpow-crash-{os.getpid()}-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(f"gpow {__version__} {command}: {message}\n\n")
        f.write("".join(traceback.format_exception(exc)))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    setup_logging(args.log_level or "info", args.log_json)
    command = " ".join(
        c for c in (args.command, getattr(args, "pow_command", None), getattr(args, "admission_command", None)) if c
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one top-level handler: one line, a documented exit code
        if isinstance(_leaf(exc), KeyboardInterrupt):
            return EXIT_INTERRUPTED
        code, message = classify(exc)
        if code == EXIT_INTERNAL:
            path = _report_internal(command, exc, message)
            message = f"internal error (a bug in gpow; please report it with {path}): {message}"
        print(f"gpow {command}: {message}", file=sys.stderr)
        return code
