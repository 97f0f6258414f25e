"""The harness report: every verdict from the validators' ledgers, who was honest, who was caught."""

from __future__ import annotations

import statistics
import time
from typing import Any

from rich.table import Table

from node.harness.adversaries import parse_kind
from node.roles.agreed import MAX_VERDICTS_PER_VALIDATOR


def _executor_owners(harness) -> dict[str, tuple[str, str]]:
    """executor id -> (node name, kind), from the nodes' last status files."""
    owners: dict[str, tuple[str, str]] = {}
    for n in harness.nodes:
        st = n.status() or {}
        if n.role == "miner":
            for eid in st.get("miner", {}).get("local_executors") or {}:
                owners[eid] = (n.name, n.kind)
        elif n.role == "executor" and st.get("peer_id"):
            owners[st["peer_id"]] = (n.name, n.kind)
    return owners


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def build_report(harness, t_start: float, mesh_s: float | None, interrupted: bool) -> dict[str, Any]:
    from node.roles.ledger import Ledger

    owners = _executor_owners(harness)
    verdicts: list[dict] = []
    created: dict[str, int] = {}
    published: dict[str, int] = {}
    receipts: list[tuple[str, int]] = []
    bans: dict[str, list[dict]] = {}  # honest validator -> the bans in its ledger
    for n in harness.nodes:
        if n.role != "validator":
            continue
        path = n.data_dir / "ledger.sqlite3"
        if not path.exists():
            continue
        ledger = Ledger(path)
        try:
            integrity = ledger.integrity_check()
            if n.kind == "honest":
                bans[n.name] = ledger.bans()
            published.update(ledger.recorded_times())
            for rec in ledger.verdicts():
                d = rec.to_dict()
                node_name, kind = owners.get(d["executor_id"], ("?", "unknown"))
                d.update(validator=n.name, validator_kind=n.kind, executor_node=node_name, kind=kind, executor=d["executor_id"])
                verdicts.append(d)
                created[d["challenge_id"]] = d["created_ms"]
            for cid, received_ms in ledger.foreign_receipts():
                receipts.append((cid, received_ms))
            if integrity != "ok":
                verdicts.append(
                    {"validator": n.name, "passed": False, "reasons": [f"ledger-integrity:{integrity}"], "kind": "ledger"}
                )
        finally:
            ledger.close()
    # Propagation: from a verdict's publication at one validator to its arrival at another.
    lat = [(r - published[cid]) / 1000 for cid, r in receipts if cid in published]
    nodes = []
    for n in harness.nodes:
        st = n.status() or {}
        nodes.append(
            {
                "name": n.name,
                "role": n.role,
                "kind": n.kind,
                "peer_id": st.get("peer_id"),
                "listen": st.get("listen"),
                "peers": len(st.get("peers", {})),
                "exit_code": n.exit_code,
                "net": st.get("net", {}),
            }
        )
    kinds: dict[str, dict] = {}
    for d in verdicts:
        if d.get("validator_kind", "honest") != "honest":
            continue  # what cheating validators said is judged separately (see evaluate)
        k = d.get("kind", "unknown")
        slot = kinds.setdefault(d.get("executor_node", "?"), {"kind": k, "verdicts": 0, "passed": 0, "failed_reasons": {}})
        slot["verdicts"] += 1
        if d.get("passed"):
            slot["passed"] += 1
        else:
            for r in d.get("reasons", []):
                slot["failed_reasons"][r] = slot["failed_reasons"].get(r, 0) + 1
    # Agreed scores as an honest validator sees them (rounds mode), by executor node.
    agreed: dict[str, dict] = {}
    honest_validator = next((n for n in harness.nodes if n.role == "validator" and n.kind == "honest"), None)
    st = (honest_validator.status() or {}) if honest_validator else {}
    names = {n.name: (n.status() or {}).get("peer_id") for n in harness.nodes}
    by_id = {pid: name for name, pid in names.items() if pid}
    for eid, a in st.get("agreement", {}).get("agreed_scores", {}).items():
        node_name, kind = owners.get(eid, ("?", "unknown"))
        agreed[eid] = {
            "node": node_name,
            "kind": kind,
            "score": a["score"],
            "verdicts": a["verdicts"],
            "by_validator": {by_id.get(v, v[-8:]): r for v, r in a["validators"].items()},
        }
    validator_cheats = {}
    for n in harness.nodes:
        if n.role == "validator" and n.kind != "honest":
            vst = n.status() or {}
            own = {
                k: v
                for k, v in {**vst.get("agreement", {}), **vst.get("validator", {})}.items()
                if k in ("grinder", "eraser", "flood", "busy_lock", "junk", "early_round")
            }
            validator_cheats[n.name] = {
                "kind": n.kind,
                "peer_id": vst.get("peer_id"),
                "own": own,
                "verdicts": [d for d in verdicts if d["validator"] == n.name],
            }
    # What the honest validator holds of each validator's verdicts, and the beacon's view of them.
    ag = st.get("agreement", {})
    agreement_view = {
        "stored": ag.get("verdicts", {}).get("stored", {}),
        "refused": ag.get("verdicts", {}).get("refused", {}),
        "beacon": ag.get("rounds", {}).get("beacon", {}),
        "excluded": ag.get("rounds", {}).get("excluded", []),
    }
    # The run without liars, from the same run: the median over honest validators of their pass rates.
    rates: dict[str, dict[str, list[bool]]] = {}
    for d in verdicts:
        if d.get("validator_kind") == "honest" and d.get("executor_id"):
            rates.setdefault(d["executor_id"], {}).setdefault(d["validator"], []).append(bool(d.get("passed")))
    baseline = {eid: statistics.median(sum(p) / len(p) for p in per.values()) for eid, per in rates.items()}
    for eid, a in agreed.items():
        a["baseline"] = baseline.get(eid)
    rejected = {
        n.name: (n.status() or {}).get("agreement", {}).get("rejected_verdicts", 0)
        for n in harness.nodes
        if n.role == "validator" and n.kind == "honest"
    }
    # How the honest validators judged other validators' evidence (junk-evidence), and who was
    # penalised for it in their gossip scores.
    audits = {}
    for n in harness.nodes:
        if n.role == "validator" and n.kind == "honest":
            hst = n.status() or {}
            penalties = hst.get("net", {}).get("gossip", {}).get("penalties", {})
            audits[n.name] = {
                "audits": hst.get("validator", {}).get("stats", {}).get("audits", 0),
                "disagreements": hst.get("validator", {}).get("stats", {}).get("audit_disagreements", 0),
                "evidence_penalties": sum(
                    c for r, c in penalties.items() if r.startswith(("verdict evidence", "verdict: false-proof"))
                ),
            }
    # Executor-role adversaries (remote executors of outsiders): what they and the miners saw.
    executor_cheats = {}
    for n in harness.nodes:
        if n.role == "executor" and n.kind != "honest":
            est = n.status() or {}
            executor_cheats[n.name] = {
                "kind": n.kind,
                "peer_id": est.get("peer_id"),
                "registered": est.get("executor", {}).get("registered"),
                "challenges": est.get("executor", {}).get("challenges", 0),
            }
    return {
        "faults": list(getattr(harness, "faults", [])),
        "started_at": t_start,
        "agreed_scores": agreed,
        "validator_cheaters": validator_cheats,
        "agreement_view": agreement_view,
        "unadmitted_verdicts_rejected": rejected,
        "bans": bans,
        "audits": audits,
        "executor_cheaters": executor_cheats,
        "ended_at": time.time(),
        "interrupted": interrupted,
        "params": {k: v for k, v in vars(harness.hp).items()},
        "calibrated_cpu_step_s": harness.calibrated_step_s,
        "mesh_ready_s": mesh_s,
        "expected_executors": harness.expected_executors(),
        "nodes": nodes,
        "executors": {eid: {"node": o[0], "kind": o[1]} for eid, o in owners.items()},
        "by_node": kinds,
        "verdicts": verdicts,
        "propagation": {
            "verdict_deliveries": len(lat),
            "p50_s": _pct(lat, 0.5),
            "p99_s": _pct(lat, 0.99),
            "max_s": max(lat) if lat else None,
            "mean_s": statistics.fmean(lat) if lat else None,
        },
    }


