"""``gpow status``: what a node is doing, read from its status file and (validators) its ledger.

Works on a stopped node too (it says how old the status file is). Every table ends with a legend of
the marks and reason codes it shows, so an operator never has to guess what ``-`` means.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from node.app.config import ConfigError, load_config
from node.clock import now_ms
from node.roles import verdicts as R

# One line per verdict reason (node/roles/verdicts.py is the vocabulary; a test keeps them in step).
REASON_HELP: dict[str, str] = {
    R.PASSED: "the answer was right and in time",
    R.FALSE_PROOF: "a wrong answer (a relation, Merkle path or format did not hold): banned for ban_seconds",
    R.LATE_COMMITMENT: "the signed commitment came after its deadline",
    R.MISSING_COMMITMENT: "no commitment at all (unreachable, refused, crashed; the detail says which)",
    R.LATE_OPENINGS: "the openings came after their deadline (counted from the reveal)",
    R.MISSING_OPENINGS: "no openings at all after the reveal",
    R.CO_SCHEDULED_TIMEOUT: "late while challenged together with executors that could share its GPU",
    R.WRONG_EXECUTOR: "answered by another executor's key",
    R.WRONG_SIGNER: "signed by a key that is no known executor",
    R.REPLAY: "the commitment belongs to another challenge",
    R.BAD_SIGNATURE: "a signature did not verify",
    R.SLOW_FOR_PROFILE: "correct, but slower than its GPU model's profile allows (x tolerance)",
    R.UNKNOWN_PROFILE: "no measured profile for its GPU model at this matrix size, so its speed cannot be judged "
    "(CPU executors and unlisted GPUs; add the model to configs/gpu_profiles.toml)",
    R.CLAIM_MISMATCH: "its claims contradict each other (a CPU engine claiming a GPU, too little memory): not challenged",
    R.NO_CREDIT: "passed but earns nothing: probation, an estimated profile, or a challenge too short to time",
    R.DUPLICATE_GPU: "its GPU UUID is also reported by another live executor (two identities, one GPU)",
    R.DUPLICATE_ROSTER: "listed by two miners at once",
    R.TIMED_OUT_AT_RESTART: "the validator stopped during the challenge; recorded, never scored",
    R.BEACON_UNKNOWN: "the executor did not know this round's beacon yet and refused; no verdict (check its clock and gossip)",
}


def short(peer_id: str) -> str:
    """Peer ids share their first characters (the key type prefix); the tail tells them apart."""
    return "…" + peer_id[-8:] if len(peer_id) > 12 else peer_id


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _legend(con: Console, reasons: set[str], marks: list[str]) -> None:
    lines = list(marks)
    for r in sorted({R.reason_kind(x) for x in reasons if x}):
        if r in REASON_HELP:
            lines.append(f"{r}: {REASON_HELP[r]}")
    for line in lines:
        con.print(f"  [dim]{escape(line)}[/]", highlight=False)


def _reasons_of(text: str) -> set[str]:
    return {R.reason_kind(r) for r in text.split(",") if r and r != "pass"}


def read_status(data_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    status: dict[str, Any] = {}
    status_file = data_dir / "status.json"
    if status_file.exists():
        try:
            status = json.loads(status_file.read_text())
        except ValueError:
            raise ConfigError(
                f"{status_file} is not a status file written by gpow (not JSON); is --data-dir the node's data dir?"
            ) from None
    rows: list[dict[str, Any]] = []
    ledger_path = data_dir / "ledger.sqlite3"
    if ledger_path.exists():
        from node.roles.ledger import Ledger

        ledger = Ledger(ledger_path)
        try:
            rows = ledger.executor_table(now_ms())
        finally:
            ledger.close()
    return status, rows


def status_main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config) if args.config else None  # a bad file: one line and exit 2 (cli)
    data_dir = Path(args.data_dir or (cfg.node.data_dir if cfg else "gpow-data"))
    status, table_rows = read_status(data_dir)
    if not status and not table_rows:
        print(
            f"gpow status: nothing found in {data_dir} (no status.json, no ledger); is this the node's data dir? "
            "(pass --config FILE or --data-dir DIR)",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps({"status": status, "executors": table_rows}, default=str, indent=1))
        return 0
    con = console()
    if status:
        _header(con, status)
    role = status.get("role")
    if role == "miner":
        _miner(con, status.get("miner") or {})
    elif role == "executor":
        _executor(con, status.get("executor") or {})
    val = status.get("validator") or {}
    if table_rows or val:
        _validator(con, val, table_rows)
    _agreed(con, status)
    return 0


def console() -> Console:
    """A terminal's own width; without one (a pipe, a log, ssh without a tty) wide enough that no
    column is cut (rich would assume 80)."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _header(con: Console, status: dict[str, Any]) -> None:
    age = (time.time() * 1000 - status.get("updated_ms", 0)) / 1000
    net = status.get("net") or {}
    rtt = ""
    if net.get("rtt_ms_median") is not None:
        rtt = f"; link RTT median {net['rtt_ms_median']:.1f} ms, max {net.get('rtt_ms_max', 0):.1f} ms"
    con.print(
        f"[bold]{status.get('role', '?')}[/] {status.get('peer_id', '')}  listen {status.get('listen', '')}  "
        f"peers {len(status.get('peers', {}))}{rtt}  (status {age:.0f} s old"
        f"{'; the node may be stopped' if age > 10 else ''})",
        highlight=False,
    )
    ag = status.get("agreement") or {}
    vs = ag.get("validator_set")
    if vs:
        members = ", ".join(short(v) for v in vs.get("validators", [])) or "none"
        con.print(
            f"validator set: {vs.get('source')}"
            + (f" v{vs['version']}" if vs.get("version") is not None else "")
            + f"; members {members}; challenges refused from outside it {vs.get('refused', 0)}",
            highlight=False,
        )
    rounds = ag.get("rounds") or {}
    if rounds.get("enabled"):
        con.print(
            f"rounds: round {rounds.get('round')}, next in {rounds.get('next_round_in_s')} s; beacon {rounds.get('beacon')}",
            highlight=False,
        )


