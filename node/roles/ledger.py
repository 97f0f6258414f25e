"""The validator's ledger: challenges, commitments, opening hashes, verdicts and bans in SQLite.

Durability: WAL journal, ``synchronous = FULL`` and one transaction per state change. FULL syncs
the WAL at every commit, so a committed verdict survives a power cut as well as a killed process
(NORMAL would only survive the latter). The cost is one fsync per state change; a validator makes
a handful per challenge and a few challenges per second at most, so it is negligible.

A challenge moves through ``issued -> committed -> revealed -> opened`` and ends ``closed``
(a verdict stored with it, in the same transaction) or ``busy`` (the executor proved it was
busy; never scored). ``resume`` closes whatever was still in flight when the last process died,
with a ``timed-out-at-restart`` verdict, so nothing is lost and nothing stays pending.

Thread safety: one connection (``check_same_thread=False``) behind a lock, so it can be used
from the trio thread (short synchronous writes) and from worker threads. Other processes
(``gpow status``, the harness report) may open the same file at the same time.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from node import clock
from node.pow.engine import pool_bytes
from node.roles import verdicts as R
from node.roles.verdicts import VerdictRecord

SCHEMA_VERSION = 2
DEFAULT_SCORE_WINDOW = 20  # verdicts in an executor's rolling score
FOREIGN_VERDICTS_PER_VALIDATOR = 10_000  # rows of foreign_verdicts kept per other validator (newest)
FOREIGN_TRIM_EVERY = 100  # inserts per validator between trims: at most this many rows over the bound

# States of a challenge row.
ISSUED, COMMITTED, REVEALED, OPENED, BUSY, CLOSED = "issued", "committed", "revealed", "opened", "busy", "closed"
UNJUDGED = "unjudged"  # ended without a verdict: our own stall decided the time, or the round's draw was unknown to it
IN_FLIGHT = (ISSUED, COMMITTED, REVEALED, OPENED)

# Run statement by statement inside one transaction (split on ";", so no ";" in the comments)
_SCHEMA = """
CREATE TABLE challenges (
    cid TEXT PRIMARY KEY,            -- hex challenge id: a primary key, so never recorded twice
    executor_id TEXT NOT NULL,
    miner_id TEXT NOT NULL,
    raw BLOB NOT NULL,               -- the signed challenge envelope as sent
    secret BLOB NOT NULL,            -- the reveal secret
    issued_ms INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,    -- commitment deadline
    state TEXT NOT NULL,
    root BLOB, d_final BLOB, committed_ms INTEGER,
    revealed_ms INTEGER,
    openings_sha256 TEXT, openings_size INTEGER, openings_ms INTEGER,
    busy_ms INTEGER,
    closed_ms INTEGER
);
CREATE INDEX challenges_state ON challenges(state);
CREATE INDEX challenges_executor ON challenges(executor_id);
CREATE TABLE verdicts (
    cid TEXT PRIMARY KEY REFERENCES challenges(cid),
    validator_id TEXT NOT NULL,
    executor_id TEXT NOT NULL,
    miner_id TEXT NOT NULL,
    passed INTEGER NOT NULL,
    reasons TEXT NOT NULL,           -- JSON list of strings
    scored INTEGER NOT NULL,         -- 0: says nothing about the executor (timed out at restart)
    n INTEGER NOT NULL, T INTEGER NOT NULL, m INTEGER NOT NULL, k INTEGER NOT NULL,
    commit_seconds REAL, openings_seconds REAL, verify_seconds REAL, expected_seconds REAL,
    performance_factor REAL NOT NULL,
    created_ms INTEGER NOT NULL,
    recorded_ms INTEGER NOT NULL
);
CREATE INDEX verdicts_executor ON verdicts(executor_id, created_ms);
CREATE TABLE foreign_verdicts (
    validator_id TEXT NOT NULL,
    cid TEXT NOT NULL,
    executor_id TEXT NOT NULL,
    miner_id TEXT NOT NULL,
    passed INTEGER NOT NULL,
    reasons TEXT NOT NULL,
    score_ppm INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,    -- first receipt
    PRIMARY KEY (validator_id, cid)
);
CREATE INDEX foreign_executor ON foreign_verdicts(executor_id);
CREATE TABLE outbox (
    cid TEXT PRIMARY KEY REFERENCES verdicts(cid),
    topic TEXT NOT NULL,
    data BLOB NOT NULL,              -- the signed message, published as is (same id on every try)
    created_ms INTEGER NOT NULL,
    published_ms INTEGER             -- NULL until a publish reached at least one peer
);
CREATE INDEX outbox_pending ON outbox(published_ms);
CREATE TABLE bans (
    peer_id TEXT PRIMARY KEY,
    until_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    since_ms INTEGER NOT NULL
);
"""

_OUTBOX_V2 = _SCHEMA[_SCHEMA.index("CREATE TABLE outbox") : _SCHEMA.index("CREATE TABLE bans")]

_VERDICT_COLS = (
    "cid",
    "validator_id",
    "executor_id",
    "miner_id",
    "passed",
    "reasons",
    "n",
    "T",
    "m",
    "k",
    "commit_seconds",
    "openings_seconds",
    "verify_seconds",
    "expected_seconds",
    "performance_factor",
    "created_ms",
)


class LedgerError(Exception):
    """A ledger operation that cannot be done (the message says why)."""


class DuplicateChallengeError(LedgerError):
    """A challenge id that is already in the ledger: ids are never accepted twice."""


class UnknownChallengeError(LedgerError):
    """A state change for a challenge id the ledger never issued."""


class ChallengeClosedError(LedgerError):
    """A state change for a challenge that already ended (verdict stored, or busy)."""


class Ledger:
    def __init__(self, path: str | Path, *, score_window: int = DEFAULT_SCORE_WINDOW):
        self.path = Path(path)
        self.score_window = score_window
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # It holds the reveal secrets of challenges in flight: owner-only, like the key file
        # (SQLite gives its -wal and -shm files the database's mode).
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        if self.path.stat().st_mode & 0o077:
            self.path.chmod(0o600)
        self._lock = threading.Lock()
        self._foreign_added: dict[str, int] = {}  # foreign verdicts inserted per validator since its last trim
        # isolation_level=None: no implicit transactions; each state change opens its own.
        self._db = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA busy_timeout = 10000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise LedgerError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); is it on a network filesystem?")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
            self._bans: dict[str, int] = {
                r["peer_id"]: r["until_ms"] for r in self._db.execute("SELECT peer_id, until_ms FROM bans")
            }
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise LedgerError(f"{self.path}: cannot open the ledger: {exc}") from exc
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        with self._tx():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise LedgerError(f"{self.path}: ledger schema v{version} is newer than this gpow (v{SCHEMA_VERSION})")
            if version == 0:
                tables = self._db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
                if tables:
                    raise LedgerError(f"{self.path}: not a gpow ledger (tables present, no schema version)")
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                return
            if version == 1:  # v2 adds the verdict outbox and an index for challenges_issued
                self._db.execute("CREATE INDEX IF NOT EXISTS challenges_executor ON challenges(executor_id)")
                for stmt in _OUTBOX_V2.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock: committed whole, or rolled back whole."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- challenges ----------------------------------------------------------------------------

    def record_challenge(
        self, cid: str, executor_id: str, miner_id: str, raw: bytes, secret: bytes, now_ms: int, deadline_ms: int
    ) -> None:
        """Store a freshly issued challenge; a challenge id already in the ledger is refused."""
        with self._tx() as db:
            try:
                db.execute(
                    "INSERT INTO challenges (cid, executor_id, miner_id, raw, secret, issued_ms, deadline_ms, state) VALUES (?,?,?,?,?,?,?,?)",
                    (cid, executor_id, miner_id, bytes(raw), bytes(secret), now_ms, deadline_ms, ISSUED),
                )
            except sqlite3.IntegrityError:
                raise DuplicateChallengeError(f"challenge id {cid} is already in the ledger") from None

    def challenges_issued(self, executor_id: str) -> int:
        """How many challenges this ledger ever issued to an executor id: its history here, which
        probation reads (an id that leaves a roster and comes back keeps it)."""
        return int(self._read("SELECT COUNT(*) AS c FROM challenges WHERE executor_id = ?", (executor_id,))[0]["c"])

    def _advance(self, db: sqlite3.Connection, cid: str, sets: str, args: tuple, new_state: str) -> None:
        row = db.execute("SELECT state FROM challenges WHERE cid = ?", (cid,)).fetchone()
        if row is None:
            raise UnknownChallengeError(f"challenge {cid} was never issued by this ledger")
        if row["state"] not in IN_FLIGHT:
            raise ChallengeClosedError(f"challenge {cid} already ended ({row['state']})")
        db.execute(f"UPDATE challenges SET {sets}, state = ? WHERE cid = ?", (*args, new_state, cid))

    def record_commitment(self, cid: str, root: bytes, d_final: bytes, now_ms: int) -> None:
        with self._tx() as db:
            self._advance(db, cid, "root = ?, d_final = ?, committed_ms = ?", (bytes(root), bytes(d_final), now_ms), COMMITTED)

    def record_reveal(self, cid: str, now_ms: int) -> None:
        with self._tx() as db:
            self._advance(db, cid, "revealed_ms = ?", (now_ms,), REVEALED)

    def record_openings(self, cid: str, sha256_hex: str, size: int, now_ms: int) -> None:
        with self._tx() as db:
            self._advance(db, cid, "openings_sha256 = ?, openings_size = ?, openings_ms = ?", (sha256_hex, size, now_ms), OPENED)

    def mark_busy(self, cid: str, now_ms: int) -> None:
        """The executor answered with a valid signed BUSY: the challenge ends without a verdict."""
        with self._tx() as db:
            self._advance(db, cid, "busy_ms = ?, closed_ms = ?", (now_ms, now_ms), BUSY)

    def mark_unjudged(self, cid: str, now_ms: int) -> None:
        """The challenge ends without a verdict for a reason that is nobody's fault (our event
        loop's stall decided the time; the executor could not yet tell whose turn the round was)."""
        with self._tx() as db:
            self._advance(db, cid, "closed_ms = ?", (now_ms,), UNJUDGED)

    def challenge_state(self, cid: str) -> str | None:
        rows = self._read("SELECT state FROM challenges WHERE cid = ?", (cid,))
        return rows[0]["state"] if rows else None

    def challenge(self, cid: str) -> dict[str, Any] | None:
        rows = self._read("SELECT * FROM challenges WHERE cid = ?", (cid,))
        return dict(rows[0]) if rows else None

    # ---- verdicts ------------------------------------------------------------------------------

    def record_verdict(self, rec: VerdictRecord, now_ms: int | None = None, *, outbox: tuple[str, bytes] | None = None) -> None:
        """Store the verdict and close its challenge, in one transaction; with ``outbox`` (topic,
        signed message) also queue it for publishing, so a verdict stored is never one lost."""
        now = now_ms if now_ms is not None else clock.now_ms()
        with self._tx() as db:
            self._store_verdict(db, rec, now)
            if outbox is not None:
                db.execute(
                    "INSERT INTO outbox (cid, topic, data, created_ms) VALUES (?,?,?,?)",
                    (rec.challenge_id, outbox[0], bytes(outbox[1]), now),
                )

    def unpublished(self, limit: int = 64) -> list[tuple[str, str, bytes]]:
        """Queued messages no publish has delivered yet, oldest first: (cid, topic, data)."""
        rows = self._read("SELECT cid, topic, data FROM outbox WHERE published_ms IS NULL ORDER BY created_ms LIMIT ?", (limit,))
        return [(r["cid"], r["topic"], bytes(r["data"])) for r in rows]

    def mark_published(self, cid: str, now_ms: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET published_ms = ? WHERE cid = ? AND published_ms IS NULL", (now_ms, cid))

    def _store_verdict(self, db: sqlite3.Connection, rec: VerdictRecord, now_ms: int) -> None:
        self._advance(db, rec.challenge_id, "closed_ms = ?", (now_ms,), CLOSED)
        d = rec.to_dict()
        values = [d["challenge_id"] if c == "cid" else d[c] for c in _VERDICT_COLS]
        values[_VERDICT_COLS.index("passed")] = int(bool(rec.passed))
        values[_VERDICT_COLS.index("reasons")] = json.dumps(list(rec.reasons))
        db.execute(
            f"INSERT INTO verdicts ({', '.join(_VERDICT_COLS)}, scored, recorded_ms) VALUES ({', '.join('?' * (len(_VERDICT_COLS) + 2))})",
            (*values, int(R.is_scored(rec.reasons)), now_ms),
        )

    def resume(self, now_ms: int) -> list[str]:
        """Close every challenge left in flight by the last process, as timed out; return their ids.

        Each gets a stored verdict (failed, reason ``timed-out-at-restart``, left out of scores:
        the validator stopped, not the executor) in the same transaction that closes it.
        """
        closed = []
        with self._tx() as db:
            rows = db.execute(
                f"SELECT * FROM challenges WHERE state IN ({','.join('?' * len(IN_FLIGHT))}) ORDER BY issued_ms, cid", IN_FLIGHT
            ).fetchall()
            for row in rows:
                self._store_verdict(db, self._timed_out_record(row), now_ms)
                closed.append(row["cid"])
        return closed

    @staticmethod
    def _timed_out_record(row: sqlite3.Row) -> VerdictRecord:
        validator_id, n, T, m, k = "", 0, 0, 0, 0
        try:  # the signed challenge says who issued it and its shape
            from node.wire import decode_envelope
            from node.wire.messages import Challenge

            env = decode_envelope(row["raw"], expect=Challenge)
            validator_id, n, T, m, k = env.sender, env.body.n, env.body.steps, env.body.b_matrices, env.body.samples
        except Exception:
            pass  # a record without its shape is still a record: keep the verdict
        commit = (row["committed_ms"] - row["issued_ms"]) / 1000 if row["committed_ms"] is not None else None
        openings = (
            (row["openings_ms"] - row["revealed_ms"]) / 1000
            if row["openings_ms"] is not None and row["revealed_ms"] is not None
            else None
        )
        return VerdictRecord(
            challenge_id=row["cid"],
            validator_id=validator_id,
            executor_id=row["executor_id"],
            miner_id=row["miner_id"],
            passed=False,
            reasons=[R.TIMED_OUT_AT_RESTART],
            n=n,
            T=T,
            m=m,
            k=k,
            commit_seconds=commit,
            openings_seconds=openings,
            verify_seconds=None,
            expected_seconds=None,
            performance_factor=0.0,
            created_ms=row["issued_ms"],
        )

    @staticmethod
    def _rec(row: sqlite3.Row) -> VerdictRecord:
        d = {("challenge_id" if c == "cid" else c): row[c] for c in _VERDICT_COLS}
        d["passed"] = bool(d["passed"])
        d["reasons"] = json.loads(d["reasons"])
        return VerdictRecord.from_dict(d)

    def verdicts(self, executor_id: str | None = None) -> list[VerdictRecord]:
        """Stored verdicts, oldest first (optionally of one executor)."""
        if executor_id is None:
            rows = self._read("SELECT * FROM verdicts ORDER BY created_ms, rowid")
        else:
            rows = self._read("SELECT * FROM verdicts WHERE executor_id = ? ORDER BY created_ms, rowid", (executor_id,))
        return [self._rec(r) for r in rows]

    def verdict(self, cid: str) -> VerdictRecord | None:
        rows = self._read("SELECT * FROM verdicts WHERE cid = ?", (cid,))
        return self._rec(rows[0]) if rows else None

    # ---- scores --------------------------------------------------------------------------------

    def _score_parts(self, executor_id: str) -> tuple[int, int, float, float]:
        """(passes, fails, mean performance factor of the passes, score) over the scoring window."""
        rows = self._read(
            "SELECT passed, performance_factor FROM verdicts WHERE executor_id = ? AND scored = 1 ORDER BY created_ms DESC, rowid DESC LIMIT ?",
            (executor_id, self.score_window),
        )
        passes = [r["performance_factor"] for r in rows if r["passed"]]
        fails = len(rows) - len(passes)
        if not rows:
            return 0, 0, 0.0, 0.0
        mean_pf = sum(passes) / len(passes) if passes else 0.0
        return len(passes), fails, mean_pf, len(passes) / len(rows) * mean_pf

    def executor_score(self, executor_id: str) -> float:
        """Rolling pass rate over the last ``score_window`` scored verdicts, times the mean
        performance factor of the passing ones; 0.0 with no verdict yet.

        A failed verdict already counts in the pass rate, so its performance factor is left out
        of the mean (counting it there too would penalise one failure twice). A pass on a model
        with no profile has factor 0: correct, but no performance credit.
        """
        return self._score_parts(executor_id)[3]

    def proven_bytes(self, executor_id: str) -> int:
        """The pool its latest credited pass proved it held (pool_bytes(n, T)); 0 with none.
        Probation, unmeasured profiles and challenges too short to time are not credited."""
        rows = self._read(
            "SELECT n, T FROM verdicts WHERE executor_id = ? AND passed = 1 AND scored = 1 "
            "ORDER BY created_ms DESC, rowid DESC LIMIT 1",
            (executor_id,),
        )
        return pool_bytes(rows[0]["n"], rows[0]["T"]) if rows else 0

    def weighted_score(self, executor_id: str) -> float:
        """The score weighted by the memory proven: score x GiB held. A card that proves twice the
        memory at the same pass rate and speed counts twice."""
        return self.executor_score(executor_id) * self.proven_bytes(executor_id) / 2**30

    def executor_table(self, now_ms: int) -> list[dict[str, Any]]:
        """One row per executor with a verdict here, for ``gpow status``.

        ``passes``/``fails``/``pass_rate``/``perf_factor``/``score`` are over the scoring window
        (restart timeouts left out); ``banned`` is the time left on a ban of the executor or of
        its miner, empty when none.
        """
        eids = [r["executor_id"] for r in self._read("SELECT DISTINCT executor_id FROM verdicts ORDER BY executor_id")]
        out = []
        for eid in eids:
            last = self._read(
                "SELECT * FROM verdicts WHERE executor_id = ? ORDER BY created_ms DESC, rowid DESC LIMIT 1", (eid,)
            )[0]
            passes, fails, mean_pf, score = self._score_parts(eid)
            banned_until = max(self._bans.get(eid, 0), self._bans.get(last["miner_id"], 0))
            proven = self.proven_bytes(eid)
            out.append(
                {
                    "executor": eid,
                    "miner": last["miner_id"],
                    "passes": passes,
                    "fails": fails,
                    "pass_rate": passes / (passes + fails) if passes + fails else 0.0,
                    "perf_factor": mean_pf,
                    "score": score,
                    "proven_bytes": proven,
                    "weighted_score": score * proven / 2**30,
                    "last_verdict": "pass" if last["passed"] else ",".join(json.loads(last["reasons"])),
                    "banned": f"{(banned_until - now_ms) / 1000:.0f} s" if banned_until > now_ms else "",
                }
            )
        return out

    # ---- other validators' verdicts ------------------------------------------------------------

    def record_foreign_verdict(
        self,
        validator_id: str,
        cid: str,
        executor_id: str,
        miner_id: str,
        passed: bool,
        reasons: list[str],
        score_ppm: int,
        received_ms: int,
    ) -> bool:
        """Store a verdict gossiped by another validator; False if it was already here (first receipt kept).
        Each foreign validator keeps at most FOREIGN_VERDICTS_PER_VALIDATOR rows, its oldest dropped
        first, so one validator's flood cannot grow the ledger without bound or evict another's."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO foreign_verdicts VALUES (?,?,?,?,?,?,?,?)",
                (
                    validator_id,
                    cid,
                    executor_id,
                    miner_id,
                    int(bool(passed)),
                    json.dumps(list(reasons)),
                    int(score_ppm),
                    received_ms,
                ),
            )
            if cur.rowcount != 1:
                return False
            self._foreign_added[validator_id] = self._foreign_added.get(validator_id, 0) + 1
            if self._foreign_added[validator_id] >= FOREIGN_TRIM_EVERY:  # trim in batches: a count per insert would cost more
                self._foreign_added[validator_id] = 0
                n = db.execute("SELECT count(*) FROM foreign_verdicts WHERE validator_id = ?", (validator_id,)).fetchone()[0]
                if n > FOREIGN_VERDICTS_PER_VALIDATOR:
                    db.execute(
                        "DELETE FROM foreign_verdicts WHERE rowid IN (SELECT rowid FROM foreign_verdicts WHERE validator_id = ? "
                        "ORDER BY received_ms, rowid LIMIT ?)",
                        (validator_id, n - FOREIGN_VERDICTS_PER_VALIDATOR),
                    )
            return True

    def recorded_times(self) -> dict[str, int]:
        """challenge id -> when its verdict was stored here (just before it was gossiped)."""
        return {r["cid"]: r["recorded_ms"] for r in self._read("SELECT cid, recorded_ms FROM verdicts")}

    def foreign_receipts(self) -> list[tuple[str, int]]:
        """(challenge id, first received ms) of every verdict received from other validators."""
        return [
            (r["cid"], r["received_ms"])
            for r in self._read("SELECT cid, received_ms FROM foreign_verdicts ORDER BY received_ms, rowid")
        ]

    def foreign_verdicts(self, executor_id: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM foreign_verdicts", ()
        if executor_id is not None:
            sql, args = sql + " WHERE executor_id = ?", (executor_id,)
        out = []
        for r in self._read(sql + " ORDER BY received_ms, rowid", args):
            d = dict(r)
            d["passed"], d["reasons"] = bool(d["passed"]), json.loads(d["reasons"])
            out.append(d)
        return out

    # ---- bans ----------------------------------------------------------------------------------

    def ban(self, peer_id: str, until_ms: int, reason: str, now_ms: int | None = None) -> None:
        """Ban a peer until ``until_ms``; a longer ban already in place is kept."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO bans VALUES (?,?,?,?) ON CONFLICT(peer_id) DO UPDATE SET "
                "reason = CASE WHEN excluded.until_ms > until_ms THEN excluded.reason ELSE reason END, "
                "until_ms = max(until_ms, excluded.until_ms)",
                (peer_id, until_ms, reason, now_ms if now_ms is not None else clock.now_ms()),
            )
            self._bans[peer_id] = max(self._bans.get(peer_id, 0), until_ms)

    def is_banned(self, peer_id: str, now_ms: int) -> bool:
        # Served from memory: the validator asks for every executor several times a second.
        return self._bans.get(peer_id, 0) > now_ms

    def bans(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._read("SELECT * FROM bans ORDER BY peer_id")]

    # ---- health --------------------------------------------------------------------------------

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"``, or its findings joined by '; '."""
        rows = self._read("PRAGMA integrity_check")
        return "; ".join(str(r[0]) for r in rows)