AGREED_TOLERANCE = 0.05  # rounds mode: an honest executor's agreed score vs the run without liars
FAULT_GRACE_MS = (15_000, 20_000)  # a challenge may start this long before a cut, and end this long after the heal
# Unreachable or slowed by the cut (TCP's retransmission backoff outlasts the heal by seconds).
UNAVAILABLE = (
    "missing-commitment",
    "late-commitment",
    "missing-openings",
    "late-openings",
    "co-scheduled-timeout",
    "slow-for-profile",
)


def excuse_faults(report: dict) -> None:
    """Multi-host mode cuts a miner's link on purpose: failures of the executors behind it, of the
    unavailable kind and inside the cut (with grace), are the fault's doing. They are moved out of
    the honest tally into report["fault_induced"], and the report says whether those executors
    passed again after the heal (the mesh healed) - nothing else is excused."""
    cut = next((f for f in report.get("faults", []) if f.get("cut")), None)
    if cut is None:
        return
    healed = next((f for f in report["faults"] if f.get("healed")), None)
    lo = cut["wall_ms"] - FAULT_GRACE_MS[0]
    hi = (healed["wall_ms"] if healed else float("inf")) + FAULT_GRACE_MS[1]
    behind = set(cut.get("behind", [cut["cut"]]))
    excused, after = [], []
    for d in report["verdicts"]:
        if d.get("executor_node") not in behind or d.get("validator_kind", "honest") != "honest":
            continue
        if (
            not d.get("passed")
            and lo <= d.get("created_ms", 0) <= hi
            and all(r.startswith(UNAVAILABLE) for r in d.get("reasons", []))
        ):
            excused.append(d)
        elif healed and d.get("created_ms", 0) > healed["wall_ms"]:
            after.append(d)
    for d in excused:
        slot = report["by_node"][d["executor_node"]]
        slot["verdicts"] -= 1
        for r in d["reasons"]:
            slot["failed_reasons"][r] -= 1
            if not slot["failed_reasons"][r]:
                del slot["failed_reasons"][r]
    report["fault_induced"] = {
        "behind_the_cut": sorted(behind),
        "excused_failures": len(excused),
        "reasons": sorted({r for d in excused for r in d["reasons"]}),
        "verdicts_after_heal": len(after),
        "passed_after_heal": sum(1 for d in after if d.get("passed")),
    }


