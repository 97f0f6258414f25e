"""Gossipsub v1.1 peer scoring (sans-IO: time comes in as ``now`` in float seconds).

score(p) = sum over topics of topic_weight * (w1*P1 + w2*P2 + w3*P3 + w3b*P3b + w4*P4)
           + w5*P5 + w6*P6 + w7*P7

P1 time in mesh, P2 first message deliveries, P3 mesh message delivery deficit (squared), P3b mesh
failure penalty, P4 invalid messages (squared), P5 application score (unused: 0), P6 IP
colocation surplus (squared), P7 behaviour penalty above its threshold (squared). Counters decay
every ``decay_interval_s``. A disconnected peer's score is retained for ``retain_score_s`` so that
reconnecting does not wash a bad score away. Every table here is bounded.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field

from node.gossip.params import GossipParams

# Delivery record states.
UNKNOWN, VALID, INVALID, IGNORED = 0, 1, 2, 3


@dataclass
class TopicStats:
    in_mesh: bool = False
    graft_time: float = 0.0
    mesh_time: float = 0.0
    first_message_deliveries: float = 0.0
    mesh_message_deliveries: float = 0.0
    mesh_message_deliveries_active: bool = False
    mesh_failure_penalty: float = 0.0
    invalid_message_deliveries: float = 0.0


@dataclass
class PeerStats:
    connected: bool = True
    expire: float = 0.0  # when a disconnected peer's record is dropped
    ip: str = ""
    topics: dict[str, TopicStats] = field(default_factory=dict)
    behaviour_penalty: float = 0.0
    app_score: float = 0.0


@dataclass(slots=True)
class DeliveryRecord:
    # One per seen message id (up to seen_max of them): slots and a lazily made set keep it small.
    status: int = UNKNOWN
    first_seen: float = 0.0
    validated: float = 0.0
    peers: set[str] | None = None  # peers that sent it, besides the first

    def add_peer(self, pid: str) -> None:
        if self.peers is None:
            self.peers = set()
        if len(self.peers) < 256:  # more than any honest mesh could send
            self.peers.add(pid)

    def take_peers(self) -> set[str]:
        peers, self.peers = self.peers or set(), None
        return peers


def _parse_whitelist(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for part in text.split(","):
        part = part.strip()
        if part:
            nets.append(ipaddress.ip_network(part, strict=False))
    return nets


class PeerScore:
    """Score bookkeeping for every peer the router knows (connected or retained)."""

    MAX_TOPICS_PER_PEER = 128  # topic stats are only created for topics we are subscribed to

    def __init__(self, params: GossipParams, my_topics: set[str] | None = None) -> None:
        self.p = params
        self.peers: dict[str, PeerStats] = {}
        self.peer_ips: dict[str, set[str]] = {}  # ip -> connected peers on it
        self.deliveries: OrderedDict[bytes, DeliveryRecord] = OrderedDict()
        self.max_deliveries = max(1024, params.seen_max)
        self._whitelist = _parse_whitelist(params.ip_colocation_factor_whitelist)
        self._whitelisted: dict[str, bool] = {}
        self._my_topics = my_topics if my_topics is not None else set()
        self._last_decay: float | None = None

    # ---- peers ---------------------------------------------------------------------------------

    def add_peer(self, pid: str, ip: str, now: float) -> None:
        st = self.peers.get(pid)
        if st is None:
            st = PeerStats(ip=ip)
            self.peers[pid] = st
            self._trim_retained()
        st.connected = True
        st.expire = 0.0
        if st.ip and st.ip != ip:
            self._remove_ip(pid, st.ip)
        st.ip = ip
        if ip:
            self.peer_ips.setdefault(ip, set()).add(pid)

    def remove_peer(self, pid: str, now: float) -> None:
        st = self.peers.get(pid)
        if st is None:
            return
        # A peer leaving the mesh in deficit keeps the deficit as P3b, as on PRUNE.
        for ts in st.topics.values():
            if ts.in_mesh:
                self._mesh_leave(ts)
            ts.first_message_deliveries = 0.0  # the spec resets P2 on disconnect
        if st.ip:
            self._remove_ip(pid, st.ip)
        st.connected = False
        st.expire = now + self.p.retain_score_s
        if self.score(pid, now) >= 0:  # nothing to remember about a well-behaved peer
            del self.peers[pid]

    def _remove_ip(self, pid: str, ip: str) -> None:
        s = self.peer_ips.get(ip)
        if s is not None:
            s.discard(pid)
            if not s:
                del self.peer_ips[ip]

    def _trim_retained(self) -> None:
        if len(self.peers) <= self.p.max_retained_scores:
            return
        # Drop retained (disconnected) records, soonest to expire first; connected peers stay.
        retained = sorted((st.expire, pid) for pid, st in self.peers.items() if not st.connected)
        for _, pid in retained[: len(self.peers) - self.p.max_retained_scores]:
            del self.peers[pid]

    def _topic(self, pid: str, topic: str) -> TopicStats | None:
        st = self.peers.get(pid)
        if st is None:
            return None
        ts = st.topics.get(topic)
        if ts is None:
            if topic not in self._my_topics or len(st.topics) >= self.MAX_TOPICS_PER_PEER:
                return None
            ts = TopicStats()
            st.topics[topic] = ts
        return ts

    # ---- mesh ----------------------------------------------------------------------------------

    def graft(self, pid: str, topic: str, now: float) -> None:
        ts = self._topic(pid, topic)
        if ts is None:
            return
        ts.in_mesh = True
        ts.graft_time = now
        ts.mesh_time = 0.0
        ts.mesh_message_deliveries_active = False

    def prune(self, pid: str, topic: str) -> None:
        ts = self._topic(pid, topic)
        if ts is not None and ts.in_mesh:
            self._mesh_leave(ts)

    def _mesh_leave(self, ts: TopicStats) -> None:
        p = self.p
        if ts.mesh_message_deliveries_active and ts.mesh_message_deliveries < p.mesh_message_deliveries_threshold:
            deficit = p.mesh_message_deliveries_threshold - ts.mesh_message_deliveries
            ts.mesh_failure_penalty += deficit * deficit
        ts.in_mesh = False

    # ---- message deliveries --------------------------------------------------------------------

    def _record(self, msg_id: bytes, now: float) -> DeliveryRecord:
        rec = self.deliveries.get(msg_id)
        if rec is None:
            rec = DeliveryRecord(first_seen=now)
            self.deliveries[msg_id] = rec
            while len(self.deliveries) > self.max_deliveries:
                self.deliveries.popitem(last=False)
        return rec

    def validate_message(self, pid: str, msg_id: bytes, now: float) -> None:
        """First copy of a message arrived from ``pid``; validation starts."""
        self._record(msg_id, now)

    def deliver_message(self, pid: str, msg_id: bytes, topic: str, now: float) -> None:
        """The message first received from ``pid`` was accepted."""
        rec = self._record(msg_id, now)
        if rec.status != UNKNOWN:
            return
        rec.status = VALID
        rec.validated = now
        self._mark_first_delivery(pid, topic)
        for other in rec.peers or ():  # duplicates that came while it was being validated
            self._mark_duplicate(other, topic, rec, now)

    def reject_message(self, pid: str, msg_id: bytes, topic: str, now: float, *, invalid: bool) -> None:
        """The message was rejected (``invalid``: penalise) or ignored (no penalty)."""
        rec = self._record(msg_id, now)
        if rec.status != UNKNOWN:
            return
        if not invalid:
            rec.status = IGNORED
            rec.take_peers()
            return
        rec.status = INVALID
        self._mark_invalid(pid, topic)
        for other in rec.take_peers():
            self._mark_invalid(other, topic)

    def reject_invalid_unrecorded(self, pid: str, topic: str) -> None:
        """A message rejected before it got an id (too large, wrong topic shape)."""
        self._mark_invalid(pid, topic)

    def duplicate_message(self, pid: str, msg_id: bytes, topic: str, now: float) -> None:
        rec = self.deliveries.get(msg_id)
        if rec is None:
            return
        if rec.peers is not None and pid in rec.peers:
            return
        if rec.status == UNKNOWN:
            rec.add_peer(pid)
        elif rec.status == VALID:
            rec.add_peer(pid)
            self._mark_duplicate(pid, topic, rec, now)
        elif rec.status == INVALID:
            rec.add_peer(pid)  # charged once per message id
            self._mark_invalid(pid, topic)

    def _mark_first_delivery(self, pid: str, topic: str) -> None:
        ts = self._topic(pid, topic)
        if ts is None:
            return
        p = self.p
        ts.first_message_deliveries = min(ts.first_message_deliveries + 1, p.first_message_deliveries_cap)
        if ts.in_mesh:
            ts.mesh_message_deliveries = min(ts.mesh_message_deliveries + 1, p.mesh_message_deliveries_cap)

    def _mark_duplicate(self, pid: str, topic: str, rec: DeliveryRecord, now: float) -> None:
        ts = self._topic(pid, topic)
        if ts is None or not ts.in_mesh:
            return
        # Only near-simultaneous copies count: a mesh peer that is merely slow is not rewarded.
        if rec.status == VALID and now > rec.validated + self.p.mesh_message_deliveries_window_s:
            return
        ts.mesh_message_deliveries = min(ts.mesh_message_deliveries + 1, self.p.mesh_message_deliveries_cap)

    def _mark_invalid(self, pid: str, topic: str) -> None:
        ts = self._topic(pid, topic)
        if ts is not None:
            ts.invalid_message_deliveries += 1
            return
        st = self.peers.get(pid)
        if st is not None:  # topic unknown to us: charge it as behaviour instead
            st.behaviour_penalty += 1

    # ---- penalties -----------------------------------------------------------------------------

    def add_penalty(self, pid: str, amount: float) -> bool:
        """P7 counter += amount; False if the peer is not tracked."""
        st = self.peers.get(pid)
        if st is None:
            return False
        st.behaviour_penalty += amount
        return True

    def set_app_score(self, pid: str, value: float) -> None:
        st = self.peers.get(pid)
        if st is not None:
            st.app_score = value

    # ---- the score -----------------------------------------------------------------------------

    def _is_whitelisted(self, ip: str) -> bool:
        w = self._whitelisted.get(ip)
        if w is None:
            try:
                addr = ipaddress.ip_address(ip)
                w = any(addr in net for net in self._whitelist)
            except ValueError:
                w = False
            if len(self._whitelisted) > 4096:
                self._whitelisted.clear()
            self._whitelisted[ip] = w
        return w

    def ip_colocation(self, pid: str) -> float:
        """P6 value (the squared surplus of peers sharing this peer's IP)."""
        st = self.peers.get(pid)
        if st is None or not st.ip or self._is_whitelisted(st.ip):
            return 0.0
        n = len(self.peer_ips.get(st.ip, ()))
        if st.connected is False:
            n += 1  # it would be one more of them if it came back
        surplus = n - self.p.ip_colocation_factor_threshold
        return float(surplus * surplus) if surplus > 0 else 0.0

    def score(self, pid: str, now: float) -> float:
        st = self.peers.get(pid)
        if st is None:
            return 0.0
        p = self.p
        topic_score = 0.0
        for ts in st.topics.values():
            s = 0.0
            if ts.in_mesh:
                mesh_time = now - ts.graft_time
                p1 = min(mesh_time / p.time_in_mesh_quantum_s, p.time_in_mesh_cap)
                s += p1 * p.time_in_mesh_weight
            s += ts.first_message_deliveries * p.first_message_deliveries_weight
            if (
                ts.in_mesh
                and ts.mesh_message_deliveries_active
                and ts.mesh_message_deliveries < p.mesh_message_deliveries_threshold
            ):
                deficit = p.mesh_message_deliveries_threshold - ts.mesh_message_deliveries
                s += deficit * deficit * p.mesh_message_deliveries_weight
            s += ts.mesh_failure_penalty * p.mesh_failure_penalty_weight
            s += ts.invalid_message_deliveries * ts.invalid_message_deliveries * p.invalid_message_deliveries_weight
            topic_score += s * p.topic_weight
        if p.topic_score_cap > 0 and topic_score > p.topic_score_cap:
            topic_score = p.topic_score_cap
        score = topic_score
        score += st.app_score * p.app_specific_weight
        score += self.ip_colocation(pid) * p.ip_colocation_factor_weight
        excess = st.behaviour_penalty - p.behaviour_penalty_threshold
        if excess > 0:
            score += excess * excess * p.behaviour_penalty_weight
        return score

    # ---- decay ---------------------------------------------------------------------------------

    def refresh(self, now: float) -> None:
        """Apply every decay step due by ``now``; drop expired retained scores and old records."""
        p = self.p
        if self._last_decay is None:
            self._last_decay = now
        steps = 0
        while now - self._last_decay >= p.decay_interval_s and steps < 1000:
            self._last_decay += p.decay_interval_s
            steps += 1
        if steps >= 1000:
            self._last_decay = now
        if steps:
            for pid in list(self.peers):
                st = self.peers[pid]
                if not st.connected and st.expire <= now:
                    del self.peers[pid]
                    continue
                self._decay_peer(st, steps, now)
        # Delivery records live as long as seen ids.
        horizon = now - p.seen_ttl_s
        while self.deliveries:
            msg_id, rec = next(iter(self.deliveries.items()))
            if rec.first_seen >= horizon:
                break
            self.deliveries.popitem(last=False)

    def _decay_peer(self, st: PeerStats, steps: int, now: float) -> None:
        p = self.p
        zero = p.decay_to_zero

        def dec(v: float, factor: float) -> float:
            v *= factor**steps
            return 0.0 if abs(v) < zero else v

        for ts in st.topics.values():
            ts.first_message_deliveries = dec(ts.first_message_deliveries, p.first_message_deliveries_decay)
            ts.mesh_message_deliveries = dec(ts.mesh_message_deliveries, p.mesh_message_deliveries_decay)
            ts.mesh_failure_penalty = dec(ts.mesh_failure_penalty, p.mesh_failure_penalty_decay)
            ts.invalid_message_deliveries = dec(ts.invalid_message_deliveries, p.invalid_message_deliveries_decay)
            if ts.in_mesh:
                ts.mesh_time = now - ts.graft_time
                if ts.mesh_time > p.mesh_message_deliveries_activation_s:
                    ts.mesh_message_deliveries_active = True
        st.behaviour_penalty = dec(st.behaviour_penalty, p.behaviour_penalty_decay)
