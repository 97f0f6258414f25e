"""Gossipsub v1.1 router as a sans-IO state machine.

No I/O and no trio here: time comes in as ``now`` (float seconds, monotonic), randomness from an
injected ``random.Random``, and every method returns a list of actions for the caller to carry out:

- ``Send(peer, rpc)``: send one GossipRPC to a connected peer (control is batched per peer);
- ``Validate(peer, topic, msg_id, data)``: a new message to check; answer with ``validation_result``;
- ``Deliver(topic, msg_id, data)``: an accepted message for the application (once per id);
- ``Disconnect(peer, reason)``: a peer that stayed graylisted too long;
- ``PeerRecords(peer, records)``: signed peer records received through PRUNE peer exchange.

Message id = sha256 of the signed envelope bytes (content id). ``(origin, seq)`` is indexed so a
second, different message under the same pair is caught as equivocation: the origin is penalised
and both ids (and the data still cached) are kept as evidence.

Memory is bounded everywhere: seen ids, the message cache, pending validations, promises, backoff
entries, per-peer topics, per-heartbeat IHAVE counts, evidence and the (origin, seq) index.
"""

from __future__ import annotations

import enum
import hashlib
import random
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from node.gossip.mcache import MessageCache
from node.gossip.params import GossipParams
from node.gossip.scoring import PeerScore
from node.wire import constants as C
from node.wire.messages import GossipRPC, IHave, Prune, PublishedMessage, SubOpt

# Wire limits of GossipRPC (node.wire.constants): an outgoing RPC never exceeds them.
_MAX_PUBLISH = C.MAX_PUBLISH_PER_RPC
_MAX_IHAVE = C.MAX_IHAVE_PER_RPC
_MAX_IWANT = C.MAX_IWANT_IDS
_MAX_CONTROL = C.MAX_CONTROL_PER_RPC
_MAX_SUBS = C.MAX_SUBS_PER_RPC
_MAX_RPC_DATA = 4 * 1024 * 1024  # published bytes per RPC before a new one is started


def message_id(data: bytes) -> bytes:
    """The content id of a published envelope."""
    return hashlib.sha256(data).digest()


# ---- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    peer: str
    rpc: GossipRPC


class Validation(enum.Enum):
    """What the application says of a message (gossipsub v1.1): ACCEPT delivers and forwards it,
    REJECT penalises the peer that sent it (invalid), IGNORE drops it without blame."""

    ACCEPT = "accept"
    REJECT = "reject"
    IGNORE = "ignore"


@dataclass(frozen=True)
class Validate:
    peer: str
    topic: str
    msg_id: bytes
    data: bytes


@dataclass(frozen=True)
class Deliver:
    topic: str
    msg_id: bytes
    data: bytes


@dataclass(frozen=True)
class Disconnect:
    peer: str
    reason: str


@dataclass(frozen=True)
class PeerRecords:
    peer: str
    records: list[bytes]


Action = Send | Validate | Deliver | Disconnect | PeerRecords


@dataclass(frozen=True)
class Equivocation:
    """Two different messages signed by ``origin`` under one ``seq``."""

    origin: str
    seq: int
    first_id: bytes
    second_id: bytes
    first_data: bytes | None  # None when it had already left the message cache
    second_data: bytes
    at: float


# ---- state -------------------------------------------------------------------------------------


@dataclass
class PeerState:
    outbound: bool
    ip: str
    topics: set[str] = field(default_factory=set)
    graylisted_since: float | None = None
    disconnect_sent: bool = False


@dataclass
class _Pending:
    topic: str
    data: bytes
    peer: str
    at: float