def evaluate(report: dict) -> tuple[bool, list[str]]:
    problems: list[str] = []
    excuse_faults(report)
    honest_nodes = {o["node"] for o in report["executors"].values() if o["kind"] == "honest"}
    by_node = report["by_node"]
    honest_total = honest_passed = 0
    for name in sorted(honest_nodes):
        slot = by_node.get(name)
        if not slot or slot["verdicts"] == 0:
            problems.append(f"honest {name} got no verdict")
            continue
        honest_total += slot["verdicts"]
        honest_passed += slot["passed"]
        if slot["passed"] != slot["verdicts"]:
            problems.append(
                f"honest {name} failed {slot['verdicts'] - slot['passed']} of {slot['verdicts']}: {slot['failed_reasons']}"
            )
    cheaters = {
        o["node"]: o["kind"]
        for o in report["executors"].values()
        if o["kind"] not in ("honest", "unknown") and parse_kind(o["kind"])[0].role == "miner"
    }
    # No honest validator may ban an honest executor or miner, whatever anyone gossiped (issue 17).
    honest_ids = {eid: o["node"] for eid, o in report["executors"].items() if o["kind"] == "honest"}
    honest_ids.update(
        {
            nd["peer_id"]: nd["name"]
            for nd in report.get("nodes", [])
            if nd["role"] == "miner" and nd["kind"] == "honest" and nd.get("peer_id")
        }
    )
    for vname, rows in report.get("bans", {}).items():
        for b in rows:
            if b["peer_id"] in honest_ids:
                problems.append(f"{vname} banned honest {honest_ids[b['peer_id']]}: {b['reason']}")
    caught = 0
    report["cheaters"] = {}
    for name, kind in sorted(cheaters.items()):
        slot = by_node.get(name, {"failed_reasons": {}})
        want = parse_kind(kind)[0].caught_as  # a failing verdict with a reason starting with one of these
        hits = {r: c for r, c in slot["failed_reasons"].items() if r.startswith(want)}
        report["cheaters"][name] = {"kind": kind, "caught": bool(hits), "reasons": hits or slot["failed_reasons"]}
        if hits:
            caught += 1
        else:
            problems.append(
                f"cheater {name} ({kind}) was not caught (wanted {'/'.join(want)}; saw {slot['failed_reasons'] or 'no failing verdict'})"
            )
    # Cheating validators are neutralised when the agreed scores still say the truth.
    report["validator_cheaters_neutralised"] = {}
    view = report.get("agreement_view", {})
    rounds = report.get("params", {}).get("rounds")
    # Rounds mode: the agreed score of every honest executor is within AGREED_TOLERANCE of the run
    # without liars (the honest validators' median), and no cheating executor's is lifted above it.
    off = []
    if rounds:
        for a in report["agreed_scores"].values():
            if a["kind"] == "unknown" or a.get("baseline") is None:
                continue
            if a["kind"] == "honest" and (a["score"] is None or abs(a["score"] - a["baseline"]) > AGREED_TOLERANCE):
                off.append(f"{a['node']}: {a['score']} vs {a['baseline']:.2f} without liars")
            elif a["kind"] != "honest" and a["score"] is not None and a["score"] > a["baseline"] + AGREED_TOLERANCE:
                off.append(f"{a['node']} ({a['kind']}) lifted: {a['score']} vs {a['baseline']:.2f} without liars")
        for eid, o in report["executors"].items():
            if o["kind"] == "honest" and eid not in report["agreed_scores"]:
                off.append(f"{o['node']}: no agreed score (fewer than two validators counted for it)")
    for name, vc in report.get("validator_cheaters", {}).items():
        kind = vc["kind"]
        base = kind.partition(":")[0]
        pid = vc.get("peer_id") or ""
        refused = view.get("refused", {}).get(pid, {})
        stored = view.get("stored", {}).get(pid, 0)
        if base in ("beacon-grinder", "verdict-eraser", "verdict-flood", "colluding-validators"):
            counted = [
                a["node"] for a in report["agreed_scores"].values() if name in a["by_validator"] or pid[-8:] in a["by_validator"]
            ]
            own = vc.get("own", {})
            if base == "beacon-grinder":
                g = own.get("grinder", {})
                tried = g.get("rounds_ground", 0)
                drawn = sum(x["executors_drawn"] for x in g.get("attempts", []))
                attacked = tried > 0 and view.get("beacon", {}).get("equivocations", 0) > 0
                ok = attacked and stored == 0 and not counted
                detail = (
                    f"ground {tried} rounds (drew {drawn} executors to itself in its own view); honest view: "
                    f"{view.get('beacon', {}).get('equivocations', 0)} equivocations, excluded now: {pid in view.get('excluded', [])}, "
                    f"{stored} verdicts counted"
                )
            elif base == "verdict-eraser":
                e = own.get("eraser", {})
                attacked = refused.get("foreign-id", 0) > 0
                ok = attacked
                detail = (
                    f"{e.get('from_busy', 0)} erasures from {e.get('busy_seen', 0)} BUSYs ({e.get('probes', 0)} probes), "
                    f"{e.get('from_verdicts', 0)} from verdicts; honest view refused {refused.get('foreign-id', 0)} as another's challenge id"
                )
            elif base == "verdict-flood":
                published = own.get("flood", {}).get("published", 0)
                dropped = sum(refused.values())
                attacked = published > 0 and dropped > 0
                ok = attacked and stored <= MAX_VERDICTS_PER_VALIDATOR
                detail = f"published {published}; honest view holds {stored}, refused {dropped} ({', '.join(f'{k} {v}' for k, v in sorted(refused.items()))})"
            else:
                lies = [
                    d
                    for d in vc["verdicts"]
                    if (d.get("kind") == "honest") != bool(d.get("passed")) and d.get("kind") != "unknown"
                ]
                attacked = bool(lies)
                ok = attacked
                detail = f"{len(lies)} lying verdicts, {stored} counted in the honest view"
            ok = ok and not off
            if off:
                detail += "; agreed scores moved: " + "; ".join(off)
            report["validator_cheaters_neutralised"][name] = {"kind": kind, "neutralised": ok, "detail": detail}
            if not ok:
                problems.append(f"cheating validator {name} ({kind}) was not neutralised: {detail}")
            continue
        if base == "early-round":
            e = vc.get("own", {}).get("early_round", {})
            attacked = e.get("sent", 0) > 0
            ok = attacked and e.get("taken", 0) == 0 and not off
            detail = (
                f"{e.get('sent', 0)} challenges sent before their round's beacon was public: "
                f"{e.get('refused_beacon_unknown', 0)} refused (beacon-unknown), {e.get('taken', 0)} taken, "
                f"{e.get('refused_other', 0)} other refusals"
            )
            if off:
                detail += "; agreed scores moved: " + "; ".join(off)
            report["validator_cheaters_neutralised"][name] = {"kind": kind, "neutralised": ok, "detail": detail}
            if not ok:
                problems.append(f"cheating validator {name} ({kind}) was not neutralised: {detail}")
            continue
        if base in ("busy-lock", "junk-evidence"):
            ok, detail = _judging_validator_neutralised(base, vc, report)
            report["validator_cheaters_neutralised"][name] = {"kind": kind, "neutralised": ok, "detail": detail}
            if not ok:
                problems.append(f"cheating validator {name} ({kind}) was not neutralised: {detail}")
            continue
        if kind.startswith("lying-validator"):
            lies = [d for d in vc["verdicts"] if d.get("kind") == "honest" and not d.get("passed")] + [
                d for d in vc["verdicts"] if d.get("kind") not in ("honest", "unknown") and d.get("passed")
            ]
            wrong = [
                a
                for a in report["agreed_scores"].values()
                if a["score"] is not None and ((a["kind"] == "honest") != (a["score"] >= 0.5))
            ]
            scored = [a for a in report["agreed_scores"].values() if a["score"] is not None]
            ok = bool(scored) and not wrong
            detail = f"{len(lies)} lying verdicts; {len(scored)} agreed scores, {len(wrong)} wrong"
        else:
            refused = [d for d in vc["verdicts"] if any("unadmitted-validator" in r for r in d.get("reasons", []))]
            counted = [
                a
                for a in report["agreed_scores"].values()
                if vc.get("peer_id", "")[-8:] in a["by_validator"] or name in a["by_validator"]
            ]
            ok = bool(refused) and not counted
            detail = f"{len(refused)} of its challenges refused by executors; counted in {len(counted)} agreed scores"
        report["validator_cheaters_neutralised"][name] = {"kind": kind, "neutralised": ok, "detail": detail}
        if not ok:
            problems.append(f"cheating validator {name} ({kind}) was not neutralised: {detail}")
    # Outsiders' remote executors (frame-miner): no honest miner lists them, so no validator
    # challenges them and no false answer of theirs can reach a miner (bans checked above).
    for name, ec in report.get("executor_cheaters", {}).items():
        judged = [d for d in report["verdicts"] if d.get("executor_id") == ec.get("peer_id")]
        ok = ec.get("peer_id") is not None and not ec.get("registered") and not judged
        detail = f"registered: {bool(ec.get('registered'))}, {len(judged)} verdicts on it, {ec.get('challenges', 0)} challenges reached it"
        report["validator_cheaters_neutralised"][name] = {"kind": ec["kind"], "neutralised": ok, "detail": detail}
        if not ok:
            problems.append(f"outsider executor {name} ({ec['kind']}) was not neutralised: {detail}")
    if report.get("params", {}).get("rounds"):
        for a in report["agreed_scores"].values():
            if a["kind"] == "honest" and a["score"] is not None and a["score"] < 0.5:
                problems.append(f"honest {a['node']} has agreed score {a['score']}")
    fi = report.get("fault_induced")
    if fi and any(f.get("healed") for f in report.get("faults", [])) and not fi["passed_after_heal"]:
        problems.append(
            f"the mesh did not heal: no passing verdict for {', '.join(fi['behind_the_cut'])} after the link came back"
        )
    for d in report["verdicts"]:
        if d.get("kind") == "ledger":
            problems.append(f"{d['validator']}: {d['reasons'][0]}")
    report["summary"] = {
        "honest_verdicts": honest_total,
        "honest_passed": honest_passed,
        "cheaters": len(cheaters),
        "cheaters_caught": caught,
    }
    return not problems, problems


