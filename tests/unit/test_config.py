"""Config files: the shipped examples load, the reference documents every key with its real default,
and mistakes are errors that name the file, the table and the key."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from node.app.config import _SECTIONS, ConfigError, NodeConfig, apply_overrides, load_config
from node.harness.params import HarnessParams, load_harness_params

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("role", ["validator", "miner", "executor"])
def test_role_configs_load(role: str):
    cfg = load_config(CONFIGS / f"{role}.toml")
    assert cfg.node.role == role


def test_reference_documents_every_key_with_its_default():
    text = (CONFIGS / "reference.toml").read_text()
    defaults = NodeConfig()
    loaded = load_config(CONFIGS / "reference.toml")
    for name in _SECTIONS:
        section = getattr(defaults, name)
        assert getattr(loaded, name) == section, f"[{name}] in reference.toml differs from the code's defaults"
        for f in dataclasses.fields(section):
            assert re.search(rf"^{f.name} = .+#\s*\S", text, re.M), f"[{name}].{f.name} is not documented in reference.toml"


def write(tmp: Path, text: str) -> Path:
    p = tmp / "c.toml"
    p.write_text(text)
    return p


def test_errors_name_file_table_and_key(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"c\.toml: \[validator\]: unknown key\(s\) samplez"):
        load_config(write(tmp_path, "[validator]\nsamplez = 3\n"))
    with pytest.raises(ConfigError, match=r"\[net\]\.listen_port: expected an integer"):
        load_config(write(tmp_path, '[net]\nlisten_port = "7700"\n'))
    with pytest.raises(ConfigError, match=r"unknown table\(s\) valdator"):
        load_config(write(tmp_path, "[valdator]\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[node\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"\[rounds\]: .*shorter than round_s"):
        load_config(write(tmp_path, "[rounds]\nround_s = 2.0\nreveal_window_s = 1.0\njitter_s = 1.5\n"))
    with pytest.raises(ConfigError, match=r"\[admission\]: give either"):
        load_config(write(tmp_path, '[admission]\nvalidators = ["a"]\nauthority = "b"\n'))


def test_overrides_are_typed(tmp_path: Path):
    cfg = apply_overrides(NodeConfig(), {"net.listen_port": 9000, "miner.engine": "cpu", "node.role": None})
    assert cfg.net.listen_port == 9000 and cfg.node.role == ""
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(NodeConfig(), {"net.nope": 1})


def test_harness_config_loads_and_flags_override():
    args = argparse.Namespace(
        config=str(CONFIGS / "harness.toml"),
        validators=3,
        miners=None,
        executors_per_miner=None,
        remote_executors=None,
        duration=None,
        engine=None,
        cheaters="shared-gpu",
        rounds=None,
        round_s=None,
    )
    hp = load_harness_params(args)
    assert hp.validators == 3 and hp.adversary_list() == ["shared-gpu"]
    assert dataclasses.replace(hp, validators=2) == dataclasses.replace(HarnessParams(), adversaries="shared-gpu")
    text = (CONFIGS / "harness.toml").read_text()
    for f in dataclasses.fields(HarnessParams):
        assert re.search(rf"^{f.name} = ", text, re.M), f"[harness].{f.name} missing from configs/harness.toml"


@pytest.mark.parametrize(
    "text, match",
    [
        ("[validator]\nsamples = -5\n", r"c\.toml: \[validator\]\.samples = -5: expected an integer 1\.\.4096"),
        ('[node]\nlog_level = "verbose"\n', r"\[node\]\.log_level = 'verbose': expected one of debug, info, warning, error"),
        ("[node]\nmetrics_port = 99999\n", r"\[node\]\.metrics_port = 99999: expected a TCP port"),
        ("[miner]\nroster_interval_s = 0.0\n", r"\[miner\]\.roster_interval_s = 0\.0: expected a number > 0"),
        ("[validator]\nban_seconds = -1\n", r"\[validator\]\.ban_seconds = -1: expected a number >= 0"),
        ("[validator]\nn_cpu = 100\n", r"\[validator\]\.n_cpu = 100: expected a power of two"),
        ('[executor]\nminer = "127.0.0.1:7710"\n', r"\[executor\]\.miner = '127\.0\.0\.1:7710': expected ws://HOST:PORT"),
        ('[admission]\nopen = true\nvalidators = ["x"]\n', r"open = true admits every validator"),
    ],
)
def test_values_out_of_range_name_file_key_and_expectation(tmp_path: Path, text: str, match: str):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_overrides_are_range_checked():
    with pytest.raises(ConfigError, match=r"command line: \[executor\]\.miner = 'host:1': expected ws://"):
        apply_overrides(NodeConfig(), {"executor.miner": "host:1"})
    with pytest.raises(ConfigError, match=r"command line: \[net\]\.network = '': net: network must be 1\.\.64 characters"):
        apply_overrides(NodeConfig(), {"net.network": ""})


def test_start_checks_say_what_to_do():
    from node.app.config import check_start

    def cfg(**sections) -> NodeConfig:
        c = NodeConfig()
        for dotted, v in sections.items():
            apply_overrides(c, {dotted.replace("__", "."): v})
        return c

    with pytest.raises(ConfigError, match="no role"):
        check_start(cfg(admission__open=True))
    with pytest.raises(ConfigError, match=r"no \[admission\]: .*\[admission\]\.open = true"):
        check_start(cfg(node__role="miner"))
    check_start(cfg(node__role="miner", admission__validators=["v"]))
    with pytest.raises(ConfigError, match=r"listening on 0\.0\.0\.0 .* --advertise ws://THIS_HOST:7700"):
        check_start(cfg(node__role="miner", admission__open=True, net__listen_host="0.0.0.0"))
    with pytest.raises(ConfigError, match=r"advertise address ws://0\.0\.0\.0:7700: 0\.0\.0\.0 cannot be dialled"):
        check_start(cfg(node__role="miner", admission__open=True, net__advertise_addrs=["ws://0.0.0.0:7700"]))
    check_start(
        cfg(node__role="miner", admission__open=True, net__listen_host="0.0.0.0", net__advertise_addrs=["ws://10.0.0.2:7700"])
    )
    with pytest.raises(ConfigError, match="an executor needs its miner"):
        check_start(cfg(node__role="executor", admission__open=True))
