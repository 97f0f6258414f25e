"""The validator's SQLite ledger: state changes, refusals, crash safety, resume, scores, bans."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from node.identity import Identity
from node.roles import verdicts as R
from node.roles.ledger import (
    SCHEMA_VERSION,
    ChallengeClosedError,
    DuplicateChallengeError,
    Ledger,
    LedgerError,
    UnknownChallengeError,
)
from node.roles.verdicts import VerdictRecord
from node.wire import constants as C
from node.wire.envelope import encode_envelope
from node.wire.messages import Challenge

REPO = Path(__file__).resolve().parents[2]


def cid_of(i: int) -> str:
    return f"{i:032x}"


def rec_for(
    cid: str,
    executor: str = "e1",
    *,
    passed: bool = True,
    reasons: list[str] | None = None,
    pf: float = 1.0,
    created_ms: int = 1000,
    miner: str = "m1",
) -> VerdictRecord:
    return VerdictRecord(
        challenge_id=cid,
        validator_id="v1",
        executor_id=executor,
        miner_id=miner,
        passed=passed,
        reasons=reasons if reasons is not None else ([R.PASSED] if passed else [R.LATE_COMMITMENT]),
        n=64,
        T=10,
        m=4,
        k=8,
        commit_seconds=0.5,
        openings_seconds=0.1,
        verify_seconds=0.01,
        expected_seconds=0.4,
        performance_factor=pf,
        created_ms=created_ms,
    )


def issue(led: Ledger, i: int, executor: str = "e1", miner: str = "m1", t: int | None = None) -> str:
    cid = cid_of(i)
    t = 1000 + i if t is None else t
    led.record_challenge(cid, executor, miner, b"raw-" + cid.encode(), b"s" * 32, t, t + 5000)
    return cid


def full(led: Ledger, i: int, executor: str = "e1", **kw) -> VerdictRecord:
    cid = issue(led, i, executor, kw.get("miner", "m1"))
    led.record_commitment(cid, b"r" * 32, b"d" * 32, 2000 + i)
    led.record_reveal(cid, 2100 + i)
    led.record_openings(cid, "ab" * 32, 1234, 2200 + i)
    rec = rec_for(cid, executor, created_ms=1000 + i, **kw)
    led.record_verdict(rec, now_ms=2300 + i)
    return rec


@pytest.fixture
def led(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    yield ledger
    ledger.close()


# ---- configuration ---------------------------------------------------------------------------


def test_wal_mode_full_sync_and_schema_version(tmp_path, led):
    assert led._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    other = sqlite3.connect(tmp_path / "ledger.sqlite3")
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
        assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        other.close()
    assert led.integrity_check() == "ok"


def test_a_newer_schema_is_refused(tmp_path):
    p = tmp_path / "l.sqlite3"
    Ledger(p).close()
    db = sqlite3.connect(p)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(LedgerError, match="schema v99 is newer"):
        Ledger(p)


def test_a_foreign_database_is_refused(tmp_path):
    p = tmp_path / "other.sqlite3"
    db = sqlite3.connect(p)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="not a gpow ledger"):
        Ledger(p)


def test_a_file_that_is_not_sqlite_is_a_ledger_error(tmp_path):
    p = tmp_path / "junk.sqlite3"
    p.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="cannot open the ledger"):
        Ledger(p)


# ---- the life of a challenge -----------------------------------------------------------------


def test_challenge_lifecycle_is_stored(led):
    rec = full(led, 1)
    row = led.challenge(rec.challenge_id)
    assert row["state"] == "closed"
    assert (row["root"], row["d_final"], row["committed_ms"]) == (b"r" * 32, b"d" * 32, 2001)
    assert (row["revealed_ms"], row["openings_sha256"], row["openings_size"], row["openings_ms"]) == (2101, "ab" * 32, 1234, 2201)
    assert row["secret"] == b"s" * 32 and row["closed_ms"] == 2301
    assert led.verdicts() == [rec]
    assert led.verdict(rec.challenge_id) == rec


def test_each_step_advances_the_state(led):
    cid = issue(led, 1)
    assert led.challenge_state(cid) == "issued"
    led.record_commitment(cid, b"r" * 32, b"d" * 32, 2)
    assert led.challenge_state(cid) == "committed"
    led.record_reveal(cid, 3)
    assert led.challenge_state(cid) == "revealed"
    led.record_openings(cid, "00", 1, 4)
    assert led.challenge_state(cid) == "opened"
    assert led.challenge_state("ff" * 16) is None


def test_a_challenge_id_is_never_recorded_twice(tmp_path, led):
    cid = issue(led, 7)
    with pytest.raises(DuplicateChallengeError, match=cid):
        led.record_challenge(cid, "e2", "m2", b"other", b"t" * 32, 5, 6)
    full(led, 8)
    led.close()
    again = Ledger(tmp_path / "ledger.sqlite3")  # not even after a restart, nor once closed
    try:
        for i in (7, 8):
            with pytest.raises(DuplicateChallengeError):
                again.record_challenge(cid_of(i), "e1", "m1", b"x", b"y", 1, 2)
        assert again.challenge(cid)["executor_id"] == "e1"  # the first record is untouched
    finally:
        again.close()


def test_state_changes_for_unknown_challenges_are_refused(led):
    ghost = "ee" * 16
    with pytest.raises(UnknownChallengeError):
        led.record_commitment(ghost, b"r" * 32, b"d" * 32, 1)
    with pytest.raises(UnknownChallengeError):
        led.record_reveal(ghost, 1)
    with pytest.raises(UnknownChallengeError):
        led.record_openings(ghost, "00", 1, 1)
    with pytest.raises(UnknownChallengeError):
        led.mark_busy(ghost, 1)
    with pytest.raises(UnknownChallengeError):
        led.record_verdict(rec_for(ghost))
    assert led.verdicts() == []


def test_a_closed_challenge_cannot_change_and_keeps_one_verdict(led):
    rec = full(led, 1)
    with pytest.raises(ChallengeClosedError):
        led.record_verdict(rec_for(rec.challenge_id, passed=False))
    with pytest.raises(ChallengeClosedError):
        led.record_commitment(rec.challenge_id, b"x" * 32, b"y" * 32, 9)
    assert led.verdicts() == [rec]


def test_busy_ends_a_challenge_without_a_verdict(led):
    cid = issue(led, 1)
    led.mark_busy(cid, 1500)
    assert led.challenge_state(cid) == "busy"
    assert led.resume(9999) == []
    assert led.verdicts() == []
    with pytest.raises(ChallengeClosedError):
        led.record_verdict(rec_for(cid))


def test_a_failed_transaction_leaves_nothing_behind(led):
    cid = issue(led, 1)
    bad = rec_for(cid)
    bad.reasons = [object()]  # not JSON-able: fails after the state update, inside the transaction
    with pytest.raises(TypeError):
        led.record_verdict(bad)
    assert led.challenge_state(cid) == "issued"
    assert led.verdicts() == []
    led.record_verdict(rec_for(cid))  # and the ledger is still usable
    assert led.challenge_state(cid) == "closed"


# ---- resume ----------------------------------------------------------------------------------


def test_resume_times_out_everything_in_flight_and_nothing_else(tmp_path):
    p = tmp_path / "l.sqlite3"
    led = Ledger(p)
    done = full(led, 0)
    issued = issue(led, 1)
    committed = issue(led, 2)
    led.record_commitment(committed, b"r" * 32, b"d" * 32, 1002 + 700)
    revealed = issue(led, 3)
    led.record_commitment(revealed, b"r" * 32, b"d" * 32, 1003)
    led.record_reveal(revealed, 1100)
    opened = issue(led, 4)
    led.record_commitment(opened, b"r" * 32, b"d" * 32, 1004)
    led.record_reveal(opened, 1100)
    led.record_openings(opened, "00", 1, 1350)
    busy = issue(led, 5)
    led.mark_busy(busy, 1200)
    led.close()  # the process "stops" here

    led = Ledger(p)
    try:
        closed = led.resume(50_000)
        assert closed == [issued, committed, revealed, opened]
        by_cid = {r.challenge_id: r for r in led.verdicts()}
        assert by_cid[done.challenge_id] == done
        for cid in closed:
            r = by_cid[cid]
            assert not r.passed and r.reasons == [R.TIMED_OUT_AT_RESTART]
            assert led.challenge_state(cid) == "closed"
        assert busy not in by_cid
        assert by_cid[committed].commit_seconds == pytest.approx(0.7)
        assert by_cid[opened].openings_seconds == pytest.approx(0.25)
        assert by_cid[issued].commit_seconds is None
        assert led.resume(60_000) == []  # nothing twice
    finally:
        led.close()


def test_resume_recovers_the_challenge_shape_from_the_signed_challenge(led):
    validator = Identity.generate()
    body = Challenge(
        challenge_id=bytes.fromhex(cid_of(3)),
        executor_id="e1",
        seed=b"\x01" * 32,
        n=256,
        steps=17,
        b_matrices=4,
        samples=12,
        commit_deadline_ms=9000,
        openings_timeout_ms=5000,
        sample_commit=b"\x02" * 32,
    )
    raw = encode_envelope(body, validator, seq=1, now_ms=1000)
    led.record_challenge(cid_of(3), "e1", "m1", raw, b"s" * 32, 1000, 9000)
    assert len(bytes.fromhex(cid_of(3))) == C.CHALLENGE_ID_BYTES
    assert led.resume(20_000) == [cid_of(3)]
    (r,) = led.verdicts()
    assert (r.validator_id, r.n, r.T, r.m, r.k, r.created_ms) == (validator.peer_id, 256, 17, 4, 12, 1000)


def test_restart_timeouts_do_not_count_in_the_score(led):
    for i in range(3):
        full(led, i, pf=0.8)
    issue(led, 10)
    led.resume(99_999)
    assert led.executor_score("e1") == pytest.approx(0.8)
    (row,) = led.executor_table(100_000)
    assert (row["passes"], row["fails"]) == (3, 0)
    assert row["last_verdict"] == R.TIMED_OUT_AT_RESTART


# ---- crash safety ----------------------------------------------------------------------------

WRITER = r"""
import sys
from node.roles.ledger import SCHEMA_VERSION, Ledger
from node.roles.verdicts import VerdictRecord

