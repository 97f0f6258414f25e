"""Run `gpow harness` as a user does (a subprocess of this interpreter) and return its JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run_harness(tmp_path: Path, config: str, *args: str, timeout: float = 400) -> dict:
    """``gpow harness --config <config text> <args> --report ... --workdir ...`` in ``tmp_path``;
    fails with the tail of its output unless it exits 0."""
    report, workdir, cfg = tmp_path / "r.json", tmp_path / "w", tmp_path / "harness.toml"
    cfg.write_text(config)
    cmd = [
        sys.executable,
        "-m",
        "node",
        "harness",
        "--config",
        str(cfg),
        *args,
        "--report",
        str(report),
        "--workdir",
        str(workdir),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    return json.loads(report.read_text())
