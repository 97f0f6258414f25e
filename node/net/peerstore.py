"""Known peers: signed peer records with expiry, a size cap, and per-peer dial backoff (sans-IO).

A peer record is a PeerRecord envelope signed by the peer it describes, so nobody can advertise
addresses for someone else. Records come from peer exchange and from gossip PRUNE peer exchange;
addresses announced in a handshake are not stored (they would let a stranger steer our dials).
Time is passed in: ``now_ms`` is the wall clock (record expiry), ``now`` is the monotonic clock of
the caller (dial backoff).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from node.wire.envelope import decode_envelope
from node.wire.errors import SchemaViolation, StaleMessage
from node.wire.messages import PeerRecord

MAX_RECORD_BYTES = 4096


@dataclass
class PeerEntry:
    peer_id: str
    addrs: list[str] = field(default_factory=list)
    role: str = ""
    expires_ms: int = 0  # the signed record's expiry
    record: bytes = b""  # the signed envelope, passed on in peer exchange
    record_seq: int = -1
    failures: int = 0
    next_dial_at: float = 0.0
    last_seen_ms: int = 0


def valid_ws_addr(addr: str) -> bool:
    if not isinstance(addr, str) or len(addr) > 200 or not addr.startswith(("ws://", "wss://")):
        return False
    hostport = addr.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


class PeerStore:
    def __init__(self, self_id: str, *, max_size: int, max_skew_ms: int, rng: random.Random | None = None) -> None:
        self.self_id = self_id
        self.max_size = max_size
        self.max_skew_ms = max_skew_ms
        self.rng = rng or random.Random()
        self.entries: dict[str, PeerEntry] = {}
        # Record bytes we already hold: peer exchange repeats the same records over and over,
        # and each new one costs a signature check; known bytes are recognised without one.
        self._known: dict[bytes, str] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, peer_id: str) -> PeerEntry | None:
        return self.entries.get(peer_id)

    def add_record(self, data: bytes, now_ms: int, *, protected: set[str] = frozenset()) -> str | None:
        """Store a signed peer record; return its peer id, None if it is ours or older than the one
        we hold. Raises a WireError for a bad record (the caller penalises who sent it)."""
        known = self._known.get(data)
        if known is not None and known in self.entries:
            e = self.entries[known]
            if e.expires_ms <= now_ms:
                raise StaleMessage("peer record has expired")
            e.last_seen_ms = now_ms
            return None
        env = decode_envelope(data, max_bytes=MAX_RECORD_BYTES, expect=PeerRecord)
        rec: PeerRecord = env.body
        if rec.expires_ms <= now_ms:
            raise StaleMessage("peer record has expired")
        if env.timestamp_ms > now_ms + self.max_skew_ms:
            raise StaleMessage("peer record is dated in the future")
        addrs = [a for a in rec.addrs if valid_ws_addr(a)]
        if not addrs:
            raise SchemaViolation("peer record has no usable ws:// address")
        if env.sender == self.self_id:
            return None
        e = self.entries.get(env.sender)
        if e is not None and e.record_seq >= env.seq:
            return None  # same or older record
        if e is None:
            self._make_room(now_ms, protected)
            e = self.entries[env.sender] = PeerEntry(env.sender)
        if e.record:
            self._known.pop(e.record, None)
        e.addrs, e.role, e.expires_ms, e.record, e.record_seq = addrs, rec.role, rec.expires_ms, bytes(data), env.seq
        self._known[e.record] = env.sender
        e.last_seen_ms = now_ms
        return env.sender

    def on_connected(self, peer_id: str, now_ms: int) -> None:
        e = self.entries.get(peer_id)
        if e is not None:
            e.failures = 0
            e.next_dial_at = 0.0
            e.last_seen_ms = now_ms

    def on_dial_failed(self, peer_id: str, now: float, min_s: float, max_s: float) -> float:
        """Exponential backoff with jitter; returns the delay before the next try."""
        e = self.entries.get(peer_id)
        if e is None:
            return 0.0
        e.failures += 1
        delay = backoff_delay(e.failures, min_s, max_s, self.rng)
        e.next_dial_at = now + delay
        return delay

    def expire(self, now_ms: int, *, protected: set[str] = frozenset()) -> int:
        """Drop expired records (not those of connected peers); return how many went."""
        gone = [
            p
            for p, e in self.entries.items()
            if p not in protected and ((e.expires_ms and e.expires_ms <= now_ms) or e.failures > 12)
        ]
        for p in gone:
            self._remove(p)
        return len(gone)

    def _remove(self, peer_id: str) -> None:
        e = self.entries.pop(peer_id, None)
        if e is not None and e.record:
            self._known.pop(e.record, None)

    def _make_room(self, now_ms: int, protected: set[str]) -> None:
        if len(self.entries) < self.max_size:
            return
        self.expire(now_ms, protected=protected)
        if len(self.entries) < self.max_size:
            return
        # Evict the least useful: most failures, then the soonest expiry.
        victims = sorted(
            (e for p, e in self.entries.items() if p not in protected), key=lambda e: (-e.failures, e.expires_ms or 0)
        )
        for e in victims[: len(self.entries) - self.max_size + 1]:
            self._remove(e.peer_id)

    def dial_candidates(self, now: float, exclude: set[str], limit: int) -> list[PeerEntry]:
        """Peers worth dialling now, in random order (so meshes do not all pick the same peers)."""
        cands = [e for p, e in self.entries.items() if p not in exclude and e.addrs and e.next_dial_at <= now]
        self.rng.shuffle(cands)
        cands.sort(key=lambda e: e.failures)
        return cands[:limit]

    def records(self, limit: int, *, exclude: set[str] = frozenset(), prefer: set[str] = frozenset()) -> list[bytes]:
        """Signed records to pass on (peers we are connected to first)."""
        have = [e for p, e in self.entries.items() if e.record and p not in exclude]
        self.rng.shuffle(have)
        have.sort(key=lambda e: (e.peer_id not in prefer, e.failures))
        return [e.record for e in have[:limit]]

    def records_for(self, peer_ids: list[str]) -> list[bytes]:
        return [e.record for p in peer_ids if (e := self.entries.get(p)) is not None and e.record]


def backoff_delay(failures: int, min_s: float, max_s: float, rng: random.Random) -> float:
    base = min(max_s, min_s * (2 ** min(max(failures - 1, 0), 20)))
    return base * (0.5 + rng.random())  # jitter: 0.5x .. 1.5x, so peers that failed together spread out
