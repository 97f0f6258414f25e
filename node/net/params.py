"""Network parameters: the ``[net]`` table of a node config (plain fields only)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class NetParams:
    listen_host: str = "127.0.0.1"  # address to listen on (0.0.0.0: every interface)
    listen_port: int = 7700  # 0 = any free port (tests, harness)
    advertise_addrs: list[str] = field(default_factory=list)  # ws://HOST:PORT others should dial; empty = listen addr
    bootstrap: list[str] = field(default_factory=list)  # ws://HOST:PORT kept connected (redialled with backoff)
    network: str = "gpow-local"  # peers on another network are refused at handshake
    max_inbound: int = 64  # accepted links beyond this are rejected (HTTP 503) before the handshake
    max_outbound: int = 24  # dials beyond this wait
    target_peers: int = 8  # the host dials learned peers until it has this many links
    dial_timeout_s: float = 5.0  # TCP + websocket upgrade
    handshake_timeout_s: float = 5.0  # Hello + HelloAuth exchange
    reconnect_min_s: float = 0.5  # first backoff after a failed dial (doubles, with jitter)
    reconnect_max_s: float = 30.0  # backoff ceiling
    ping_interval_s: float = 5.0  # keepalive Ping when the link is otherwise quiet
    dead_after_s: float = 20.0  # no frame at all for this long: the peer is dead, close the link
    send_queue_frames: int = 256  # per-peer send queue; full: gossip dropped, requests wait
    send_queue_bytes: int = 64 * 1024 * 1024  # per-peer queued bytes ceiling for gossip frames
    slow_peer_drops_before_disconnect: int = 200  # gossip drops without the queue ever draining: disconnect
    max_frame_bytes: int = 32 * 1024 * 1024  # one link frame (openings travel on request/response)
    max_bad_frames: int = 20  # garbage frames on one link before it is closed
    request_timeout_s: float = 30.0  # serving side: a handler running longer is answered with an error
    max_inflight_requests_per_peer: int = 16  # each way; more outgoing wait, more incoming are refused
    peer_record_ttl_s: float = 3600.0  # lifetime of our signed peer record
    pex_interval_s: float = 30.0  # peer exchange with every connected peer
    pex_records: int = 16  # records sent per exchange (<= 64)
    peer_store_max: int = 1000  # learned peers kept (oldest/failing evicted first)
    max_clock_skew_s: float = 120.0  # handshake and record timestamps further off are refused
    maintain_interval_s: float = 1.0  # how often the connection manager looks at the mesh
    drain_timeout_s: float = 2.0  # graceful close: time to flush queued frames before cutting the link