def _miner(con: Console, m: dict[str, Any]) -> None:
    local, remote = m.get("local_executors") or {}, m.get("remote_executors") or {}
    st = m.get("stats") or {}
    con.print(
        f"challenges routed {st.get('challenges_routed', 0)}, reveals routed {st.get('reveals_routed', 0)}, "
        f"remote registrations {st.get('registered', 0)}, dropped {st.get('dropped', 0)}, refused {st.get('refused', 0)}",
        highlight=False,
    )
    t = Table(title=f"this miner's executors ({len(local)} local, {len(remote)} remote)")
    for c in ("executor", "where", "model", "busy", "challenges", "commitments", "openings", "refused", "last heartbeat"):
        t.add_column(c)
    for eid, e in sorted(local.items()):
        t.add_row(
            short(eid),
            "local",
            str(e.get("model", "-")),
            "yes" if e.get("busy") else "no",
            str(e.get("challenges", 0)),
            str(e.get("commitments", 0)),
            str(e.get("openings", 0)),
            str(e.get("refused", 0)),
            "-",
        )
    for eid, e in sorted(remote.items()):
        t.add_row(
            short(eid),
            "remote",
            "-",
            "yes" if e.get("busy") else "no",
            "-",
            "-",
            "-",
            "-",
            f"{e.get('last_heartbeat_age_s', '?')} s ago",
        )
    con.print(t)
    if not local and not remote:
        con.print(
            "  [yellow]no executors: a CPU miner runs cpu_executors local ones; a GPU miner one per visible GPU; "
            "remote executors register with `gpow run --role executor --miner ws://THIS_MINER`[/]"
        )
    _legend(con, set(), ["-: counted by the remote executor itself (see its own `gpow status`), or not applicable"])


def _executor(con: Console, e: dict[str, Any]) -> None:
    miner = e.get("miner")
    state = (
        f"registered with miner {miner}"
        if e.get("registered")
        else (
            f"connected to miner {miner}, not registered yet"
            if miner
            else "[yellow]not connected to its miner[/] (check [executor].miner and that the miner runs; the node log says why)"
        )
    )
    con.print(
        f"{state}; challenges {e.get('challenges', 0)}, commitments {e.get('commitments', 0)}, openings "
        f"{e.get('openings', 0)}, answered busy {e.get('busy', 0)}, refused {e.get('refused', 0)}",
        highlight=False,
    )


