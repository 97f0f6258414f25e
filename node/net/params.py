"""Network parameters: the ``[net]`` table of a node config (plain fields only)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from node.wire import constants as C


@dataclass
class NetParams:
    listen_host: str = "127.0.0.1"  # address to listen on (0.0.0.0: every interface)
    listen_port: int = 7700  # 0 = any free port (tests, harness)
    advertise_addrs: list[str] = field(default_factory=list)  # ws://HOST:PORT others should dial; empty = listen addr
    bootstrap: list[str] = field(default_factory=list)  # ws://HOST:PORT kept connected (redialled with backoff)
    network: str = C.NETWORK_DEFAULT  # peers on another network are refused at handshake
    max_inbound: int = 64  # accepted links beyond this are rejected (HTTP 503) before the handshake
    max_inbound_per_ip: int = 8  # the same, per remote IP address: one host cannot take every inbound slot
    max_inbound_sockets: int = (
        512  # TCP connections accepted at once (still upgrading, handshaking or linked); more are closed on accept
    )
    fd_reserve: int = 128  # descriptors kept free below the open-file limit (dials, ledger, files): caps max_inbound_sockets
    max_dials_per_s: float = (
        2.0  # dials to learned (signed-record) addresses per second; bootstrap and request dials are not counted
    )
    dial_burst: int = 8  # dials to learned addresses allowed at once before the rate applies
    inbound_per_ip_exempt: list[str] = field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"]
    )  # networks (CIDR) without the per-IP limit
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

    def __post_init__(self) -> None:
        # Checked here so a bad [net] table is a config error naming the key, not a failure later.
        from node.net.peerstore import valid_ws_addr

        if not self.network or len(self.network) > 64:
            raise ValueError(f"net: network must be 1..64 characters, got {self.network!r}")
        if not 0 <= self.listen_port <= 65535:
            raise ValueError(f"net: listen_port must be 0..65535, got {self.listen_port}")
        for key in ("advertise_addrs", "bootstrap"):
            bad = [a for a in getattr(self, key) if not valid_ws_addr(a)]
            if bad:
                raise ValueError(f"net: {key} entries must look like ws://HOST:PORT, got {bad}")
        try:
            self._exempt_nets = [ipaddress.ip_network(n, strict=False) for n in self.inbound_per_ip_exempt]
        except ValueError as exc:
            raise ValueError(f"net: inbound_per_ip_exempt entries must be CIDR networks: {exc}") from None
        if len(self.advertise_addrs) > 8:
            raise ValueError("net: at most 8 advertise_addrs")
        for key in (
            "dial_timeout_s",
            "handshake_timeout_s",
            "reconnect_min_s",
            "ping_interval_s",
            "request_timeout_s",
            "peer_record_ttl_s",
            "pex_interval_s",
            "maintain_interval_s",
            "drain_timeout_s",
        ):
            if getattr(self, key) <= 0:
                raise ValueError(f"net: {key} must be positive")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("net: reconnect_max_s must be >= reconnect_min_s")
        if self.dead_after_s <= self.ping_interval_s:
            raise ValueError("net: dead_after_s must be longer than ping_interval_s")
        if self.max_dials_per_s <= 0 or self.dial_burst < 1 or self.fd_reserve < 0:
            raise ValueError("net: max_dials_per_s must be positive, dial_burst >= 1, fd_reserve >= 0")
        for key in (
            "max_inbound",
            "max_inbound_per_ip",
            "max_inbound_sockets",
            "max_outbound",
            "send_queue_frames",
            "max_inflight_requests_per_peer",
            "peer_store_max",
            "max_bad_frames",
            "slow_peer_drops_before_disconnect",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"net: {key} must be at least 1")
        if self.target_peers < 0 or not 0 <= self.pex_records <= 63:
            raise ValueError("net: target_peers must be >= 0 and pex_records 0..63")
        if self.max_frame_bytes < 16 * 1024 or self.send_queue_bytes < self.max_frame_bytes // 64:
            raise ValueError("net: max_frame_bytes must be >= 16 KiB and send_queue_bytes not tiny")

    def per_ip_limited(self, ip: str) -> bool:
        """Whether inbound links from ``ip`` count against max_inbound_per_ip."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return True
        return not any(addr in net for net in self._exempt_nets)
