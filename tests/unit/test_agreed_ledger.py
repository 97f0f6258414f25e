"""The ledger's share of issue 18: other validators' verdicts are stored per validator and one
validator's flood grows the ledger by a bounded amount, evicting only its own oldest rows."""

from __future__ import annotations

from pathlib import Path

from node.roles import ledger as L
from node.roles.agreed import new_challenge_id
from node.roles.ledger import Ledger


def test_foreign_verdicts_are_bounded_per_validator(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(L, "FOREIGN_VERDICTS_PER_VALIDATOR", 40)
    monkeypatch.setattr(L, "FOREIGN_TRIM_EVERY", 10)
    led = Ledger(tmp_path / "l.sqlite3")
    try:
        honest = [new_challenge_id("honest") for _ in range(5)]
        for i, cid in enumerate(honest):
            assert led.record_foreign_verdict("honest", cid.hex(), "e", "m", True, ["passed"], 1_000_000, i)
        assert not led.record_foreign_verdict("honest", honest[0].hex(), "e", "m", False, [], 0, 99), "first receipt kept"
        for i in range(1000):
            led.record_foreign_verdict("flood", new_challenge_id("flood").hex(), f"fake-{i}", "m", False, [], 0, 100 + i)
        rows = led.foreign_verdicts()
        by = {}
        for r in rows:
            by[r["validator_id"]] = by.get(r["validator_id"], 0) + 1
        assert by["honest"] == 5
        assert 40 <= by["flood"] <= 40 + 10
        assert min(r["received_ms"] for r in rows if r["validator_id"] == "flood") >= 1100 - 50, "its newest are kept"
    finally:
        led.close()
