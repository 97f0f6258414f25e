"""The harness's live view (a terminal) and progress line (a pipe or a log).

Executors are named like the summary names them (the node that runs them, and its kind), and
their live state is what the honest validators see: an adversarial validator's view (a liar, or
one outside the admitted set whose challenges every executor refuses) is shown apart, never as
an honest executor's failure.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from node.harness.report import _executor_owners


def executor_labels(harness: Any) -> dict[str, tuple[str, str]]:
    """executor id -> (label as in the summary, kind); a node running several gets its id tail added."""
    owners = _executor_owners(harness)
    per_node: dict[str, int] = {}
    for name, _ in owners.values():
        per_node[name] = per_node.get(name, 0) + 1
    return {eid: (name if per_node[name] == 1 else f"{name} …{eid[-6:]}", kind) for eid, (name, kind) in owners.items()}


def _gather(harness: Any) -> tuple[list[dict], dict, dict, int, int]:
    rows = []
    executors: dict[str, dict] = {}
    adversaries: dict[str, dict] = {}
    in_flight = verdicts = 0
    for n in harness.nodes:
        st = n.status() or {}
        rows.append({"name": n.name, "role": n.role, "kind": n.kind, "alive": n.alive(), "peers": len(st.get("peers", {}))})
        v = st.get("validator")
        if not v:
            continue
        stats = v.get("stats", {})
        if n.kind != "honest":
            adversaries[n.name] = {
                "kind": n.kind,
                "issued": stats.get("issued", 0),
                "verdicts": stats.get("verdicts", 0),
                "refused": sum(c for r, c in (stats.get("reasons") or {}).items() if "unadmitted" in r),
            }
            continue
        in_flight += v.get("in_flight_groups", 0)
        verdicts += stats.get("verdicts", 0)
        for eid, e in v.get("executors", {}).items():
            slot = executors.setdefault(eid, {"challenges": 0, "last": "", "failing": 0})
            slot["challenges"] += e.get("challenges", 0)
            last = e.get("last_verdict") or ""
            slot["last"] = last or slot["last"]
            slot["failing"] += 1 if last and last != "pass" else 0
    return rows, executors, adversaries, in_flight, verdicts


def render_view(harness: Any, elapsed: float, duration: float) -> Group:
    rows, executors, adversaries, in_flight, verdicts = _gather(harness)
    labels = executor_labels(harness)
    nodes = Table(
        title=f"nodes  ({elapsed:.0f}/{duration:.0f} s, {in_flight} challenge groups in flight, "
        f"{verdicts} verdicts by honest validators)"
    )
    for c in ("node", "role", "kind", "up", "peers"):
        nodes.add_column(c)
    for r in rows:
        nodes.add_row(r["name"], r["role"], r["kind"], "yes" if r["alive"] else "[red]no[/]", str(r["peers"]))
    ex = Table(title="executors, as the honest validators see them (last verdict: pass, or the reason it failed)")
    for c in ("executor", "kind", "challenges", "last verdict"):
        ex.add_column(c)
    for eid, e in sorted(executors.items(), key=lambda kv: labels.get(kv[0], (kv[0], ""))[0]):
        label, kind = labels.get(eid, ("…" + eid[-8:], "?"))
        last = e["last"]
        # red only for an honest executor failing now; an adversary failing is the expected outcome
        style = "green" if last == "pass" else ("red" if last and kind == "honest" else ("yellow" if last else ""))
        ex.add_row(label, kind, str(e["challenges"]), Text(last or "-", style=style))
    parts: list[Any] = [nodes, ex]
    if adversaries:
        adv = Table(title="adversarial validators (their verdicts are judged separately)")
        for c in ("validator", "kind", "challenges issued", "refused as unadmitted"):
            adv.add_column(c)
        for name, a in sorted(adversaries.items()):
            adv.add_row(name, a["kind"], str(a["issued"]), str(a["refused"]))
        parts.append(adv)
    return Group(*parts)


def progress_line(harness: Any, elapsed: float, duration: float) -> str:
    rows, executors, _, in_flight, verdicts = _gather(harness)
    labels = executor_labels(harness)
    up = sum(1 for r in rows if r["alive"])
    failing = sorted(
        labels.get(eid, ("…" + eid[-8:], "?"))[0]
        for eid, e in executors.items()
        if e["last"] and e["last"] != "pass" and labels.get(eid, ("", "honest"))[1] == "honest"
    )
    return (
        f"[{elapsed:5.0f}/{duration:.0f} s] nodes up {up}/{len(rows)}, executors {len(executors)}, "
        f"in flight {in_flight}, verdicts {verdicts}, honest executors failing now {len(failing)}"
        + (f" ({', '.join(failing)})" if failing else "")
    )