led = Ledger(sys.argv[1])
i = 0
while True:
    cid = f"{i:032x}"
    led.record_challenge(cid, "e1", "m1", b"raw", b"s" * 32, i, i + 1)
    led.record_commitment(cid, b"r" * 32, b"d" * 32, i)
    if i % 3 == 2:
        print("INFLIGHT", cid, flush=True)  # left in flight on purpose
    else:
        led.record_reveal(cid, i)
        led.record_verdict(VerdictRecord(cid, "v1", "e1", "m1", i % 2 == 0, ["passed" if i % 2 == 0 else "late-commitment"],
                                         64, 10, 4, 8, 0.5, 0.1, 0.01, 0.4, 1.0, i), now_ms=i)
        print("VERDICT", cid, flush=True)
    i += 1
"""


def test_kill_minus_9_mid_stream_loses_no_committed_verdict(tmp_path):
    p = tmp_path / "crash.sqlite3"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(p)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    verdicts: list[str] = []
    in_flight: list[str] = []
    try:
        deadline = time.monotonic() + 15
        while len(verdicts) < 80 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            kind, cid = line.split()
            (verdicts if kind == "VERDICT" else in_flight).append(cid)
        # the writer is still writing: kill it in the middle of whatever transaction it is in
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(verdicts) >= 80, proc.stderr.read()
    assert proc.returncode == -signal.SIGKILL

    led = Ledger(p)
    try:
        assert led.integrity_check() == "ok"
        stored = {r.challenge_id: r for r in led.verdicts()}
        for cid in verdicts:  # every verdict the writer saw committed is there, intact
            i = int(cid, 16)
            assert stored[cid].passed == (i % 2 == 0) and stored[cid].created_ms == i
        resumed = set(led.resume(10**9))
        assert set(in_flight) <= resumed  # what was in flight ends as timed out, not lost
        assert not resumed & set(verdicts)
        # afterwards nothing is pending and every challenge has exactly one verdict
        n_challenges = led._db.execute("SELECT count(*) FROM challenges").fetchone()[0]
        assert len(led.verdicts()) == n_challenges
        assert led._db.execute("SELECT count(*) FROM challenges WHERE state NOT IN ('closed', 'busy')").fetchone()[0] == 0
        with pytest.raises(DuplicateChallengeError):  # ids seen before the crash stay refused
            led.record_challenge(verdicts[0], "e1", "m1", b"x", b"y", 1, 2)
    finally:
        led.close()


# ---- scores ----------------------------------------------------------------------------------


def test_score_is_pass_rate_times_mean_factor_of_the_passes(led):
    assert led.executor_score("e1") == 0.0  # no verdict yet
    full(led, 0, pf=1.0)
    full(led, 1, pf=0.5)
    full(led, 2, passed=False, pf=0.0)
    full(led, 3, pf=0.9)
    # 3 passes of 4, mean factor of the passes (1.0 + 0.5 + 0.9) / 3 = 0.8
    assert led.executor_score("e1") == pytest.approx(0.75 * 0.8)
    assert led.executor_score("e2") == 0.0


def test_score_window_keeps_only_the_latest_verdicts(tmp_path):
    led = Ledger(tmp_path / "w.sqlite3", score_window=4)
    try:
        for i in range(4):
            full(led, i, passed=False)
        assert led.executor_score("e1") == 0.0
        for i in range(4, 7):
            full(led, i)
        assert led.executor_score("e1") == pytest.approx(0.75)  # 3 of the last 4
        full(led, 7)
        assert led.executor_score("e1") == pytest.approx(1.0)
    finally:
        led.close()


def test_a_pass_without_a_profile_earns_correctness_but_no_credit(led):
    full(led, 0, reasons=[R.UNKNOWN_PROFILE], pf=0.0)
    assert led.executor_score("e1") == 0.0
    (row,) = led.executor_table(5000)
    assert (row["passes"], row["pass_rate"], row["score"]) == (1, 1.0, 0.0)


def test_scores_are_per_executor(led):
    full(led, 0, "e1", pf=1.0)
    full(led, 1, "e2", passed=False)
    full(led, 2, "e2", pf=0.6)
    assert led.executor_score("e1") == pytest.approx(1.0)
    assert led.executor_score("e2") == pytest.approx(0.5 * 0.6)


def test_executor_table_rows(led):
    full(led, 0, "e1", pf=1.0)
    full(led, 1, "e2", passed=False, reasons=["false-proof:relation", "false-proof:row-merkle"], miner="m2")
    led.ban("m2", 3_600_000, "false proof by one of its executors")
    rows = {r["executor"]: r for r in led.executor_table(10_000)}
    assert set(rows) == {"e1", "e2"}
    e1, e2 = rows["e1"], rows["e2"]
    assert (e1["miner"], e1["passes"], e1["fails"], e1["pass_rate"], e1["score"]) == ("m1", 1, 0, 1.0, 1.0)
    assert list(e1) == [
        "executor",
        "miner",
        "passes",
        "fails",
        "pass_rate",
        "perf_factor",
        "score",
        "proven_bytes",
        "weighted_score",
        "last_verdict",
        "banned",
    ]
    assert (e1["last_verdict"], e1["banned"]) == ("pass", "")
    assert (e2["passes"], e2["fails"], e2["score"]) == (0, 1, 0.0)
    assert e2["last_verdict"] == "false-proof:relation,false-proof:row-merkle"
    assert e2["banned"] == "3590 s"  # through its miner


# ---- foreign verdicts ------------------------------------------------------------------------


def test_foreign_verdicts_keep_the_first_receipt(led):
    assert led.record_foreign_verdict("v2", cid_of(1), "e1", "m1", True, [R.PASSED], 900_000, 5000)
    assert not led.record_foreign_verdict("v2", cid_of(1), "e1", "m1", True, [R.PASSED], 900_000, 6000)
    assert led.record_foreign_verdict("v3", cid_of(1), "e1", "m1", False, [R.SLOW_FOR_PROFILE], 0, 5500)
    assert led.foreign_receipts() == [(cid_of(1), 5000), (cid_of(1), 5500)]
    (v3,) = [d for d in led.foreign_verdicts("e1") if d["validator_id"] == "v3"]
    assert v3["passed"] is False and v3["reasons"] == [R.SLOW_FOR_PROFILE] and v3["score_ppm"] == 0
    assert led.verdicts() == []  # never mixed with this validator's own


# ---- bans ------------------------------------------------------------------------------------


def test_bans_expire_extend_and_survive_a_restart(tmp_path):
    p = tmp_path / "b.sqlite3"
    led = Ledger(p)
    led.ban("e1", 10_000, "false proof", now_ms=1000)
    assert led.is_banned("e1", 9_999)
    assert not led.is_banned("e1", 10_000)
    assert not led.is_banned("e2", 0)
    led.ban("e1", 5_000, "shorter")  # a shorter ban never shortens a longer one
    assert led.is_banned("e1", 9_000)
    led.ban("e1", 20_000, "fraud evidence from v2")
    (b,) = led.bans()
    assert (b["until_ms"], b["reason"], b["since_ms"]) == (20_000, "fraud evidence from v2", 1000)
    led.close()
    led = Ledger(p)
    try:
        assert led.is_banned("e1", 19_999)
        assert not led.is_banned("e1", 20_001)
    finally:
        led.close()


# ---- concurrency -----------------------------------------------------------------------------


def test_writes_from_many_threads_are_serialised(led):
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for j in range(25):
                i = t * 1000 + j
                cid = issue(led, i, executor=f"e{t}")
                led.record_commitment(cid, b"r" * 32, b"d" * 32, i)
                led.record_verdict(rec_for(cid, f"e{t}", created_ms=i))
                led.executor_score(f"e{t}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(led.verdicts()) == 150
    assert all(led.executor_score(f"e{t}") == 1.0 for t in range(6))


def test_another_process_can_read_while_the_validator_writes(tmp_path, led):
    full(led, 0)
    reader = Ledger(tmp_path / "ledger.sqlite3")  # as `gpow status` and the harness report do
    try:
        issue(led, 1)
        assert [r.challenge_id for r in reader.verdicts()] == [cid_of(0)]
        assert reader.integrity_check() == "ok"
    finally:
        reader.close()


def test_ledger_files_are_owner_only(tmp_path):
    """It holds the reveal secrets of challenges in flight (issue 19): mode 0600 like the key, also
    when an older version left it 0644, and SQLite's -wal file follows."""
    import os
    import stat

    from node.roles.ledger import Ledger

    old = tmp_path / "old.sqlite3"
    old.touch(mode=0o644)
    os.chmod(old, 0o644)
    for path in (tmp_path / "new.sqlite3", old):
        ledger = Ledger(path)
        try:
            for f in (path, path.with_name(path.name + "-wal")):
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        finally:
            ledger.close()