def _validator(con: Console, val: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    st = val.get("stats") or {}
    if st:
        con.print(
            f"challenges issued {st.get('issued', 0)}, verdicts {st.get('verdicts', 0)} "
            f"(passed {st.get('passed', 0)}, failed {st.get('failed', 0)}), answered busy {st.get('busy', 0)}, "
            f"in flight {val.get('in_flight_groups', 0)} groups; audits {st.get('audits', 0)} "
            f"({st.get('audit_disagreements', 0)} disagreeing)",
            highlight=False,
        )
    stalls = val.get("loop_stalls") or {}
    if st.get("timing_stalls") or stalls.get("longest_s", 0) >= 0.1:
        con.print(
            f"[yellow]this validator's event loop stalled[/] {stalls.get('count', 0)} times "
            f"(longest {stalls.get('longest_s', 0)} s); {st.get('timing_stalls', 0)} challenges left unjudged "
            "for it (give the validator a core of its own)",
            highlight=False,
        )
    known = val.get("executors") or {}
    rtt = val.get("rtt_s") or {}
    seen: set[str] = set(st.get("reasons") or {})
    t = Table(title="executors (scores from this validator's ledger; model and RTT from the live node)")
    for c in (
        "executor",
        "miner",
        "model",
        "RTT ms",
        "passes",
        "fails",
        "pass rate",
        "perf factor",
        "score",
        "GiB proven",
        "weighted",
        "last verdict",
        "banned",
        "flags",
    ):
        t.add_column(c)
    by_id = {r["executor"]: r for r in rows}
    for eid in sorted(set(by_id) | set(known)):
        r, e = by_id.get(eid), known.get(eid, {})
        marks = []
        if e.get("duplicate_of"):
            marks.append("duplicate-gpu with " + ", ".join(short(d) for d in e["duplicate_of"]))
        if e.get("listed_by"):
            marks.append("listed by miners " + ", ".join(short(m) for m in e["listed_by"]))
        rtt_s = rtt.get(eid[-8:])
        last = (r["last_verdict"] if r else "") or ""
        seen |= _reasons_of(last)
        t.add_row(
            short(eid),
            short(r["miner"] if r else e.get("miner", "")),
            str(e.get("model", "-")),
            _ms(rtt_s),
            *(
                (
                    str(r["passes"]),
                    str(r["fails"]),
                    f"{r['pass_rate']:.2f}",
                    f"{r['perf_factor']:.2f}",
                    f"{r['score']:.2f}",
                    f"{r.get('proven_bytes', 0) / 2**30:.2f}",
                    f"{r.get('weighted_score', 0.0):.2f}",
                )
                if r
                else ("-",) * 7
            ),
            last or "-",
            (r or {}).get("banned") or "-",
            "; ".join(marks) or "-",
        )
    con.print(t)
    _legend(
        con,
        seen,
        [
            (
                "-: no value yet (no verdict, no ping answered, no model: the node is stopped or has not "
                "seen the executor's roster entry), no ban, or no flag"
            ),
            "RTT: signed ping to the executor along the challenge path (rtt_margin_s is allowed for it)",
            (
                "score: pass rate x perf factor over the scoring window; perf factor: profile time / measured "
                "time, 0 when there is no profile to time against (unknown-profile: correctness only)"
            ),
            (
                "GiB proven: the pool of its latest credited pass; weighted: score x GiB proven (a card that "
                "proves twice the memory counts twice)"
            ),
        ],
    )


def _agreed(con: Console, status: dict[str, Any]) -> None:
    agreed = (status.get("agreement") or {}).get("agreed_scores", {})
    if not agreed:
        return
    t = Table(title="agreed scores (median over validators of their pass rates)")
    for c in ("executor", "agreed score", "verdicts", "validators: pass rate"):
        t.add_column(c)
    for eid, a in sorted(agreed.items()):
        score = "-" if a["score"] is None else f"{a['score']:.2f}"
        t.add_row(
            short(eid), score, str(a["verdicts"]), ", ".join(f"{short(v)}: {r:.2f}" for v, r in sorted(a["validators"].items()))
        )
    con.print(t)
    _legend(con, set(), ["agreed score -: fewer validators than [rounds].min_validators have judged it in the window"])
