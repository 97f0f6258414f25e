"""The flags of ``gpow run`` (and the global logging flags), in one place: ``gpow`` and every other
program that starts a node the way users do (the harness's adversaries) parse them alike."""

from __future__ import annotations

import argparse


def add_global_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    p.add_argument("--log-level", default=None, help="debug, info, warning or error (default: info)")


def add_run_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("--role", choices=["validator", "miner", "executor"], help="overrides [node].role")
    r.add_argument("--config", help="TOML config file (see configs/)")
    r.add_argument("--listen", help="HOST:PORT to listen on (overrides [net].listen_host/listen_port)")
    r.add_argument(
        "--bootstrap", action="append", type=ws_addr, help="ws://HOST:PORT of a peer (repeatable; overrides [net].bootstrap)"
    )
    r.add_argument(
        "--advertise",
        action="append",
        type=ws_addr,
        metavar="ws://HOST:PORT",
        help="the address other hosts dial to reach this node (repeatable; overrides [net].advertise_addrs); "
        "required when listening on 0.0.0.0",
    )
    r.add_argument("--data-dir", help="overrides [node].data_dir")
    r.add_argument("--key-file", help="overrides [node].key_file")
    r.add_argument("--engine", choices=["cpu", "gpu"], help="overrides [miner].engine / [executor].engine")
    r.add_argument(
        "--allow-executor",
        action="append",
        metavar="PEER_ID",
        help="a miner: a remote executor allowed to register (repeatable; adds to [miner].remote_executors)",
    )
    r.add_argument("--miner", type=ws_addr, help="ws://HOST:PORT of the miner an executor registers with")
    r.add_argument("--network", help="network id (overrides [net].network)")
    r.add_argument("--metrics-port", type=port, help="serve Prometheus metrics on this port (overrides [node].metrics_port)")
    r.add_argument(
        "--metrics-host", help="address the metrics endpoint listens on (default 127.0.0.1; overrides [node].metrics_host)"
    )
    r.add_argument(
        "--open-admission",
        action="store_true",
        help="admit ANY validator (test networks only; overrides [admission] with open = true)",
    )


def ws_addr(text: str) -> str:
    """argparse type: a ws://HOST:PORT address (a bare HOST:PORT would never be dialled)."""
    from node.net.peerstore import valid_ws_addr

    if not valid_ws_addr(text):
        raise argparse.ArgumentTypeError(
            f"expected ws://HOST:PORT, got {text!r}" + (f" (did you mean ws://{text}?)" if "://" not in text else "")
        )
    return text


def port(text: str) -> int:
    """argparse type: a TCP port 0..65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0..65535, got {text!r}")
    return int(text)
