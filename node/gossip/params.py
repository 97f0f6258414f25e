"""Gossipsub v1.1 parameters, loaded from the ``[gossip]`` table of a node config.

Every field is a plain int/float/bool/str so the TOML loader can check it. Names follow the
gossipsub v1.1 spec (github.com/libp2p/specs/blob/master/pubsub/gossipsub/gossipsub-v1.1.md);
defaults are the spec's where it gives one. The spec leaves topic score parameters to the
application: here one set of topic parameters applies to every topic (our topics carry similar,
low-rate traffic), and decay factors are per ``decay_interval_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.wire import constants as C


@dataclass
class GossipParams:
    # ---- mesh overlay -----------------------------------------------------------------------
    D: int = 6  # desired mesh degree
    D_lo: int = 4  # below this, graft in the heartbeat
    D_hi: int = 12  # above this, prune in the heartbeat
    D_lazy: int = 6  # minimum number of peers to send IHAVE gossip to
    D_out: int = 2  # outbound peers kept in each mesh (eclipse defence); must be < D_lo and <= D/2
    D_score: int = 4  # peers kept by score when pruning an oversubscribed mesh
    heartbeat_s: float = 1.0  # mesh maintenance, gossip emission and score decay run this often
    fanout_ttl_s: float = 60.0  # forget a fanout topic this long after our last publish to it
    gossip_factor: float = 0.25  # fraction of eligible peers that get IHAVE (at least D_lazy)
    flood_publish: bool = True  # own messages go to every topic peer above publish_threshold
    opportunistic_graft_ticks: int = 60  # heartbeats between opportunistic graft checks
    opportunistic_graft_peers: int = 2  # peers grafted per opportunistic graft

    # ---- caches -----------------------------------------------------------------------------
    mcache_len: int = 5  # heartbeats a message stays retrievable by IWANT
    mcache_gossip: int = 3  # heartbeats of history advertised in IHAVE
    mcache_max_messages: int = 20_000  # hard caps: the message cache never grows past these
    mcache_max_bytes: int = 64 * 1024 * 1024  # message cache ceiling in bytes
    seen_ttl_s: float = (
        300.0  # accepted message ids remembered: longer than a message stays fresh (2 x clock skew), so replays are duplicates
    )
    seen_max: int = 100_000  # hard cap on remembered accepted ids (full: new messages are refused, fresh ids never evicted)
    refused_max: int = 20_000  # ids of rejected or ignored messages remembered (oldest dropped first)
    max_pending_validation: int = 4096  # messages awaiting a validation result
    validation_timeout_s: float = 30.0  # pending validations older than this are dropped

    # ---- control ----------------------------------------------------------------------------
    prune_backoff_s: int = 60  # do not re-graft a peer that pruned us for this long
    unsubscribe_backoff_s: int = 10  # backoff sent when we leave a topic
    graft_flood_threshold_s: float = 10.0  # GRAFT this soon after our PRUNE counts twice against the peer
    prune_peers: int = 16  # peer records offered in a PRUNE (peer exchange)
    do_px: bool = True  # offer peer exchange when pruning
    iwant_followup_s: float = 3.0  # an IWANT promise not kept within this is a broken promise
    gossip_retransmission: int = 3  # times one message is sent to one peer in answer to IWANT
    max_ihave_length: int = 5000  # ids we ask for per peer per heartbeat (and advertise per IHAVE)
    max_ihave_messages: int = 10  # IHAVE messages accepted per peer per heartbeat
    max_promises: int = 10_000  # hard cap on outstanding IWANT promises
    max_topics_per_peer: int = 64  # subscriptions we track per peer
    max_backoff_entries: int = 10_000  # hard cap on (topic, peer) backoff entries

    # ---- messages ---------------------------------------------------------------------------
    max_message_bytes: int = 1024 * 1024  # a published envelope larger than this is rejected
    check_freshness: bool = True  # decode envelopes with the wall clock (stale ones are ignored)
    stale_allowance: int = 16  # stale messages per peer per heartbeat taken without penalty (clocks at the window's edge)
    stale_penalty: float = 0.5  # P7 counter added per stale message beyond the allowance (a replay flood ends graylisted)
    equivocation_penalty: float = 10.0  # P7 counter added to an origin that signs two messages with one seq
    max_equivocation_evidence: int = 256  # pairs kept as evidence
    max_seq_index: int = 100_000  # (origin, seq) -> id entries kept for equivocation checks
    seq_index_ttl_s: float = 300.0  # how long each is kept: longer than a message stays fresh (2 x clock skew)

    # ---- peer score: topic part (applied to every topic with topic_weight) ------------------
    topic_weight: float = 1.0
    topic_score_cap: float = 0.0  # cap on the positive topic part; 0 = no cap
    time_in_mesh_weight: float = 0.0027  # P1, per quantum in mesh
    time_in_mesh_quantum_s: float = 1.0  # P1 counts time in mesh in units of this
    time_in_mesh_cap: float = 3600.0  # P1 stops growing here
    first_message_deliveries_weight: float = 1.0  # P2
    first_message_deliveries_decay: float = 0.9  # P2 counter decay per decay interval
    first_message_deliveries_cap: float = 10.0  # P2 counter ceiling
    # P3 mesh delivery deficit. Off by default: on quiet topics every honest mesh peer would be
    # in deficit. Enable (negative weight) for topics with a steady message rate.
    mesh_message_deliveries_weight: float = 0.0
    mesh_message_deliveries_decay: float = 0.9  # P3 counter decay per decay interval
    mesh_message_deliveries_threshold: float = 1.0  # P3: fewer deliveries than this from a mesh peer is a deficit
    mesh_message_deliveries_cap: float = 10.0  # P3 counter ceiling
    mesh_message_deliveries_activation_s: float = 30.0  # P3 applies only after a peer has been in the mesh this long
    mesh_message_deliveries_window_s: float = 0.05  # duplicates this soon after the first count as deliveries
    mesh_failure_penalty_weight: float = 0.0  # P3b: deficit carried after a peer leaves the mesh
    mesh_failure_penalty_decay: float = 0.9  # P3b counter decay
    invalid_message_deliveries_weight: float = -10.0  # P4 (squared counter)
    invalid_message_deliveries_decay: float = 0.99  # P4 counter decay

    # ---- peer score: peer part --------------------------------------------------------------
    app_specific_weight: float = 1.0  # P5; the application does not set a score (always 0)
    ip_colocation_factor_weight: float = -10.0  # P6 (squared surplus)
    ip_colocation_factor_threshold: int = 3  # peers allowed on one IP before P6
    # Comma-separated CIDRs exempt from P6: local test networks put every node on one address.
    ip_colocation_factor_whitelist: str = "127.0.0.0/8,::1/128"
    behaviour_penalty_weight: float = -1.0  # P7 (squared counter above the threshold)
    behaviour_penalty_threshold: float = 0.0  # P7 counts only above this
    behaviour_penalty_decay: float = 0.99  # P7 counter decay
    decay_interval_s: float = 1.0  # counters decay this often
    decay_to_zero: float = 0.01  # counters below this are reset to zero
    retain_score_s: float = 3600.0  # a disconnected peer's score is kept this long
    max_retained_scores: int = 10_000  # scores of disconnected peers kept at most (bounded memory)

    # ---- thresholds -------------------------------------------------------------------------
    gossip_threshold: float = -10.0  # below: no IHAVE/IWANT to or from the peer
    publish_threshold: float = -50.0  # below: own messages are not flood-published to the peer
    graylist_threshold: float = -80.0  # below: every RPC from the peer is ignored
    accept_px_threshold: float = 1.0  # PX records accepted only from peers scoring at least this
    opportunistic_graft_threshold: float = 1.0  # median mesh score below this: graft better peers
    graylist_disconnect_s: float = 10.0  # a peer graylisted this long is disconnected

    def __post_init__(self) -> None:
        if not (0 < self.D_lo <= self.D <= self.D_hi):
            raise ValueError(f"gossip: need 0 < D_lo <= D <= D_hi, got {self.D_lo}, {self.D}, {self.D_hi}")
        if not (0 <= self.D_out < self.D_lo and self.D_out <= self.D // 2):
            raise ValueError(f"gossip: D_out must be < D_lo and <= D/2, got {self.D_out}")
        if not (0 < self.mcache_gossip <= self.mcache_len):
            raise ValueError("gossip: need 0 < mcache_gossip <= mcache_len")
        if self.heartbeat_s <= 0 or self.decay_interval_s <= 0 or self.seq_index_ttl_s <= 0:
            raise ValueError("gossip: heartbeat_s, decay_interval_s and seq_index_ttl_s must be positive")
        if not (self.graylist_threshold <= self.publish_threshold <= self.gossip_threshold <= 0):
            raise ValueError("gossip: need graylist_threshold <= publish_threshold <= gossip_threshold <= 0")
        if self.check_freshness and self.seen_ttl_s * 1000 <= 2 * C.DEFAULT_MAX_CLOCK_SKEW_MS:
            raise ValueError(
                f"gossip: seen_ttl_s must exceed the freshness window, 2 x {C.DEFAULT_MAX_CLOCK_SKEW_MS // 1000} s "
                "(a replay of a message still fresh must be a duplicate)"
            )
        if not 0 <= self.prune_peers <= C.MAX_PRUNE_PEERS or self.refused_max < 1 or self.stale_allowance < 0:
            raise ValueError(f"gossip: need 0 <= prune_peers <= {C.MAX_PRUNE_PEERS}, refused_max >= 1, stale_allowance >= 0")
        if self.accept_px_threshold < 0 or self.opportunistic_graft_threshold < 0:
            raise ValueError("gossip: accept_px_threshold and opportunistic_graft_threshold must be >= 0")