def _judging_validator_neutralised(base: str, vc: dict, report: dict) -> tuple[bool, str]:
    """Issue 17's validator kinds. busy-lock: its far-deadline challenges were sent and every
    executor refused them (none was held BUSY); junk-evidence: it gossiped evidence, the honest
    validators audited and penalised it (no ban on anyone honest is checked for every run)."""
    own = vc.get("own", {})
    if base == "busy-lock":
        lock = own.get("busy_lock", {})
        refused = [d for d in vc["verdicts"] if any("deadline-too-far" in r for r in d.get("reasons", []))]
        ok = bool(refused) and lock.get("taken", 0) == 0
        return ok, (
            f"sent {lock.get('sent', 0)} challenges with far deadlines; executors refused {len(refused)} (deadline-too-far), "
            f"took {lock.get('taken', 0)}"
        )
    junk = own.get("junk", {})
    audits = report.get("audits", {})
    penalised = sum(a["evidence_penalties"] for a in audits.values())
    ok = sum(junk.values()) > 0 and penalised > 0
    return ok, (
        f"gossiped {sum(junk.values())} false-proof verdicts ({', '.join(f'{k} {v}' for k, v in sorted(junk.items()))}); "
        f"honest validators audited {sum(a['audits'] for a in audits.values())}, penalised its evidence {penalised} times, "
        f"banned nobody honest"
    )