class _Out:
    """Per-peer outgoing RPC parts, flushed as GossipRPCs within the wire limits."""

    __slots__ = ("subs", "publish", "ihave", "iwant", "graft", "prune")

    def __init__(self) -> None:
        self.subs: list[SubOpt] = []
        self.publish: list[PublishedMessage] = []
        self.ihave: list[IHave] = []
        self.iwant: list[bytes] = []
        self.graft: list[str] = []
        self.prune: list[Prune] = []

    def rpcs(self) -> list[GossipRPC]:
        if (
            len(self.publish) == 1
            and not (self.subs or self.ihave or self.iwant or self.graft or self.prune)
            and len(self.publish[0].data) <= _MAX_RPC_DATA
        ):
            return [GossipRPC(publish=self.publish)]  # the common case: one message forwarded
        out: list[GossipRPC] = []
        pubs = _chunk_publish(self.publish)
        n = max(
            1,
            len(pubs),
            -(-len(self.subs) // _MAX_SUBS),
            -(-len(self.ihave) // _MAX_IHAVE),
            -(-len(self.iwant) // _MAX_IWANT),
            -(-len(self.graft) // _MAX_CONTROL),
            -(-len(self.prune) // _MAX_CONTROL),
        )
        for i in range(n):
            out.append(
                GossipRPC(
                    subscriptions=self.subs[i * _MAX_SUBS : (i + 1) * _MAX_SUBS],
                    publish=pubs[i] if i < len(pubs) else [],
                    ihave=self.ihave[i * _MAX_IHAVE : (i + 1) * _MAX_IHAVE],
                    iwant=self.iwant[i * _MAX_IWANT : (i + 1) * _MAX_IWANT],
                    graft=self.graft[i * _MAX_CONTROL : (i + 1) * _MAX_CONTROL],
                    prune=self.prune[i * _MAX_CONTROL : (i + 1) * _MAX_CONTROL],
                )
            )
        return out


def _chunk_publish(msgs: list[PublishedMessage]) -> list[list[PublishedMessage]]:
    """Split published messages into groups that fit one RPC (count and bytes)."""
    chunks: list[list[PublishedMessage]] = []
    cur: list[PublishedMessage] = []
    size = 0
    for m in msgs:
        if cur and (len(cur) >= _MAX_PUBLISH or size + len(m.data) > _MAX_RPC_DATA):
            chunks.append(cur)
            cur, size = [], 0
        cur.append(m)
        size += len(m.data)
    if cur:
        chunks.append(cur)
    return chunks


class Router:
    """One node's gossipsub v1.1 router.

    Sets are sorted before they meet the RNG, so a seeded router behaves the same in every run
    (Python's string hashing differs between processes).
    """

    def __init__(
        self,
        my_id: str,
        params: GossipParams,
        rng: random.Random,
        *,
        px_source: Callable[[list[str]], list[bytes]] | None = None,
    ) -> None:
        self.my_id = my_id
        self.p = params
        self.rng = rng
        self.px_source = px_source
        self.peers: dict[str, PeerState] = {}
        self.topic_peers: dict[str, set[str]] = {}
        self.subscriptions: set[str] = set()
        self.mesh: dict[str, set[str]] = {}
        self.fanout: dict[str, set[str]] = {}
        self.fanout_last_pub: dict[str, float] = {}
        self.backoff: dict[tuple[str, str], float] = {}  # (topic, peer) -> expiry
        # Ids of messages accepted (or being validated) and of our own: id -> expiry, in insertion
        # order. Kept for seen_ttl_s, longer than a message stays fresh, so a replay inside the
        # freshness window is always a duplicate; when full, new messages are refused rather than
        # fresh ids evicted (evicting them would let their replays in again).
        self.seen: OrderedDict[bytes, float] = OrderedDict()
        # Ids rejected or ignored (stale, invalid): a separate bounded cache, so a flood of them
        # cannot push accepted ids out of ``seen``; losing one only costs a second validation.
        self.refused: OrderedDict[bytes, float] = OrderedDict()
        self.stale_in: dict[str, int] = {}  # stale messages received per peer this heartbeat
        self.mcache = MessageCache(
            params.mcache_len, params.mcache_gossip, max_messages=params.mcache_max_messages, max_bytes=params.mcache_max_bytes
        )
        self.pending: OrderedDict[bytes, _Pending] = OrderedDict()
        self.promises: dict[bytes, dict[str, float]] = {}  # id -> peer -> deadline
        self.n_promises = 0
        self.peerhave: dict[str, int] = {}  # IHAVEs received per peer this heartbeat
        self.iasked: dict[str, int] = {}  # ids we asked for per peer this heartbeat
        # (origin, seq) -> (message id, expiry), in insertion order. Kept for seq_index_ttl_s, longer
        # than a message stays fresh (both of an equivocating pair must arrive fresh), and capped in count.
        self.seq_index: OrderedDict[tuple[str, int], tuple[bytes, float]] = OrderedDict()
        self.evidence: deque[Equivocation] = deque(maxlen=params.max_equivocation_evidence)
        self.score = PeerScore(params, self.subscriptions)
        self.heartbeat_ticks = 0
        self.stats: dict[str, int] = {}
        self._out: dict[str, _Out] = {}

    # ---- helpers -------------------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def _o(self, pid: str) -> _Out:
        o = self._out.get(pid)
        if o is None:
            o = _Out()
            self._out[pid] = o
        return o

    def _flush(self, actions: list[Action]) -> list[Action]:
        for pid, o in self._out.items():
            if pid not in self.peers:
                continue
            for rpc in o.rpcs():
                actions.append(Send(pid, rpc))
        self._out = {}
        return actions

    def peer_score(self, pid: str, now: float) -> float:
        return self.score.score(pid, now)

    def _backoff_active(self, topic: str, pid: str, now: float) -> bool:
        exp = self.backoff.get((topic, pid))
        return exp is not None and exp > now

    def _set_backoff(self, topic: str, pid: str, until: float) -> None:
        key = (topic, pid)
        if self.backoff.get(key, 0.0) < until:
            if key not in self.backoff and len(self.backoff) >= self.p.max_backoff_entries:
                # Drop the entry closest to expiry rather than growing without bound.
                victim = min(self.backoff, key=self.backoff.__getitem__)
                del self.backoff[victim]
            self.backoff[key] = until

    def _mark_seen(self, msg_id: bytes, now: float) -> None:
        self.seen[msg_id] = now + self.p.seen_ttl_s
        self.seen.move_to_end(msg_id)
        while len(self.seen) > self.p.seen_max:  # only our own publishing gets here when full
            self.seen.popitem(last=False)
            self._count("seen_evicted")

    def _seen_has_room(self, now: float) -> bool:
        if len(self.seen) < self.p.seen_max:
            return True
        while self.seen:
            _, exp = next(iter(self.seen.items()))
            if exp > now:
                break
            self.seen.popitem(last=False)
        return len(self.seen) < self.p.seen_max

    def _mark_refused(self, msg_id: bytes, now: float) -> None:
        self.seen.pop(msg_id, None)
        self.refused[msg_id] = now + self.p.seen_ttl_s
        self.refused.move_to_end(msg_id)
        while len(self.refused) > self.p.refused_max:
            self.refused.popitem(last=False)

    def _make_prune(self, topic: str, pid: str, now: float, *, px: bool, backoff_s: int) -> Prune:
        records: list[bytes] = []
        if px and self.p.do_px and self.px_source is not None:
            cands = [q for q in sorted(self.topic_peers.get(topic, ())) if q != pid and self.score.score(q, now) >= 0]
            self.rng.shuffle(cands)
            try:
                records = list(self.px_source(cands[: self.p.prune_peers]))[: self.p.prune_peers]
            except Exception:  # a faulty source must not break the router
                self._count("px_source_error")
                records = []
        return Prune(topic=topic, backoff_s=int(backoff_s), peers=records)

    # ---- peers ---------------------------------------------------------------------------------

    def add_peer(self, pid: str, outbound: bool, ip: str, now: float) -> list[Action]:
        if pid == self.my_id:
            return []
        if pid in self.peers:
            self.peers[pid].outbound = outbound
            return []
        self.peers[pid] = PeerState(outbound=outbound, ip=ip)
        self.score.add_peer(pid, ip, now)
        if self.subscriptions:  # hello: tell it what we are subscribed to
            self._o(pid).subs.extend(SubOpt(topic=t, subscribe=True) for t in sorted(self.subscriptions))
        return self._flush([])

    def remove_peer(self, pid: str, now: float) -> None:
        st = self.peers.pop(pid, None)
        if st is None:
            return
        for t in st.topics:
            s = self.topic_peers.get(t)
            if s is not None:
                s.discard(pid)
                if not s:
                    del self.topic_peers[t]
        for m in self.mesh.values():
            if pid in m:
                m.discard(pid)
        for m in self.fanout.values():
            m.discard(pid)
        self.score.remove_peer(pid, now)
        self.peerhave.pop(pid, None)
        self.iasked.pop(pid, None)
        self.stale_in.pop(pid, None)
        self._out.pop(pid, None)

    def outbound(self, pid: str) -> bool:
        st = self.peers.get(pid)
        return st is not None and st.outbound

    # ---- subscriptions -------------------------------------------------------------------------

    def join(self, topic: str, now: float) -> list[Action]:
        if topic in self.subscriptions:
            return []
        self.subscriptions.add(topic)
        for pid in self.peers:
            self._o(pid).subs.append(SubOpt(topic=topic, subscribe=True))
        mesh: set[str] = set()
        fan = self.fanout.pop(topic, None)
        self.fanout_last_pub.pop(topic, None)
        if fan:
            mesh = {q for q in fan if q in self.peers and self.score.score(q, now) >= 0}
        if len(mesh) < self.p.D:
            cands = [
                q
                for q in sorted(self.topic_peers.get(topic, ()))
                if q not in mesh and not self._backoff_active(topic, q, now) and self.score.score(q, now) >= 0
            ]
            self.rng.shuffle(cands)
            mesh.update(cands[: self.p.D - len(mesh)])
        self.mesh[topic] = mesh
        for q in sorted(mesh):
            self.score.graft(q, topic, now)
            self._o(q).graft.append(topic)
        return self._flush([])

    def leave(self, topic: str, now: float) -> list[Action]:
        if topic not in self.subscriptions:
            return []
        self.subscriptions.discard(topic)
        for pid in self.peers:
            self._o(pid).subs.append(SubOpt(topic=topic, subscribe=False))
        for q in sorted(self.mesh.pop(topic, set())):
            self.score.prune(q, topic)
            self._o(q).prune.append(self._make_prune(topic, q, now, px=True, backoff_s=self.p.unsubscribe_backoff_s))
            self._set_backoff(topic, q, now + self.p.unsubscribe_backoff_s)
        return self._flush([])

    # ---- publishing ----------------------------------------------------------------------------

    def publish(
        self, topic: str, data: bytes, msg_id: bytes, now: float, *, origin: str | None = None, seq: int | None = None
    ) -> list[Action]:
        """Send our own (or re-gossiped) message. It is never delivered back to us."""
        first = msg_id not in self.seen
        self._mark_seen(msg_id, now)
        self.mcache.put(msg_id, topic, data)
        if origin is not None and seq is not None and first:
            self._index_seq(origin, seq, msg_id, data, now)
        self._count("published")
        peers: set[str] = set()
        tp = self.topic_peers.get(topic, set())
        if self.p.flood_publish:
            peers = {q for q in tp if self.score.score(q, now) >= self.p.publish_threshold}
        elif topic in self.mesh:
            peers = set(self.mesh[topic])
        else:
            fan = self.fanout.get(topic)
            if fan is None:
                cands = [q for q in sorted(tp) if self.score.score(q, now) >= self.p.publish_threshold]
                self.rng.shuffle(cands)
                fan = set(cands[: self.p.D])
                self.fanout[topic] = fan
            peers = set(fan)
        if topic not in self.subscriptions:
            self.fanout_last_pub[topic] = now
        msg = PublishedMessage(topic=topic, data=data)
        for q in sorted(peers):
            self._o(q).publish.append(msg)
        return self._flush([])

    # ---- incoming ------------------------------------------------------------------------------

    def handle_rpc(self, pid: str, rpc: GossipRPC, now: float) -> list[Action]:
        st = self.peers.get(pid)
        if st is None:
            self._count("rpc_unknown_peer")
            return []
        sc = self.score.score(pid, now)
        if sc < self.p.graylist_threshold:
            self._count("rpc_graylisted")
            return []
        actions: list[Action] = []
        for sub in rpc.subscriptions:
            self._handle_sub(pid, st, sub, now)
        for msg in rpc.publish:
            self._handle_message(pid, msg, now, actions)
        if sc >= self.p.gossip_threshold:
            iwant = self._handle_ihave(pid, rpc.ihave, now)
            if iwant:
                self._o(pid).iwant.extend(iwant)
            self._handle_iwant(pid, rpc.iwant, now)
        elif rpc.ihave or rpc.iwant:
            self._count("gossip_ignored_low_score")
        prunes = self._handle_graft(pid, rpc.graft, now)
        if prunes:
            self._o(pid).prune.extend(prunes)
        self._handle_prune(pid, rpc.prune, now, actions)
        return self._flush(actions)

    def _handle_sub(self, pid: str, st: PeerState, sub: SubOpt, now: float) -> None:
        t = sub.topic
        if sub.subscribe:
            if t in st.topics:
                return
            if len(st.topics) >= self.p.max_topics_per_peer:
                self._count("peer_topics_capped")
                return
            st.topics.add(t)
            self.topic_peers.setdefault(t, set()).add(pid)
        else:
            if t not in st.topics:
                return
            st.topics.discard(t)
            s = self.topic_peers.get(t)
            if s is not None:
                s.discard(pid)
                if not s:
                    del self.topic_peers[t]
            m = self.mesh.get(t)
            if m is not None and pid in m:
                m.discard(pid)
                self.score.prune(pid, t)
            f = self.fanout.get(t)
            if f is not None:
                f.discard(pid)

    def _handle_message(self, pid: str, msg: PublishedMessage, now: float, actions: list[Action]) -> None:
        topic = msg.topic
        if topic not in self.subscriptions:
            self._count("msg_not_subscribed")
            return
        if len(msg.data) > self.p.max_message_bytes:
            self._count("msg_oversized")
            self.score.reject_invalid_unrecorded(pid, topic)
            return
        msg_id = message_id(msg.data)
        self._fulfil_promise(msg_id)
        if msg_id in self.seen or msg_id in self.refused:
            self._count("duplicates")
            self.score.duplicate_message(pid, msg_id, topic, now)
            return
        if len(self.pending) >= self.p.max_pending_validation:
            self._count("pending_full")  # not marked seen: it can arrive again later
            return
        if not self._seen_has_room(now):
            self._count("seen_full")  # as above; fresh ids are never evicted to make room
            return
        self._mark_seen(msg_id, now)
        self.pending[msg_id] = _Pending(topic, msg.data, pid, now)
        self.score.validate_message(pid, msg_id, now)
        actions.append(Validate(pid, topic, msg_id, msg.data))

    def _fulfil_promise(self, msg_id: bytes) -> None:
        ps = self.promises.pop(msg_id, None)
        if ps:
            self.n_promises -= len(ps)

    def _handle_ihave(self, pid: str, ihaves: list[IHave], now: float) -> list[bytes]:
        if not ihaves:
            return []
        n = self.peerhave.get(pid, 0) + 1
        self.peerhave[pid] = n
        if n > self.p.max_ihave_messages:
            self._count("ihave_flood")
            return []
        asked = self.iasked.get(pid, 0)
        if asked >= self.p.max_ihave_length:
            self._count("ihave_over_limit")
            return []
        want: dict[bytes, None] = {}
        for ih in ihaves:
            if ih.topic not in self.subscriptions:
                continue
            for mid in ih.ids:
                if len(mid) != 32:
                    continue
                if mid not in self.seen and mid not in self.refused and mid not in want:
                    want[mid] = None
        if not want:
            return []
        ids = list(want)
        limit = self.p.max_ihave_length - asked
        if len(ids) > limit:
            self.rng.shuffle(ids)
            ids = ids[:limit]
        self.iasked[pid] = asked + len(ids)
        # One promise per IWANT: the peer must deliver at least this one (spec: random pick).
        if self.n_promises < self.p.max_promises:
            mid = self.rng.choice(ids)
            ps = self.promises.setdefault(mid, {})
            if pid not in ps:
                ps[pid] = now + self.p.iwant_followup_s
                self.n_promises += 1
        self._count("iwant_sent", len(ids))
        return ids

    def _handle_iwant(self, pid: str, ids: list[bytes], now: float) -> None:
        if not ids:
            return
        o = self._o(pid)
        for mid in ids[: self.p.max_ihave_length]:
            m = self.mcache.get_for_peer(mid, pid, self.p.gossip_retransmission)
            if m is None:
                continue
            o.publish.append(PublishedMessage(topic=m.topic, data=m.data))
            self._count("iwant_served")

    def _handle_graft(self, pid: str, topics: list[str], now: float) -> list[Prune]:
        prunes: list[Prune] = []
        sc = self.score.score(pid, now)
        for topic in topics:
            mesh = self.mesh.get(topic)
            if mesh is None:
                # Not subscribed: refuse without PX (spam hardening).
                prunes.append(self._make_prune(topic, pid, now, px=False, backoff_s=self.p.prune_backoff_s))
                continue
            if pid in mesh:
                continue
            exp = self.backoff.get((topic, pid))
            if exp is not None and exp > now:
                self._count("graft_during_backoff")
                self.score.add_penalty(pid, 1.0)
                # A GRAFT right after our PRUNE is a flood: penalise it again.
                if now < exp - self.p.prune_backoff_s + self.p.graft_flood_threshold_s:
                    self.score.add_penalty(pid, 1.0)
                self._set_backoff(topic, pid, now + self.p.prune_backoff_s)
                prunes.append(self._make_prune(topic, pid, now, px=False, backoff_s=self.p.prune_backoff_s))
                continue
            if sc < 0:
                self._set_backoff(topic, pid, now + self.p.prune_backoff_s)
                prunes.append(self._make_prune(topic, pid, now, px=False, backoff_s=self.p.prune_backoff_s))
                continue
            if topic not in self.peers[pid].topics:
                # GRAFT implies a subscription (it may have come in the same RPC before SUBSCRIBE).
                self._handle_sub(pid, self.peers[pid], SubOpt(topic=topic, subscribe=True), now)
                if topic not in self.peers[pid].topics:
                    prunes.append(self._make_prune(topic, pid, now, px=False, backoff_s=self.p.prune_backoff_s))
                    continue
            if len(mesh) >= self.p.D_hi and not self.peers[pid].outbound:
                self._set_backoff(topic, pid, now + self.p.prune_backoff_s)
                prunes.append(self._make_prune(topic, pid, now, px=True, backoff_s=self.p.prune_backoff_s))
                continue
            mesh.add(pid)
            self.score.graft(pid, topic, now)
            self._count("graft_accepted")
        return prunes

    def _handle_prune(self, pid: str, prunes: list[Prune], now: float, actions: list[Action]) -> None:
        if not prunes:
            return
        sc = self.score.score(pid, now)
        for pr in prunes:
            mesh = self.mesh.get(pr.topic)
            if mesh is not None and pid in mesh:
                mesh.discard(pid)
                self.score.prune(pid, pr.topic)
            backoff = pr.backoff_s if pr.backoff_s > 0 else self.p.prune_backoff_s
            if pr.topic in self.subscriptions:
                self._set_backoff(pr.topic, pid, now + backoff)
            if pr.peers:
                if sc >= self.p.accept_px_threshold:
                    actions.append(PeerRecords(pid, list(pr.peers[: self.p.prune_peers])))
                else:
                    self._count("px_refused_low_score")

    # ---- validation ----------------------------------------------------------------------------

    def validation_result(
        self, msg_id: bytes, result: Validation, now: float, *, origin: str | None = None, seq: int | None = None
    ) -> list[Action]:
        """``origin``/``seq`` come from the envelope."""
        pend = self.pending.pop(msg_id, None)
        if pend is None:
            self._count("validation_unknown")
            return []
        actions: list[Action] = []
        if result is Validation.ACCEPT:
            self.score.deliver_message(pend.peer, msg_id, pend.topic, now)
            self.mcache.put(msg_id, pend.topic, pend.data)
            equivocation = False
            if origin is not None and seq is not None:
                equivocation = self._index_seq(origin, seq, msg_id, pend.data, now)
            self._forward(pend.topic, msg_id, pend.data, pend.peer, origin, now)
            if equivocation:
                self._count("equivocation_withheld")
            else:
                self._count("delivered")
                actions.append(Deliver(pend.topic, msg_id, pend.data))
        else:
            if result is Validation.REJECT:
                self._count("rejected")
                self.score.reject_message(pend.peer, msg_id, pend.topic, now, invalid=True)
            else:
                self._count("ignored")
                self.score.reject_message(pend.peer, msg_id, pend.topic, now, invalid=False)
            self._mark_refused(msg_id, now)
            # A message the application refused is still a signed statement of its origin (the
            # driver passes origin/seq only once the signature verified): a second, different one
            # under the same seq is equivocation whatever the application thought of either.
            if origin is not None and seq is not None:
                self._index_seq(origin, seq, msg_id, pend.data, now)
        return self._flush(actions)

    def stale_message(self, pid: str, now: float) -> None:
        """A message from ``pid`` was outside the freshness window. An honest relayer forwards only
        messages it found fresh, so a few are clock differences at the window's edge; beyond
        ``stale_allowance`` per heartbeat each one is a behaviour penalty (P7): a replay flood
        ends graylisted instead of free."""
        n = self.stale_in.get(pid, 0) + 1
        if pid in self.peers:
            self.stale_in[pid] = n
        if n > self.p.stale_allowance:
            self._count("stale_penalised")
            self.score.add_penalty(pid, self.p.stale_penalty)

    def _index_seq(self, origin: str, seq: int, msg_id: bytes, data: bytes, now: float) -> bool:
        """Record (origin, seq) -> id; True (and evidence kept) if it names a different message."""
        key = (origin, seq)
        entry = self.seq_index.get(key)
        if entry is None:
            self.seq_index[key] = (msg_id, now + self.p.seq_index_ttl_s)
            while len(self.seq_index) > self.p.max_seq_index:
                self.seq_index.popitem(last=False)
            return False
        prior = entry[0]
        if prior == msg_id:
            return False
        cached = self.mcache.get(prior)
        self.evidence.append(Equivocation(origin, seq, prior, msg_id, cached.data if cached else None, data, now))
        self._count("equivocations")
        self.score.add_penalty(origin, self.p.equivocation_penalty)
        return True

    def _forward(self, topic: str, msg_id: bytes, data: bytes, src: str, origin: str | None, now: float) -> None:
        rec = self.score.deliveries.get(msg_id)
        already = (rec.peers or set()) if rec is not None else set()
        msg = PublishedMessage(topic=topic, data=data)
        for q in sorted(self.mesh.get(topic, ())):
            if q == src or q == origin or q in already:
                continue
            self._o(q).publish.append(msg)

    # ---- heartbeat -----------------------------------------------------------------------------

    def heartbeat(self, now: float) -> list[Action]:
        p = self.p
        actions: list[Action] = []
        self.heartbeat_ticks += 1
        self.peerhave.clear()
        self.iasked.clear()
        self.stale_in.clear()
        self._apply_broken_promises(now)
        self.score.refresh(now)
        scores = {q: self.score.score(q, now) for q in self.peers}

        # Graylisted for too long: ask the host to drop the link.
        for q, st in self.peers.items():
            if scores[q] < p.graylist_threshold:
                if st.graylisted_since is None:
                    st.graylisted_since = now
                elif not st.disconnect_sent and now - st.graylisted_since >= p.graylist_disconnect_s:
                    st.disconnect_sent = True
                    self._count("disconnect_graylisted")
                    actions.append(Disconnect(q, f"graylisted: score {scores[q]:.1f}"))
            else:
                st.graylisted_since = None

        tograft: dict[str, list[str]] = {}
        toprune: dict[str, list[str]] = {}
        for topic, mesh in self.mesh.items():
            self._maintain_mesh(topic, mesh, scores, now, tograft, toprune)
            self._emit_gossip(topic, mesh, scores)

        # Fanout: expire, drop peers that left or score too low, refill.
        for topic in list(self.fanout):
            if self.fanout_last_pub.get(topic, 0.0) + p.fanout_ttl_s < now:
                del self.fanout[topic]
                self.fanout_last_pub.pop(topic, None)
                continue
            fan = self.fanout[topic]
            tp = self.topic_peers.get(topic, set())
            for q in list(fan):
                if q not in tp or scores.get(q, 0.0) < p.publish_threshold:
                    fan.discard(q)
            if len(fan) < p.D:
                cands = [q for q in sorted(tp) if q not in fan and scores.get(q, 0.0) >= p.publish_threshold]
                self.rng.shuffle(cands)
                fan.update(cands[: p.D - len(fan)])
            self._emit_gossip(topic, fan, scores)

        for q, topics in tograft.items():
            self._o(q).graft.extend(topics)
        for q, topics in toprune.items():
            o = self._o(q)
            for t in topics:
                # No PX to peers we drop for a negative score.
                o.prune.append(self._make_prune(t, q, now, px=scores.get(q, 0.0) >= 0, backoff_s=p.prune_backoff_s))

        self.mcache.shift()
        self._expire(now)
        return self._flush(actions)

    def _maintain_mesh(
        self,
        topic: str,
        mesh: set[str],
        scores: dict[str, float],
        now: float,
        tograft: dict[str, list[str]],
        toprune: dict[str, list[str]],
    ) -> None:
        p = self.p

        def graft(q: str) -> None:
            mesh.add(q)
            self.score.graft(q, topic, now)
            tograft.setdefault(q, []).append(topic)

        def prune(q: str) -> None:
            mesh.discard(q)
            self.score.prune(q, topic)
            self._set_backoff(topic, q, now + p.prune_backoff_s)
            toprune.setdefault(q, []).append(topic)

        for q in sorted(mesh):
            if q not in self.peers:
                mesh.discard(q)
            elif scores[q] < 0:
                prune(q)

        def candidates(pred: Callable[[str], bool]) -> list[str]:
            c = [
                q
                for q in sorted(self.topic_peers.get(topic, ()))
                if q not in mesh and scores.get(q, 0.0) >= 0 and not self._backoff_active(topic, q, now) and pred(q)
            ]
            self.rng.shuffle(c)
            return c

        if len(mesh) < p.D_lo:
            for q in candidates(lambda q: True)[: p.D - len(mesh)]:
                graft(q)

        if len(mesh) > p.D_hi:
            peers = sorted(mesh)
            self.rng.shuffle(peers)
            peers.sort(key=lambda q: scores[q], reverse=True)
            keep = peers[: p.D_score]
            rest = peers[p.D_score :]
            self.rng.shuffle(rest)
            keep += rest[: p.D - p.D_score]
            # Keep at least D_out outbound peers: swap them in for inbound ones if needed.
            n_out = sum(1 for q in keep if self.peers[q].outbound)
            if n_out < p.D_out:
                outs = [q for q in peers if q not in keep and self.peers[q].outbound][: p.D_out - n_out]
                if outs:
                    inbound = [q for q in keep[p.D_score :] if not self.peers[q].outbound]
                    for o in outs:
                        if not inbound:
                            break
                        keep.remove(inbound.pop())
                        keep.append(o)
            keepset = set(keep)
            for q in peers:
                if q not in keepset:
                    prune(q)

        if len(mesh) >= p.D_lo:
            n_out = sum(1 for q in mesh if self.peers[q].outbound)
            if n_out < p.D_out:
                for q in candidates(lambda q: self.peers[q].outbound)[: p.D_out - n_out]:
                    graft(q)

        # Opportunistic graft: if the mesh's median score is poor, bring in better peers.
        if self.heartbeat_ticks % p.opportunistic_graft_ticks == 0 and len(mesh) > 1:
            ranked = sorted(scores[q] for q in mesh)
            median = ranked[len(ranked) // 2]
            if median < p.opportunistic_graft_threshold:
                for q in candidates(lambda q: scores.get(q, 0.0) > median)[: p.opportunistic_graft_peers]:
                    graft(q)
                    self._count("opportunistic_graft")

    def _emit_gossip(self, topic: str, exclude: set[str], scores: dict[str, float]) -> None:
        p = self.p
        ids = self.mcache.gossip_ids(topic)
        if not ids:
            return
        limit = min(p.max_ihave_length, C.MAX_IHAVE_IDS)  # the wire's cap on one IHAVE entry
        if len(ids) > limit:
            self.rng.shuffle(ids)
            ids = ids[:limit]
        cands = [
            q for q in sorted(self.topic_peers.get(topic, ())) if q not in exclude and scores.get(q, 0.0) >= p.gossip_threshold
        ]
        target = max(p.D_lazy, int(len(cands) * p.gossip_factor))
        if len(cands) > target:
            self.rng.shuffle(cands)
            cands = cands[:target]
        for q in cands:
            if len(ids) > 1:
                sample = list(ids)
                self.rng.shuffle(sample)  # different peers get differently ordered advertisements
            else:
                sample = ids
            self._o(q).ihave.append(IHave(topic=topic, ids=sample))
        self._count("ihave_sent", len(cands))

    def _apply_broken_promises(self, now: float) -> None:
        broken: list[str] = []
        for mid in list(self.promises):
            ps = self.promises[mid]
            for q, deadline in list(ps.items()):
                if deadline <= now:
                    del ps[q]
                    self.n_promises -= 1
                    broken.append(q)
            if not ps:
                del self.promises[mid]
        for q in broken:
            self._count("broken_promises")
            self.score.add_penalty(q, 1.0)

    def _expire(self, now: float) -> None:
        while self.seen:
            mid, exp = next(iter(self.seen.items()))
            if exp > now:
                break
            self.seen.popitem(last=False)
        while self.refused:
            _, exp = next(iter(self.refused.items()))
            if exp > now:
                break
            self.refused.popitem(last=False)
        while self.seq_index:
            _, (_, exp) = next(iter(self.seq_index.items()))
            if exp > now:
                break
            self.seq_index.popitem(last=False)
        while self.pending:
            mid, pend = next(iter(self.pending.items()))
            if pend.at + self.p.validation_timeout_s > now:
                break
            self.pending.popitem(last=False)
            self._count("validation_timeout")
        if self.heartbeat_ticks % 15 == 0 and self.backoff:
            # Keep expired entries one more heartbeat-ish so a racing GRAFT still sees them.
            for key in [k for k, exp in self.backoff.items() if exp + 2 * self.p.heartbeat_s < now]:
                del self.backoff[key]

    # ---- application ---------------------------------------------------------------------------

    def penalize(self, pid: str, amount: float) -> bool:
        return self.score.add_penalty(pid, amount)

    def mesh_peers(self, topic: str) -> set[str]:
        return set(self.mesh.get(topic, ()))
