"""``python -m node.harness.adversaries --kind KIND [gpow run flags]``: a node that misbehaves in one
named way.

The harness starts its adversaries with this, the way ``gpow run`` starts honest nodes (same
config files, same flags), so nothing in the product can turn a node into one.
"""

from __future__ import annotations

import argparse
import sys

from node.app.runner_args import add_global_arguments, add_run_arguments
from node.harness.adversaries import ADVERSARIES, node_parts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m node.harness.adversaries", description=__doc__)
    ap.add_argument("--kind", required=True, help=f"adversary kind, optionally kind:arg ({', '.join(ADVERSARIES)})")
    add_global_arguments(ap)
    add_run_arguments(ap)
    args = ap.parse_args(argv)
    try:
        parts = node_parts(args.kind)
    except ValueError as exc:
        print(f"adversary: {exc}", file=sys.stderr)
        return 2
    from node.app.runner import run_main
    from node.logs import setup_logging

    setup_logging(args.log_level or "info", args.log_json)
    return run_main(args, parts)


if __name__ == "__main__":
    sys.exit(main())
