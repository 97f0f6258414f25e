"""docs/operators.md, run verbatim: each host a network namespace with the guide's address, its
`# on the ... host` blocks run in order (`gpow run` lines as long-running processes), until the
validator on its host has passing verdicts for the miner's executor and the remote one.

Needs root and `ip netns`; skips cleanly otherwise. The only differences from a real run are the
two the guide names: the working directory (a temporary one, shared by the "hosts" as if
validator.id had been copied) and ENGINE=cpu.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "operators.md"
HOSTS = {"validator": "192.0.2.1", "miner": "192.0.2.2", "executor": "192.0.2.3"}
NS = {h: f"gpow-op-{h}" for h in HOSTS}
HUB = "gpow-op-hub"


def guide_blocks() -> list[tuple[str, list[str]]]:
    """(host, command lines) of every block that starts with `# on the HOST host`, in order."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), re.DOTALL):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        m = re.match(r"# on the (\w+) host$", lines[0]) if lines else None
        if m:
            out.append((m.group(1), lines[1:]))
    return out


def test_the_guide_has_a_block_per_host_and_its_table_matches():
    blocks = guide_blocks()
    assert [h for h, _ in blocks] == ["validator", "executor", "miner", "executor", "validator"]
    text = GUIDE.read_text()
    for host, addr in HOSTS.items():
        assert f"| {host} host |" in text and addr in text


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _netns_usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    r = _ip("netns", "add", "gpow-op-probe", check=False)
    if r.returncode != 0:
        return f"`ip netns add` failed: {r.stderr.strip()}"
    _ip("netns", "del", "gpow-op-probe", check=False)
    return None


@pytest.fixture
def hosts():
    why = _netns_usable()
    if why:
        pytest.skip(f"network namespaces: {why}")
    for ns in [HUB, *NS.values()]:
        _ip("netns", "del", ns, check=False)
    try:
        _ip("netns", "add", HUB)
        _ip("-n", HUB, "link", "add", "br0", "type", "bridge")
        _ip("-n", HUB, "link", "set", "br0", "up")
        for i, (host, addr) in enumerate(HOSTS.items()):
            ns = NS[host]
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", HUB, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", HUB, "link", "set", f"p{i}", "master", "br0")
            _ip("-n", HUB, "link", "set", f"p{i}", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        yield NS
    finally:
        for ns in [*NS.values(), HUB]:
            _ip("netns", "del", ns, check=False)


def test_operators_guide_runs_verbatim_in_namespaces(hosts, tmp_path: Path):
    env = dict(os.environ, ENGINE="cpu", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", PYTHONUNBUFFERED="1")
    assert shutil.which("gpow", path=env["PATH"]), "gpow is not installed beside this python"
    nodes: list[tuple[str, subprocess.Popen]] = []
    status_out = ""
    try:
        for host, lines in guide_blocks():
            for line in lines:
                cmd = ["ip", "netns", "exec", hosts[host], "bash", "-c", line]
                if line.startswith("gpow run "):
                    with open(tmp_path / f"{host}.log", "w") as log:
                        nodes.append((host, subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)))
                    _wait_started(tmp_path, host, nodes[-1][1])
                elif line.startswith("gpow status"):
                    _wait_verdicts(tmp_path, nodes)
                    r = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
                    assert r.returncode == 0, r.stderr
                    status_out = r.stdout
                else:
                    r = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
                    assert r.returncode == 0, f"{host}: {line}\n{r.stderr}"
        assert len(nodes) == 3, "the guide starts a validator, a miner and an executor"
        # `gpow status` on the validator host shows both executors. The remote one being judged at
        # all proves the miner advertised ws://192.0.2.2:7710: an executor registers only with the
        # peer whose announced address is its --miner (ws://0.0.0.0 would have matched nothing).
        executors = [_status(tmp_path, "executor")["peer_id"], *_status(tmp_path, "miner")["miner"]["local_executors"]]
        for eid in executors:
            assert eid[-8:] in status_out, status_out
        for host, p in nodes:
            assert p.poll() is None, "a node exited"
            # the links came up, so no node reported its bootstrap peer or miner as unreachable
            assert "cannot reach" not in (tmp_path / f"{host}.log").read_text(), host
    finally:
        for _, p in nodes:
            if p.poll() is None:
                p.terminate()
        for host, p in nodes:
            try:
                assert p.wait(timeout=40) in (0, -15), (tmp_path / f"{host}.log").read_text()[-2000:]
            except subprocess.TimeoutExpired:
                p.kill()


def _status(tmp: Path, host: str) -> dict:
    try:
        return json.loads((tmp / host / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait_started(tmp: Path, host: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _status(tmp, host).get("pid"):
            return
        assert proc.poll() is None, (tmp / f"{host}.log").read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"{host} did not start in {timeout} s:\n{(tmp / f'{host}.log').read_text()[-3000:]}")


def _wait_verdicts(tmp: Path, nodes: list, timeout: float = 150) -> None:
    """Until the validator has a passing verdict for the miner's executor and for the remote one."""
    deadline = time.monotonic() + timeout
    want = {_status(tmp, "executor").get("peer_id")} | set((_status(tmp, "miner").get("miner") or {}).get("local_executors", {}))
    while time.monotonic() < deadline:
        known = (_status(tmp, "validator").get("validator") or {}).get("executors", {})
        passed = {eid for eid, e in known.items() if e.get("last_verdict") == "pass"}
        if want <= passed and len(want) >= 2:
            return
        for host, p in nodes:
            assert p.poll() is None, f"{host} exited:\n{(tmp / f'{host}.log').read_text()[-3000:]}"
        time.sleep(0.5)
        want = {_status(tmp, "executor").get("peer_id")} | set(
            (_status(tmp, "miner").get("miner") or {}).get("local_executors", {})
        )
    logs = "\n".join(f"--- {h}\n{(tmp / f'{h}.log').read_text()[-1500:]}" for h in HOSTS)
    raise AssertionError(
        f"no passing verdict for all of {want} in {timeout} s; validator knows "
        f"{(_status(tmp, 'validator').get('validator') or {}).get('executors')}\n{logs}"
    )
