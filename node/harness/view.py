"""The harness's live view (a terminal) and progress line (a pipe or a log)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text


def _gather(harness) -> tuple[list[dict], dict, int, int]:
    rows = []
    executors: dict = {}
    in_flight = verdicts = 0
    for n in harness.nodes:
        st = n.status() or {}
        rows.append({"name": n.name, "role": n.role, "kind": n.kind, "alive": n.alive(), "peers": len(st.get("peers", {}))})
        v = st.get("validator")
        if v:
            in_flight += v.get("in_flight_groups", 0)
            verdicts += v.get("stats", {}).get("verdicts", 0)
            for eid, e in v.get("executors", {}).items():
                slot = executors.setdefault(eid, {"challenges": 0, "last": ""})
                slot["challenges"] += e.get("challenges", 0)
                slot["last"] = e.get("last_verdict") or slot["last"]
    return rows, executors, in_flight, verdicts


def render_view(harness, elapsed: float, duration: float):
    rows, executors, in_flight, verdicts = _gather(harness)
    nodes = Table(title=f"nodes  ({elapsed:.0f}/{duration:.0f} s, {in_flight} challenge groups in flight, {verdicts} verdicts)")
    for c in ("node", "role", "kind", "up", "peers"):
        nodes.add_column(c)
    for r in rows:
        nodes.add_row(r["name"], r["role"], r["kind"], "yes" if r["alive"] else "[red]no[/]", str(r["peers"]))
    ex = Table(title="executors (as the validators see them)")
    for c in ("executor", "challenges", "last verdict"):
        ex.add_column(c)
    for eid, e in sorted(executors.items()):
        last = e["last"]
        ex.add_row(eid[-12:], str(e["challenges"]), Text(last or "-", style="green" if last == "pass" else ("red" if last else "")))
    return Group(nodes, ex)


def progress_line(harness, elapsed: float, duration: float) -> str:
    rows, executors, in_flight, verdicts = _gather(harness)
    up = sum(1 for r in rows if r["alive"])
    failing = sum(1 for e in executors.values() if e["last"] and e["last"] != "pass")
    return (f"[{elapsed:5.0f}/{duration:.0f} s] nodes up {up}/{len(rows)}, executors {len(executors)}, "
            f"in flight {in_flight}, verdicts {verdicts}, executors failing now {failing}")
