"""`gpow init`: a node directory that `gpow run` accepts, a key only its owner reads, and refusals
(one line, nothing written) for flags that could not give a node that starts."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from node import cli
from node.app.config import ConfigError, check_start, load_config
from node.identity import Identity, IdentityError, load_key_file


def init(*args: str) -> int:
    ns = cli.build_parser().parse_args(["init", *args])
    return ns.func(ns)


def test_validator_miner_executor(tmp_path: Path, capsys):
    assert (
        init(
            "--role",
            "validator",
            "--dir",
            str(tmp_path / "v"),
            "--listen",
            "0.0.0.0:7700",
            "--advertise",
            "ws://192.0.2.1:7700",
            "--network",
            "n1",
        )
        == 0
    )
    vid = capsys.readouterr().out.strip()
    v = load_config(tmp_path / "v" / "config.toml")
    check_start(v)
    assert v.admission.validators == [vid] and not v.admission.open  # a first validator admits itself
    assert v.net.advertise_addrs == ["ws://192.0.2.1:7700"] and v.net.network == "n1"
    assert v.node.data_dir == str(tmp_path / "v") and v.node.key_file == ""
    key = tmp_path / "v" / "node.key"
    assert load_key_file(key).peer_id == vid
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE((tmp_path / "v").stat().st_mode) == 0o700
    assert "#" in (tmp_path / "v" / "config.toml").read_text()  # the commented example, not a bare dump

    eid = Identity.generate().peer_id
    assert (
        init(
            "--role",
            "miner",
            "--dir",
            str(tmp_path / "m"),
            "--admit",
            vid,
            "--allow-executor",
            eid,
            "--bootstrap",
            "ws://192.0.2.1:7700",
            "--engine",
            "cpu",
        )
        == 0
    )
    m = load_config(tmp_path / "m" / "config.toml")
    assert m.miner.remote_executors == [eid] and m.miner.engine == "cpu" and m.net.bootstrap == ["ws://192.0.2.1:7700"]
    assert m.miner.cpu_memory_bytes == 8 * 1024 * 1024

    assert init("--role", "executor", "--dir", str(tmp_path / "e"), "--admit", vid, "--miner", "ws://192.0.2.2:7710") == 0
    e = load_config(tmp_path / "e" / "config.toml")
    assert e.executor.miner == "ws://192.0.2.2:7710" and e.net.bootstrap == ["ws://192.0.2.2:7710"] and e.executor.engine == "gpu"


def test_existing_key_is_kept_and_config_needs_force(tmp_path: Path, capsys):
    d = tmp_path / "v"
    assert init("--role", "validator", "--dir", str(d)) == 0
    first = capsys.readouterr().out.strip()
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        init("--role", "validator", "--dir", str(d))
    assert init("--role", "validator", "--dir", str(d), "--force") == 0
    assert capsys.readouterr().out.strip() == first


@pytest.mark.parametrize(
    "args, match",
    [
        (["--role", "miner"], r"a miner must know who may challenge it: pass --admit"),
        (["--role", "validator", "--listen", "0.0.0.0:7700"], r"listening on 0\.0\.0\.0 .* --advertise"),
        (["--role", "validator", "--admit", "not-a-peer-id"], r"peer id"),
    ],
)
def test_refusals_write_nothing(tmp_path: Path, args: list[str], match: str):
    d = tmp_path / "n"
    with pytest.raises((ConfigError, IdentityError), match=match):
        init(*args, "--dir", str(d))
    assert not (d / "config.toml").exists() and not (d / "node.key").exists()
