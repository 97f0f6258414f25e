"""In-process full flows on the CPU engine: real hosts on loopback, real engines, real ledgers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio

from node.app.config import NodeConfig
from node.app.node import Node
from node.identity import Identity

pytestmark = pytest.mark.slow

SMALL_CPU_MEMORY = 64 * 64 * 40  # n = 64: about 35 states


def make_cfg(tmp: Path, name: str, role: str, bootstrap: list[str], **sections) -> NodeConfig:
    cfg = NodeConfig()
    cfg.node = dataclasses.replace(cfg.node, role=role, data_dir=str(tmp / name), status_interval_s=0.2)
    cfg.net = dataclasses.replace(cfg.net, listen_host="127.0.0.1", listen_port=0, bootstrap=bootstrap, network="gpow-test")
    cfg.gossip = dataclasses.replace(cfg.gossip, heartbeat_s=0.2)
    cfg.validator = dataclasses.replace(
        cfg.validator,
        challenge_interval_s=1.0,
        n_cpu=64,
        samples=8,
        probation_challenges=0,
        commit_slack_s=5.0,
        openings_timeout_s=5.0,
        profiles_file=str(tmp / "profiles.toml"),
    )
    cfg.miner = dataclasses.replace(
        cfg.miner,
        engine="cpu",
        cpu_memory_bytes=SMALL_CPU_MEMORY,
        roster_interval_s=0.5,
        heartbeat_timeout_s=2.0,
        host_fingerprint=f"host-{name}",
    )
    cfg.executor = dataclasses.replace(
        cfg.executor, engine="cpu", cpu_memory_bytes=SMALL_CPU_MEMORY, heartbeat_interval_s=0.3, host_fingerprint=f"host-{name}"
    )
    for k, v in sections.items():
        setattr(cfg, k, dataclasses.replace(getattr(cfg, k), **v))
    return cfg


def write_profiles(tmp: Path) -> None:
    (tmp / "profiles.toml").write_text(
        '[[profile]]\nmodel = "cpu-reference"\nmemory_bytes = 0\nn = 64\nstep_seconds = 0.05\nmeasured = true\n'
        'source = "test: generous; other work on this machine must not fail an honest executor"\n'
    )


async def start(nursery, cfg: NodeConfig, identity: Identity | None = None) -> Node:
    node = Node(cfg, identity or Identity.generate())
    await nursery.start(node.run)
    return node


async def wait_for(pred, timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.1)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def test_full_flow_validators_miners_remote_executor(tmp_path):
    write_profiles(tmp_path)
    async with trio.open_nursery() as nursery:
        v0 = await start(nursery, make_cfg(tmp_path, "v0", "validator", []))
        boot = [v0.host.listen_addr]
        v1 = await start(nursery, make_cfg(tmp_path, "v1", "validator", boot))
        x0_id = Identity.generate()
        m0 = await start(nursery, make_cfg(tmp_path, "m0", "miner", boot, miner={"remote_executors": [x0_id.peer_id]}))
        m1 = await start(nursery, make_cfg(tmp_path, "m1", "miner", boot))
        ex_cfg = make_cfg(tmp_path, "x0", "executor", [m0.host.listen_addr], executor={"miner": m0.host.listen_addr})
        x0 = await start(nursery, ex_cfg, x0_id)
        executors = {*m0.service.local, *m1.service.local, x0.identity.peer_id}
        assert len(executors) == 3

        def known(v: Node) -> set[str]:
            return set(v.service.executors)

        await wait_for(lambda: known(v0) >= executors and known(v1) >= executors, 20, "validators to learn all executors")

        def passed_by(v: Node) -> set[str]:
            return {r.executor_id for r in v.ledger.verdicts() if r.passed}

        await wait_for(
            lambda: passed_by(v0) >= executors and passed_by(v1) >= executors, 40, "a passing verdict for every executor"
        )
        for v in (v0, v1):
            failed = [r for r in v.ledger.verdicts() if not r.passed]
            assert not failed, [(r.executor_id[-8:], r.reasons) for r in failed]
        # verdicts reach every validator
        await wait_for(
            lambda: v0.service.stats.foreign_verdicts > 0 and v1.service.stats.foreign_verdicts > 0, 10, "verdict gossip"
        )

        # the remote executor leaves cleanly: the miner drops it from its roster, validators forget it
        await x0._remote.deregister("test over")
        x0_id = x0.identity.peer_id
        await wait_for(lambda: x0_id not in m0.service.remote, 5, "miner to drop the executor")
        await wait_for(lambda: x0_id not in known(v0), 10, "validator to forget the executor")
        nursery.cancel_scope.cancel()


async def test_metrics_endpoint_serves_prometheus_text(tmp_path):
    import socket

    write_profiles(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with trio.open_nursery() as nursery:
        v = await start(nursery, make_cfg(tmp_path, "v", "validator", [], node={"metrics_port": port}))
        m = await start(nursery, make_cfg(tmp_path, "m", "miner", [v.host.listen_addr]))
        await wait_for(lambda: v.service.stats.verdicts >= 1, 20, "a verdict")
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
        text = data.decode()
        assert text.startswith("HTTP/1.0 200 OK")
        assert 'gpow_net_peers_by_role{peer_role="miner",role="validator"} 1.0' in text
        assert "gpow_validator_verdicts_total" in text and "gpow_validator_challenges_in_flight" in text
        assert m.service is not None
        nursery.cancel_scope.cancel()


async def test_busy_executor_is_never_scored(tmp_path):
    """Two validators challenge one executor at once: it proves one and answers the other with a
    signed BUSY naming the challenge it runs; that challenge ends without a verdict."""
    write_profiles(tmp_path)
    long = {"cpu_memory_bytes": 64 * 64 * 1100}
    fast = {"challenge_interval_s": 0.2, "concurrency": 1}
    async with trio.open_nursery() as nursery:
        v0 = await start(nursery, make_cfg(tmp_path, "v0", "validator", [], validator=fast))
        v1 = await start(nursery, make_cfg(tmp_path, "v1", "validator", [v0.host.listen_addr], validator=fast))
        m = await start(nursery, make_cfg(tmp_path, "m", "miner", [v0.host.listen_addr], miner=long))
        await wait_for(lambda: v0.service.stats.busy + v1.service.stats.busy >= 2, 40, "BUSY answers")
        await wait_for(
            lambda: v0.service.stats.verdicts >= 2 and v1.service.stats.verdicts >= 2, 40, "verdicts at both validators"
        )
        for v in (v0, v1):
            failed = [r.reasons for r in v.ledger.verdicts() if not r.passed]
            assert not failed, failed
            assert v.ledger.executor_score(next(iter(m.service.local))) > 0, [
                (r.reasons, r.performance_factor) for r in v.ledger.verdicts()
            ]
        assert sum(e.stats["busy"] for e in m.service.local.values()) >= 2
        nursery.cancel_scope.cancel()


async def test_validator_times_executors_with_signed_pings(tmp_path):
    """Pings travel the challenge's path: through the miner, answered (signed) by the executor,
    a remote one included."""
    write_profiles(tmp_path)
    async with trio.open_nursery() as nursery:
        v = await start(nursery, make_cfg(tmp_path, "v", "validator", []))
        x_id = Identity.generate()
        m = await start(
            nursery, make_cfg(tmp_path, "m", "miner", [v.host.listen_addr], miner={"remote_executors": [x_id.peer_id]})
        )
        x = await start(
            nursery, make_cfg(tmp_path, "x", "executor", [m.host.listen_addr], executor={"miner": m.host.listen_addr}), x_id
        )
        want = {*m.service.local, x.identity.peer_id}
        await wait_for(lambda: set(v.service.rtt) >= want, 20, "round trips to both executors")
        assert all(0 < v.service.rtt[e] < 1.0 for e in want)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("where", ["verifier", "request"])
async def test_our_own_bug_is_never_blamed_on_the_executor(tmp_path, monkeypatch, where):
    """An exception of our own while judging (the verifier crashing, or a bug under the request
    call that is no network error) gives no verdict at all, is counted and logged as an internal
    error, and the validator goes on challenging."""
    import node.roles.validator as validator_module

    def broken(*args, **kwargs):
        raise RuntimeError("a bug of ours")

    if where == "verifier":
        monkeypatch.setattr(validator_module, "verify", broken)
    write_profiles(tmp_path)
    async with trio.open_nursery() as nursery:
        v = await start(nursery, make_cfg(tmp_path, "v", "validator", []))
        if where == "request":

            async def broken_request(*args, **kwargs):
                broken()

            monkeypatch.setattr(v.host, "request", broken_request)
        await start(nursery, make_cfg(tmp_path, "m", "miner", [v.host.listen_addr]))
        await wait_for(lambda: v.service.stats.internal_errors >= 2, 20, "two challenges to end in our own error")
        assert [r.reasons for r in v.ledger.verdicts() if not r.passed] == []
        assert v.service.stats.failed == 0
        nursery.cancel_scope.cancel()


async def test_a_miner_refuses_remote_executors_its_operator_did_not_list(tmp_path):
    """Listing an executor endorses it (its false proofs ban the miner too), so an outsider cannot
    register a throwaway executor with an honest miner to frame it."""
    write_profiles(tmp_path)
    async with trio.open_nursery() as nursery:
        v = await start(nursery, make_cfg(tmp_path, "v", "validator", []))
        m = await start(nursery, make_cfg(tmp_path, "m", "miner", [v.host.listen_addr]))
        x = await start(
            nursery, make_cfg(tmp_path, "x", "executor", [m.host.listen_addr], executor={"miner": m.host.listen_addr})
        )
        await wait_for(lambda: m.service.stats["refused"] >= 1, 10, "the miner to refuse the registration")
        assert x.identity.peer_id not in m.service.remote
        await trio.sleep(1.0)
        assert x.identity.peer_id not in v.service.executors
        nursery.cancel_scope.cancel()
