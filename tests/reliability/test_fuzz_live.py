"""A live validator and miner on loopback take about 3,000 fuzzed inputs over real websockets
(before and after the handshake, every entry point: link frames, requests to every protocol,
gossip on every topic) while they keep challenging each other. The full 100,000-input run is
``python tests/bench/fuzz_live.py`` (real processes, RSS recorded): see RELIABILITY.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import ErrorLog, load_bench

pytestmark = pytest.mark.slow


async def test_fuzzed_inputs_on_every_entry_point_leave_the_honest_pair_working(tmp_path: Path, error_log: ErrorLog):
    fuzz = load_bench("fuzz_live")
    r = await fuzz.run_inprocess(tmp_path, inputs=3000, seed=7, workers=4)
    assert r["inputs"] == 3000
    # every kind of input was tried, before and after the handshake
    kinds = r["kinds"]
    for k in (
        "random-bytes",
        "valid",
        "mutated-frame",
        "mutated-inner",
        "wrong-type-frame",
        "wrong-type-envelope",
        "wrong-type-body",
        "forged",
        "replay",
        "deep-nesting",
        "huge-length",
        "unsealed",
    ):
        assert kinds.get(k, 0) > 0, (k, kinds)
    assert sum(v for k, v in kinds.items() if k.startswith("pre:") and ":" not in k[4:]) > 50
    assert r["fields_wrong_typed"] > 40
    # the honest pair kept working through it and after it, and nothing failed
    assert r["honest"]["passed_during"] >= 1 and not r["honest"]["failed"], r["honest"]
    # the nodes refused the garbage and counted it by type
    for node in ("validator", "miner"):
        host = r[node]["host"]
        assert host.get("bad_frames", 0) > 100, host
        assert {"bad_frames.malformed", "bad_frames.schema"} <= set(host), host
        assert any(k.startswith("handshake_refused.") for k in host), host
        assert r[node]["gossip_internal_errors"] == 0
    assert sum(r[node]["host"].get("links_closed_integrity", 0) for node in ("validator", "miner")) > 0
    assert set(r["validator"]["gossip_invalid"]) & {"bad-signature", "schema", "malformed", "validator"}
    assert error_log.texts() == []