def test_a_stored_verdict_waits_in_the_outbox_until_published(tmp_path):
    """A verdict and its signed message are stored in one transaction; until a publish reaches a
    peer it stays queued, across a restart (the outbox is in the ledger)."""
    from node.roles.ledger import Ledger

    path = tmp_path / "ledger.sqlite3"
    led = Ledger(path)
    for i in range(3):
        cid = f"{i:032x}"
        led.record_challenge(cid, "ex", "mi", b"c", b"s", 1000 + i, 2000)
        led.record_verdict(rec_for(cid), 1500 + i, outbox=("gpow/verdict/1", b"signed-" + bytes([i])))
    assert [c for c, _, _ in led.unpublished()] == [f"{i:032x}" for i in range(3)]
    led.mark_published(f"{0:032x}", 3000)
    led.close()
    led = Ledger(path)  # a restart: what was not delivered is still there
    assert [(c, t, d) for c, t, d in led.unpublished()] == [
        (f"{i:032x}", "gpow/verdict/1", b"signed-" + bytes([i])) for i in (1, 2)
    ]
    led.close()


def test_a_version_1_ledger_gains_the_outbox(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    from node.roles.ledger import _SCHEMA

    v1 = _SCHEMA[: _SCHEMA.index("CREATE TABLE outbox")] + _SCHEMA[_SCHEMA.index("CREATE TABLE bans") :]
    for stmt in v1.split(";"):
        if stmt.strip():
            db.execute(stmt)
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    from node.roles.ledger import Ledger

    led = Ledger(path)
    assert led._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert led.unpublished() == []
    led.close()


def test_scores_are_weighted_by_the_memory_proven(tmp_path):
    """Two executors passing every challenge at full speed: the one whose credited challenges
    held twice the pool counts twice; probation (no-credit) passes prove nothing."""
    from node.pow.engine import pool_bytes
    from node.roles.ledger import Ledger

    led = Ledger(tmp_path / "l.sqlite3")
    for i, (eid, T) in enumerate([("small", 1000), ("big", 2000)]):
        cid = f"{i:032x}"
        led.record_challenge(cid, eid, "m", b"c", b"s", 1000, 2000)
        r = rec_for(cid, eid)
        r.n, r.T = 4096, T
        led.record_verdict(r, 1500)
    led.record_challenge(f"{9:032x}", "new", "m", b"c", b"s", 1000, 2000)
    probation = rec_for(f"{9:032x}", "new", reasons=[f"{R.NO_CREDIT}:probation"])
    led.record_verdict(probation, 1500)
    assert led.proven_bytes("small") == pool_bytes(4096, 1000) and led.proven_bytes("new") == 0
    assert led.weighted_score("big") / led.weighted_score("small") == pytest.approx(
        pool_bytes(4096, 2000) / pool_bytes(4096, 1000)
    )
    assert led.weighted_score("new") == 0.0
    led.close()
