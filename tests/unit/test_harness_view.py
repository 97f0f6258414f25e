"""The harness's live view names executors like the summary does and shows what the honest
validators see: an unadmitted validator's refused challenges never paint an honest executor red."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from node.harness.processes import NodeProcess
from node.harness.view import progress_line, render_view

E1 = "12D3KooW" + "A" * 36 + "exec0001"
E2 = "12D3KooW" + "B" * 36 + "exec0002"


def node(tmp: Path, name: str, role: str, status: dict, kind: str = "honest") -> NodeProcess:
    d = tmp / name
    d.mkdir()
    (d / "status.json").write_text(json.dumps({"role": role, "peers": {}, **status}))
    return NodeProcess(name, role, d, d / "config.toml", [], d / "node.log", kind=kind)


def test_adversarial_validator_does_not_paint_honest_executors_red(tmp_path: Path):
    refused = {"last_verdict": "missing-commitment:unadmitted-validator", "challenges": 3}
    harness = SimpleNamespace(
        nodes=[
            node(
                tmp_path,
                "validator-0",
                "validator",
                {
                    "validator": {
                        "executors": {
                            E1: {"last_verdict": "pass", "challenges": 2},
                            E2: {"last_verdict": "false-proof:row", "challenges": 1},
                        },
                        "stats": {"verdicts": 3},
                        "in_flight_groups": 0,
                    }
                },
            ),
            node(
                tmp_path,
                "cheater-unadmitted-validator",
                "validator",
                {
                    "validator": {
                        "executors": {E1: refused},
                        "stats": {"verdicts": 3, "issued": 3, "reasons": {"missing-commitment:unadmitted-validator": 3}},
                    }
                },
                kind="unadmitted-validator",
            ),
            node(tmp_path, "miner-0", "miner", {"miner": {"local_executors": {E1: {}}}}),
            node(tmp_path, "cheater-corrupt-rows", "miner", {"miner": {"local_executors": {E2: {}}}}, kind="corrupt-rows"),
        ]
    )
    con = Console(width=200, record=True, force_terminal=True, color_system="standard")
    con.print(render_view(harness, 10, 50))
    styled = con.export_text(styles=True)
    text = styled.split("executors, as the honest validators see them", 1)[1]
    honest = next(line for line in text.splitlines() if "miner-0" in line)
    cheater = next(line for line in text.splitlines() if "cheater-corrupt-rows" in line)
    assert "pass" in honest and "exec0001" not in honest  # named as in the summary; the honest view
    assert "\x1b[31m" not in honest and "\x1b[33m" in cheater  # red is only for an honest executor failing
    assert "cheater-unadmitted-validator" in styled and "refused as unadmitted" in styled
    line = progress_line(harness, 10, 50)
    assert "honest executors failing now 0" in line and "verdicts 3" in line