def summary_table(report: dict) -> Table:
    t = Table(title="gpow harness: verdicts per executor node")
    for c in ("node", "kind", "verdicts", "passed", "failure reasons", "caught"):
        t.add_column(c)
    for name, slot in sorted(report["by_node"].items()):
        kind = slot["kind"]
        caught = "" if kind == "honest" else ("yes" if report.get("cheaters", {}).get(name, {}).get("caught") else "NO")
        reasons = ", ".join(f"{r} x{c}" for r, c in slot["failed_reasons"].items()) or "-"
        t.add_row(name, kind, str(slot["verdicts"]), str(slot["passed"]), reasons, caught)
    for name, vc in report.get("validator_cheaters_neutralised", {}).items():
        t.add_row(name, vc["kind"], "-", "-", vc["detail"], "neutralised" if vc["neutralised"] else "NO")
    p = report["propagation"]
    if p["verdict_deliveries"]:
        t.caption = f"verdict propagation between validators: p50 {p['p50_s'] * 1e3:.1f} ms, p99 {p['p99_s'] * 1e3:.1f} ms over {p['verdict_deliveries']} deliveries"
    return t


def agreed_table(report: dict) -> Table | None:
    """Rounds mode: each executor's agreed (median) score and the validators' pass rates behind it."""
    rows = report.get("agreed_scores") or {}
    if not rows:
        return None
    t = Table(title="agreed scores (median over validators; as an honest validator sees them)")
    for c in ("executor node", "kind", "agreed score", "without liars", "verdicts", "pass rate by validator"):
        t.add_column(c)
    for a in sorted(rows.values(), key=lambda a: a["node"]):
        if a["kind"] == "unknown" and a["score"] is None:
            continue  # made-up executors (a verdict flood): nobody scores them
        per = ", ".join(f"{v}: {r:.2f}" for v, r in sorted(a["by_validator"].items()))
        base = a.get("baseline")
        t.add_row(
            a["node"],
            a["kind"],
            "-" if a["score"] is None else f"{a['score']:.2f}",
            "-" if base is None else f"{base:.2f}",
            str(a["verdicts"]),
            per,
        )
    return t
