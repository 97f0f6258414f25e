"""deploy/: one systemd unit per role, each starting `gpow run` on the node directory that
docs/operators.md's `gpow init` creates, not restarting on exit codes that need a person, and
giving a stopping node more time than it takes to drain. `systemd-analyze verify` checks the
syntax where it is installed."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node import cli
from node.app.runner import DRAIN_MAX_S

REPO = Path(__file__).resolve().parents[2]
ROLES = ("validator", "miner", "executor")


def unit(role: str) -> configparser.ConfigParser:
    c = configparser.ConfigParser(strict=False, interpolation=None)
    c.optionxform = str  # systemd keys are case-sensitive
    c.read(REPO / "deploy" / f"gpow-{role}.service")
    return c


@pytest.mark.parametrize("role", ROLES)
def test_unit_runs_the_guides_node_directory(role: str):
    svc = unit(role)["Service"]
    argv = shlex.split(svc["ExecStart"])
    assert argv[0] == "/opt/gpow/bin/gpow"
    args = cli.build_parser().parse_args(argv[1:])
    assert args.command == "run" and args.config == f"/var/lib/gpow/{role}/config.toml"
    assert f"--dir {role} " in (REPO / "docs" / "operators.md").read_text()  # run in /var/lib/gpow (WorkingDirectory)
    assert svc["WorkingDirectory"] == "/var/lib/gpow"
    no_restart = {int(x) for x in svc["RestartPreventExitStatus"].split()}
    assert {cli.EXIT_USAGE, cli.EXIT_NO_GPU} <= no_restart and cli.EXIT_INTERNAL not in no_restart
    assert svc["KillSignal"] == "SIGTERM" and int(svc["TimeoutStopSec"]) > DRAIN_MAX_S + 5
    assert svc["User"] == "gpow" and svc.get("PrivateDevices", "no") == "no"  # GPUs are devices


@pytest.mark.parametrize("role", ROLES)
def test_systemd_accepts_the_unit(role: str, tmp_path: Path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    text = (REPO / "deploy" / f"gpow-{role}.service").read_text()
    gpow = Path(sys.executable).parent / "gpow"  # an existing ExecStart binary, so only the unit itself is judged
    path = tmp_path / f"gpow-{role}.service"
    path.write_text(text.replace("/opt/gpow/bin/gpow", str(gpow)).replace("User=gpow\nGroup=gpow\n", ""))
    r = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_grafana_dashboard_uses_only_exported_metrics():
    """Every metric deploy/grafana-dashboard.json queries is one node/app/metrics.py exports."""
    import json
    import re

    dash = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    source = (REPO / "node" / "app" / "metrics.py").read_text()
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert exprs
    import dataclasses

    from node.roles.validator import ValidatorStats

    # families named in metrics.py, and the validator's counters (gpow_validator_<ValidatorStats field>)
    dynamic = {f"gpow_validator_{f.name}" for f in dataclasses.fields(ValidatorStats)}
    for name in {m for e in exprs for m in re.findall(r"gpow_[a-z_]+", e)}:
        family = re.sub(r"_total$", "", name)
        assert f'"{family}"' in source or family in dynamic, f"{name} is not exported by node/app/metrics.py"
