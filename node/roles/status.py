"""``gpow status``: what a node is doing, read from its status file and (validators) its ledger."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from node.config import ConfigError, load_config


def status_main(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config) if args.config else None
    except ConfigError as exc:
        print(f"gpow status: {exc}", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir or (cfg.node.data_dir if cfg else "gpow-data"))
    status_file = data_dir / "status.json"
    status = {}
    if status_file.exists():
        status = json.loads(status_file.read_text())
    table_rows = []
    ledger_path = data_dir / "ledger.sqlite3"
    if ledger_path.exists():
        from node.roles.ledger import Ledger

        ledger = Ledger(ledger_path)
        try:
            table_rows = ledger.executor_table(int(time.time() * 1000))
        finally:
            ledger.close()
    if not status and not table_rows:
        print(f"gpow status: nothing found in {data_dir} (no status.json, no ledger); is this the node's data dir?", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"status": status, "executors": [dict(r) if not isinstance(r, dict) else r for r in table_rows]}, default=str, indent=1))
        return 0
    con = Console()
    if status:
        age = (time.time() * 1000 - status.get("updated_ms", 0)) / 1000
        con.print(f"[bold]{status.get('role', '?')}[/] {status.get('peer_id', '')}  listen {status.get('listen', '')}  "
                  f"peers {len(status.get('peers', {}))}  (status {age:.0f} s old{'; node may be stopped' if age > 10 else ''})")
        val = status.get("validator")
        if val:
            con.print(f"in flight: {val.get('in_flight_groups', 0)} groups; stats: {val.get('stats', {})}")
    if table_rows:
        t = Table(title="executors (this validator's ledger)")
        cols = list(table_rows[0].keys()) if isinstance(table_rows[0], dict) else list(vars(table_rows[0]).keys())
        for c in cols:
            t.add_column(c)
        for r in table_rows:
            d = r if isinstance(r, dict) else vars(r)
            t.add_row(*[(f"{v:.3f}" if isinstance(v, float) else str(v)) for v in d.values()])
        con.print(t)
    return 0
