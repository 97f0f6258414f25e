"""``gpow status``: what a node is doing, read from its status file and (validators) its ledger."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from node.app.config import ConfigError, load_config


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
        ag = status.get("agreement", {})
        vs = ag.get("validator_set")
        if vs:
            members = ", ".join(short(v) for v in vs.get("validators", [])) or "-"
            con.print(f"validator set: {vs.get('source')}"
                      + (f" v{vs['version']}" if vs.get("version") is not None else "")
                      + f"; members {members}; refused {vs.get('refused', 0)}")
        rounds = ag.get("rounds", {})
        if rounds.get("enabled"):
            con.print(f"rounds: round {rounds.get('round')}, next in {rounds.get('next_round_in_s')} s; beacon {rounds.get('beacon')}")
        val = status.get("validator")
        if val:
            st = val.get("stats", {})
            con.print(f"challenges issued {st.get('issued', 0)}, verdicts {st.get('verdicts', 0)} "
                      f"(passed {st.get('passed', 0)}, failed {st.get('failed', 0)}), busy {st.get('busy', 0)}, "
                      f"in flight {val.get('in_flight_groups', 0)} groups; audits {st.get('audits', 0)} "
                      f"({st.get('audit_disagreements', 0)} disagreeing); reasons {st.get('reasons', {})}")
    flags = {}
    for eid, e in (status.get("validator", {}) or {}).get("executors", {}).items():
        marks = []
        if e.get("duplicate_of"):
            marks.append("duplicate-gpu with " + ", ".join(short(d) for d in e["duplicate_of"]))
        if e.get("listed_by"):
            marks.append("listed by miners " + ", ".join(short(m) for m in e["listed_by"]))
        flags[eid] = "; ".join(marks)
    if table_rows:
        t = Table(title="executors (this validator's ledger)")
        for c in ("executor", "miner", "passes", "fails", "pass rate", "perf factor", "score", "last verdict", "banned", "flags"):
            t.add_column(c)
        for r in table_rows:
            d = r if isinstance(r, dict) else vars(r)
            t.add_row(short(d["executor"]), short(d["miner"]), str(d["passes"]), str(d["fails"]), f"{d['pass_rate']:.2f}",
                      f"{d['perf_factor']:.2f}", f"{d['score']:.2f}", str(d["last_verdict"]), str(d["banned"]),
                      flags.get(d["executor"], ""))
        con.print(t)
    agreed = (status.get("agreement") or {}).get("agreed_scores", {})
    if agreed:
        t = Table(title="agreed scores (median over validators of their pass rates)")
        for c in ("executor", "agreed score", "verdicts", "validators: pass rate"):
            t.add_column(c)
        for eid, a in sorted(agreed.items()):
            score = "-" if a["score"] is None else f"{a['score']:.2f}"
            t.add_row(short(eid), score, str(a["verdicts"]), ", ".join(f"{short(v)}: {r:.2f}" for v, r in sorted(a["validators"].items())))
        con.print(t)
    return 0


def short(peer_id: str) -> str:
    """Peer ids share their first characters (the key type prefix); the tail tells them apart."""
    return "…" + peer_id[-8:] if len(peer_id) > 12 else peer_id
