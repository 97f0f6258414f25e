"""The Host: a node's network presence.

It listens (trio-websocket server), dials (bootstrap, learned peers, on-demand for requests),
authenticates every link with the handshake, keeps one link per peer pair and carries link frames
(gossip RPCs, requests/responses, pings, peer exchange). Gossip sits above the host, as go's
``NewGossipSub(ctx, host)`` does: the gossip layer registers itself as the host's ``PeerEvents``
(peer connected/disconnected, gossip RPCs in, the peer gate and penalties) and sends through
``send_gossip``; nothing here imports it.

Robustness rules: every frame from a peer is size-checked before decoding and decoded strictly;
a bad frame is counted, logged, reported to gossip scoring, and repeated garbage closes the link.
No exception caused by a peer ever reaches the host's nursery.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    connect_websocket_url,
)

from node.clock import now_ms
from node.identity import Identity
from node.net.connection import Connection
from node.net.errors import (
    HandshakeRefused,
    LinkClosed,
    LinkIntegrityError,
    NetError,
    PeerUnreachable,
    RequestFailed,
    RequestTimeout,
)
from node.net.framing import FRAME_OVERHEAD, decode_frame, encode_frame, goodbye_frame, rpc_size
from node.net.handshake import MAX_HANDSHAKE_FRAME, Handshake, HandshakeResult
from node.net.limits import inbound_socket_cap, raise_nofile_limit
from node.net.params import NetParams
from node.net.peerstore import PeerStore, backoff_delay
from node.net.reqresp import error_text
from node.net.secure import SecureSocket
from node.wire.envelope import encode_envelope
from node.wire.errors import OversizedMessage, WireError
from node.wire.messages import Goodbye, GossipRPC, PeerExchange, PeerRecord, Ping, Pong, Request, Response

log = logging.getLogger("gpow.net")

Handler = Callable[[str, bytes], Awaitable[bytes]]

# Bad frames logged at warning level per link; the rest go to debug (counters keep the total).
_LOUD_BAD_FRAMES = 3
# Socket reads of 64 KiB: large frames (openings) arrive in a few hundred reads, not thousands.
_RECV_BUFFER = 64 * 1024


class PeerEvents(Protocol):
    """What a protocol layer above the host (the gossip router) registers with ``Host.attach``.

    The host calls these from its own tasks; none of them may block. ``accepts_from`` is the peer
    gate (a peer below it gets no new link and its gossip RPCs are dropped); ``penalize`` is where
    the host reports a peer's misbehaviour on the link (bad frames, oversized frames)."""

    def peer_connected(self, peer_id: str, *, outbound: bool, ip: str) -> None: ...

    def peer_disconnected(self, peer_id: str) -> None: ...

    def on_rpc(self, peer_id: str, rpc: GossipRPC) -> None: ...

    def accepts_from(self, peer_id: str) -> bool: ...

    def penalize(self, peer_id: str, amount: float, reason: str) -> None: ...

    def stats_dict(self) -> dict: ...


class _NoEvents:
    """Before anything is attached: every peer accepted, penalties only counted."""

    def __init__(self, stats: Counter[str]) -> None:
        self._stats = stats

    def peer_connected(self, peer_id: str, *, outbound: bool, ip: str) -> None:
        pass

    def peer_disconnected(self, peer_id: str) -> None:
        pass

    def on_rpc(self, peer_id: str, rpc: GossipRPC) -> None:
        self._stats["gossip_rpcs_unhandled"] += 1

    def accepts_from(self, peer_id: str) -> bool:
        return True

    def penalize(self, peer_id: str, amount: float, reason: str) -> None:
        self._stats["penalties_unscored"] += 1

    def stats_dict(self) -> dict:
        return {}


@dataclass
class PeerInfo:
    peer_id: str
    role: str
    outbound: bool
    listen_addrs: list[str]
    ip: str
    connected_ms: int


@dataclass
class _BootState:
    failures: int = 0
    next_at: float = 0.0
    peer_id: str | None = None


class _GuardedWebSocketServer(WebSocketServer):
    """trio-websocket can raise wsproto's LocalProtocolError out of one connection's reader task:
    a message over the size limit is answered with a 1009 close, and if the node is already closing
    that link (a handshake that timed out, a link being dropped) wsproto refuses to send a second
    close. Unhandled, the error ends serve_listeners and the node with it (found by the 100k fuzz
    run; python-trio/trio-websocket#175 is the same class of bug). Here it ends that connection."""

    on_error: Callable[[], None] | None = None  # the host counts these
    # Inbound sockets open at once (upgrading, handshaking or linked) and the cap on them: one past
    # the cap is closed as soon as it is accepted, so idle sockets cannot take the process's last
    # descriptors (the host sets the cap below RLIMIT_NOFILE).
    open_sockets = 0
    socket_cap = 1 << 30
    on_refused: Callable[[], None] | None = None

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        if self.open_sockets >= self.socket_cap:
            if self.on_refused is not None:
                self.on_refused()
            await trio.aclose_forcefully(stream)
            return
        self.open_sockets += 1
        try:
            await super()._handle_connection(stream)
        except Exception as exc:  # an ExceptionGroup holding Cancelled is not an Exception: it propagates
            leaves = _leaf_exceptions(exc)
            if self.on_error is not None:
                self.on_error()
            log.warning(
                "websocket connection failed inside trio-websocket",
                extra={"fields": {"error": "; ".join(f"{type(e).__name__}: {e}" for e in leaves)[:300]}},
            )
        finally:
            self.open_sockets -= 1


def _leaf_exceptions(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaf_exceptions(sub)]
    return [exc]


# The override above names a private method: fail at import, not silently, if an upgrade renames it.
assert callable(getattr(WebSocketServer, "_handle_connection", None)), "trio-websocket: _handle_connection is gone"


def _set_message_limit(ws: WebSocketConnection, limit: int) -> None:
    """Change the largest message trio-websocket buffers on this connection (it closes with 1009
    past it). A link starts at the handshake's limit and gets the frame limit once authenticated:
    before that a stranger must not make us buffer 32 MiB. trio-websocket has no public setter."""
    if not hasattr(ws, "_max_message_size"):
        raise RuntimeError("trio-websocket: WebSocketConnection._max_message_size is gone")
    ws._max_message_size = limit


def _endpoint_ip(ep: Any) -> str:
    return str(getattr(ep, "address", ep))


@dataclass
class _Dial:
    done: trio.Event = field(default_factory=trio.Event)
    peer_id: str | None = None


class Host:
    def __init__(
        self,
        identity: Identity,
        net_params: NetParams,
        role: str,
        *,
        wall_ms: Callable[[], int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.identity = identity
        self.params = net_params
        self.role = role
        self._wall_ms = wall_ms or now_ms
        self._rng = rng or random.Random()
        self.stats: Counter[str] = Counter()
        self._events: PeerEvents = _NoEvents(self.stats)
        p = net_params
        self.listen_addr = f"ws://{p.listen_host}:{p.listen_port}"
        self._listen_addrs: list[str] = list(p.advertise_addrs) or [self.listen_addr]
        self.peerstore = PeerStore(
            identity.peer_id, max_size=p.peer_store_max, max_skew_ms=int(p.max_clock_skew_s * 1000), rng=self._rng
        )
        self._conns: dict[str, Connection] = {}
        self._handlers: dict[str, Handler] = {}
        self._nursery: trio.Nursery | None = None
        self._dialing: dict[str, _Dial] = {}  # addr -> dial in progress
        self._dialing_peers: set[str] = set()
        self._handshaking_in = 0
        self._handshaking_from: Counter[str] = Counter()  # inbound handshakes in progress, per remote IP
        self._boot: dict[str, _BootState] = {}
        self._addr_peer: dict[str, str] = {}  # dialled address -> the peer id that answered
        self._closing = False
        self._seq = self._wall_ms() * 1000
        self._record = b""
        self._record_expires_ms = 0
        # The websocket layer refuses (close 1009) anything past this before buffering it whole;
        # frames between max_frame_bytes and this are refused by our own check and counted.
        self._ws_max = p.max_frame_bytes + 64 * 1024
        self.nofile_limit = 0  # RLIMIT_NOFILE soft limit once running (raised to the hard limit)
        self.inbound_socket_cap = p.max_inbound_sockets
        self._server: _GuardedWebSocketServer | None = None
        self._dial_tokens = float(p.dial_burst)  # dials to learned addresses (token bucket)
        self._dial_tokens_at = 0.0

    # ---- public interface --------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    def set_handler(self, protocol: str, handler: Handler) -> None:
        self._handlers[protocol] = handler

    @property
    def rng(self) -> random.Random:
        return self._rng

    def wall_ms(self) -> int:
        return self._wall_ms()

    def attach(self, events: PeerEvents) -> None:
        """Register the layer above (one: the gossip driver). Peers already connected are
        reported to it at once, so it may attach before or after ``run`` starts."""
        self._events = events
        for pid, c in list(self._conns.items()):
            events.peer_connected(pid, outbound=c.outbound, ip=c.ip)

    def accepts_from(self, peer_id: str) -> bool:
        return self._events.accepts_from(peer_id)

    def penalize(self, peer_id: str, amount: float, reason: str) -> None:
        """Report a peer's misbehaviour to the attached scorer (gossip peer score)."""
        try:
            self._events.penalize(peer_id, amount, reason)
        except Exception:
            log.exception("penalize failed")

    def reachable(self, peer_id: str) -> bool:
        """Connected, or an address is known to dial it (learned by handshake or peer exchange)."""
        if peer_id in self._conns:
            return True
        e = self.peerstore.get(peer_id)
        return e is not None and bool(e.addrs)

    def bootstrap_peer(self, addr: str) -> str | None:
        """The peer a dial to the bootstrap address ``addr`` last reached (None: not yet)."""
        st = self._boot.get(addr)
        return st.peer_id if st is not None else None

    def connected_peers(self) -> dict[str, PeerInfo]:
        return {
            pid: PeerInfo(pid, c.role, c.outbound, list(c.listen_addrs), c.ip, c.connected_ms) for pid, c in self._conns.items()
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        p = self.params
        self.nofile_limit = raise_nofile_limit()
        self.inbound_socket_cap = inbound_socket_cap(p.max_inbound_sockets, self.nofile_limit, p.fd_reserve)
        try:
            listeners = await trio.open_tcp_listeners(p.listen_port, host=p.listen_host)
        except OSError as exc:
            raise NetError(f"cannot listen on {p.listen_host}:{p.listen_port}: {exc.strerror or exc}") from None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                server = _GuardedWebSocketServer(
                    self._on_ws_request,
                    listeners,
                    handler_nursery=nursery,
                    message_queue_size=2,
                    max_message_size=MAX_HANDSHAKE_FRAME,
                    receive_buffer_size=_RECV_BUFFER,
                    connect_timeout=p.handshake_timeout_s,
                    disconnect_timeout=1.0,
                )
                server.on_error = lambda: self.stats.update(["ws_internal_errors"])
                server.socket_cap = self.inbound_socket_cap
                server.on_refused = lambda: self.stats.update(["inbound_sockets_refused"])
                self._server = server
                await nursery.start(server.run)
                self.listen_addr = f"ws://{p.listen_host}:{listeners[0].socket.getsockname()[1]}"
                self._listen_addrs = list(p.advertise_addrs) or [self.listen_addr]
                self._refresh_record()
                nursery.start_soon(self._maintain_loop)
                nursery.start_soon(self._keepalive_loop)
                nursery.start_soon(self._pex_loop)
                log.info("listening", extra={"fields": {"addr": self.listen_addr, "peer_id": self.peer_id, "network": p.network}})
                task_status.started()
        finally:
            self._nursery = None

    async def dial(self, addr: str) -> str:
        """Connect to an address (or reuse the link if it is already up); return the peer id."""
        return await self._dial(addr, expected=None)

    async def request(
        self, peer_id: str, protocol: str, payload: bytes, *, timeout: float, on_sent: Callable[[], None] | None = None
    ) -> bytes:
        """Send a request and wait for its response. Dials the peer from the peer store if needed.
        Raises RequestTimeout, RequestFailed (remote error, link closed) or PeerUnreachable.

        With ``on_sent``, the response gets the whole ``timeout`` from the moment the request
        left (``on_sent`` is called then): a caller that times the answer must not count the wait
        for a dial or for one of the link's request slots against the peer."""
        p = self.params
        if len(payload) + FRAME_OVERHEAD > p.max_frame_bytes:
            raise RequestFailed(f"request of {len(payload)} bytes exceeds the frame limit {p.max_frame_bytes}")
        self.stats["requests_sent"] += 1
        waiter = None
        with trio.move_on_after(timeout) as scope:
            conn = self._conns.get(peer_id)
            if conn is None or conn.closing_reason is not None:
                try:
                    conn = await self._connect_to(peer_id)
                except PeerUnreachable:
                    self.stats["requests_unreachable"] += 1
                    raise
            async with conn.out_slots:
                req_id, waiter = conn.pending.new()
                try:
                    await conn.send(encode_frame(Request(req_id=req_id, protocol=protocol, payload=bytes(payload))))
                    if on_sent is not None:
                        on_sent()
                        scope.deadline = trio.current_time() + timeout
                    await waiter.event.wait()
                except LinkClosed as exc:
                    self.stats["requests_failed"] += 1
                    raise RequestFailed(f"{protocol} to {peer_id}: {exc}") from None
                finally:
                    conn.pending.forget(req_id)
        if waiter is None or (waiter.response is None and waiter.error is None):  # a response beats the timer
            self.stats["requests_timeout"] += 1
            raise RequestTimeout(f"no response from {peer_id} to {protocol} within {timeout:g} s")
        if waiter.error is not None:
            self.stats["requests_failed"] += 1
            raise RequestFailed(f"{protocol} to {peer_id}: {waiter.error}")
        resp = waiter.response
        assert resp is not None
        if not resp.ok:
            self.stats["requests_failed"] += 1
            raise RequestFailed(f"{protocol} to {peer_id} failed remotely: {resp.error}", remote_error=resp.error)
        self.stats["requests_ok"] += 1
        return resp.payload

    async def aclose(self, reason: str = "shutdown") -> None:
        """Graceful shutdown: stop accepting, flush and say Goodbye on every link, then stop."""
        self._closing = True
        for conn in list(self._conns.values()):
            conn.close(reason)
        with trio.move_on_after(self.params.drain_timeout_s + 1.0):
            for conn in list(self._conns.values()):
                await conn.finished.wait()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def stats_dict(self) -> dict:
        conns = list(self._conns.values())
        out: dict[str, Any] = {
            "peers": len(conns),
            "inbound": sum(1 for c in conns if not c.outbound),
            "outbound": sum(1 for c in conns if c.outbound),
            "dialing": len(self._dialing),
            "peer_store": len(self.peerstore),
            "queued_frames": sum(c._recv_ch.statistics().current_buffer_used for c in conns),
            "gossip_rpcs_coalesced": sum(c.rpcs_coalesced for c in conns),  # on the links up now
            "queued_bytes": sum(c.queued_bytes for c in conns),
            "inbound_sockets": self._server.open_sockets if self._server is not None else 0,
            "inbound_socket_cap": self.inbound_socket_cap,
            "nofile_limit": self.nofile_limit,
        }
        rtts = sorted(c.rtt_s for c in conns if c.rtt_s is not None)
        if rtts:  # keepalive round trips: median and worst link
            out["rtt_ms_median"] = round(rtts[len(rtts) // 2] * 1000, 2)
            out["rtt_ms_max"] = round(rtts[-1] * 1000, 2)
        out.update(sorted(self.stats.items()))
        try:
            g = self._events.stats_dict()
        except Exception as exc:  # stats must never take the status writer down
            g = {"error": repr(exc)}
        if g:
            out["gossip"] = g
        return out

    # ---- handshake (I/O driver of node.net.handshake) ---------------------------------------

    def _next_seq(self) -> int:
        self._seq = max(self._seq + 1, self._wall_ms() * 1000)
        return self._seq

    async def _handshake(self, ws: WebSocketConnection, *, outbound: bool, expected: str | None) -> HandshakeResult:
        p = self.params
        hs = Handshake(
            self.identity,
            network=p.network,
            role=self.role,
            listen_addrs=self._listen_addrs,
            nonce=secrets.token_bytes(32),
            now_ms=self._wall_ms(),
            seq=self._next_seq(),
            expected_peer_id=expected,
            max_skew_ms=int(p.max_clock_skew_s * 1000),
        )
        self._seq += 4
        refused: HandshakeRefused | None = None
        try:
            with trio.fail_after(p.handshake_timeout_s):
                for frame in hs.initial_frames():
                    await ws.send_message(frame)
                while not hs.done:
                    data = await ws.get_message()
                    for frame in hs.receive(data, self._wall_ms()):
                        await ws.send_message(frame)
        except HandshakeRefused as exc:
            refused = exc
        except trio.TooSlowError:
            refused = HandshakeRefused("timeout", f"no complete handshake within {p.handshake_timeout_s:g} s")
        except ConnectionClosed as exc:
            cr = exc.reason
            refused = HandshakeRefused("closed", f"link closed during the handshake ({cr.code if cr else '?'})", by_remote=True)
        if refused is None:
            assert hs.result is not None
            self.stats["handshakes_ok"] += 1
            _set_message_limit(ws, self._ws_max)  # authenticated: frames up to the frame limit from now on
            return hs.result
        self.stats[f"handshake_refused.{refused.code}"] += 1
        who = hs.remote_hello.sender if hs.remote_hello is not None else "?"
        log.warning(
            "handshake refused",
            extra={"fields": {"code": refused.code, "reason": refused.reason, "peer": who, "outbound": outbound}},
        )
        with trio.move_on_after(1.0):
            if not refused.by_remote:
                try:
                    await ws.send_message(goodbye_frame(f"handshake refused: {refused.reason}"))
                except ConnectionClosed:
                    pass
            await ws.aclose()
        raise refused

    # ---- links -------------------------------------------------------------------------------

    def _outbound_count(self) -> int:
        return sum(1 for c in self._conns.values() if c.outbound)

    async def _on_ws_request(self, request: WebSocketRequest) -> None:
        try:
            p = self.params
            ip = _endpoint_ip(request.remote)
            inbound = sum(1 for c in self._conns.values() if not c.outbound) + self._handshaking_in
            refuse: tuple[str, str] | None = None  # (counter, reason)
            if self._closing:
                refuse = ("inbound_rejected", "shutting down")
            elif inbound >= p.max_inbound:
                refuse = ("inbound_rejected", "too many peers")
            elif (
                p.per_ip_limited(ip)
                and (self._handshaking_from[ip] + sum(1 for c in self._conns.values() if not c.outbound and c.ip == ip))
                >= p.max_inbound_per_ip
            ):
                refuse = ("inbound_rejected_per_ip", f"too many links from {ip}")
            if refuse is not None:
                self.stats[refuse[0]] += 1
                log.debug("inbound link rejected", extra={"fields": {"ip": ip, "reason": refuse[1]}})
                await request.reject(503, body=refuse[1].encode())
                return
            ws = await request.accept()
            self._handshaking_in += 1
            self._handshaking_from[ip] += 1
            try:
                res = await self._handshake(ws, outbound=False, expected=None)
            except HandshakeRefused:
                return
            finally:
                self._handshaking_in -= 1
                self._handshaking_from[ip] -= 1
                if self._handshaking_from[ip] <= 0:
                    del self._handshaking_from[ip]
            conn = self._new_conn(ws, res, outbound=False, ip=ip)
            if await self._register(conn):
                await self._run_conn(conn)
        except (ConnectionClosed, HandshakeError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        except Exception:
            log.exception("inbound link failed")

    def _new_conn(self, ws: WebSocketConnection, res: HandshakeResult, *, outbound: bool, ip: str) -> Connection:
        return Connection(
            SecureSocket(ws, res.session),
            peer_id=res.peer_id,
            role=res.role,
            outbound=outbound,
            listen_addrs=res.listen_addrs,
            ip=ip,
            connected_ms=self._wall_ms(),
            params=self.params,
        )

    def _dialer(self, conn: Connection) -> str:
        return self.peer_id if conn.outbound else conn.peer_id

    async def _register(self, conn: Connection) -> bool:
        """Add an authenticated link. One link per peer pair: of two links between the same peers
        both sides keep the one dialled by the lower peer id (deterministic, no coordination)."""
        pid = conn.peer_id
        old = self._conns.get(pid)
        refuse = None
        if self._closing:
            refuse = "shutting down"
        elif not self.accepts_from(pid):  # a retained score below the graylist: no new link
            refuse = "graylisted"
            self.stats["links_refused_graylisted"] += 1
        elif old is not None and old.closing_reason is None and self._dialer(conn) >= self._dialer(old):
            refuse = "duplicate connection (keeping the link dialled by the lower peer id)"
        if refuse is not None:
            self.stats["links_refused_duplicate" if old is not None else "links_refused"] += 1
            with trio.move_on_after(1.0):
                try:
                    await conn.ws.send_message(goodbye_frame(refuse))
                except (ConnectionClosed, LinkIntegrityError):
                    pass
                await conn.ws.aclose()
            return False
        self._conns[pid] = conn
        if old is not None:
            self.stats["links_replaced"] += 1
            old.close("duplicate connection (keeping the link dialled by the lower peer id)")
        else:
            try:
                self._events.peer_connected(pid, outbound=conn.outbound, ip=conn.ip)
            except Exception:
                log.exception("peer_connected hook failed")
        # The listen addresses a peer announced in its Hello are not stored for dialling: only a
        # signed peer record (it sends one in its first peer exchange) puts addresses in the store,
        # so a stranger's handshake cannot steer our dials.
        self.peerstore.on_connected(pid, self._wall_ms())
        self.stats["links_opened"] += 1
        log.info(
            "peer connected",
            extra={
                "fields": {"peer": pid, "role": conn.role, "outbound": conn.outbound, "ip": conn.ip, "peers": len(self._conns)}
            },
        )
        conn.try_send(self._pex_frame(exclude=pid))
        return True

    async def _run_conn(self, conn: Connection) -> None:
        reason = "?"
        try:
            reason = await conn.run(self._on_frame)
        except Exception:
            log.exception("link failed", extra={"fields": {"peer": conn.peer_id}})
        finally:
            self._unregister(conn, reason)

    def _unregister(self, conn: Connection, reason: str) -> None:
        pid = conn.peer_id
        if conn.close_code == 1009:
            self.stats["bad_frames.oversized"] += 1
            self._penalize(pid, 5.0, "oversized frame (websocket limit)")
        if conn.integrity_failure is not None:
            # Not necessarily the peer's doing (someone on the path may have injected the frame),
            # but the link is lost either way; the penalty is the same as for an oversized frame.
            self.stats["links_closed_integrity"] += 1
            self._penalize(pid, 5.0, "link integrity failure")
        if self._conns.get(pid) is not conn:
            return  # replaced by a newer link to the same peer
        del self._conns[pid]
        try:
            self._events.peer_disconnected(pid)
        except Exception:
            log.exception("peer_disconnected hook failed")
        e = self.peerstore.get(pid)
        if e is not None:  # do not hammer a peer that just went away: first retry after the min backoff
            e.next_dial_at = trio.current_time() + backoff_delay(
                1, self.params.reconnect_min_s, self.params.reconnect_max_s, self._rng
            )
        self.stats["links_closed"] += 1
        log.info("peer disconnected", extra={"fields": {"peer": pid, "reason": reason, "peers": len(self._conns)}})

    # ---- frames ------------------------------------------------------------------------------

    def _on_frame(self, conn: Connection, data: bytes) -> None:
        p = self.params
        try:
            if len(data) > p.max_frame_bytes:
                raise OversizedMessage(f"frame of {len(data)} bytes exceeds the limit of {p.max_frame_bytes}")
            msg = decode_frame(data, max_bytes=p.max_frame_bytes)
        except WireError as exc:
            self._bad_frame(conn, exc)
            return
        if isinstance(msg, GossipRPC):
            if not self.accepts_from(conn.peer_id):
                self.stats["gossip_dropped_graylisted"] += 1
                return
            self.stats["gossip_rpcs_in"] += 1
            self._events.on_rpc(conn.peer_id, msg)
        elif isinstance(msg, Request):
            self._on_request(conn, msg)
        elif isinstance(msg, Response):
            if not conn.pending.resolve(msg):
                self.stats["responses_unsolicited"] += 1
        elif isinstance(msg, Ping):
            conn.try_send(encode_frame(Pong(nonce=msg.nonce)))
        elif isinstance(msg, Pong):
            sent = conn.ping_sent.pop(msg.nonce, None)
            if sent is not None:
                conn.rtt_s = trio.current_time() - sent
        elif isinstance(msg, PeerExchange):
            self._on_pex(conn, msg)
        elif isinstance(msg, Goodbye):
            self.stats["goodbyes_received"] += 1
            conn.remote_goodbye = msg.reason
            conn.close(f"peer said goodbye: {msg.reason}")

    def _penalize(self, peer_id: str, amount: float, reason: str) -> None:
        self.penalize(peer_id, amount, reason)

    def _bad_frame(self, conn: Connection, exc: WireError) -> None:
        conn.bad_frames += 1
        self.stats["bad_frames"] += 1
        self.stats[f"bad_frames.{exc.reason}"] += 1
        level = logging.WARNING if conn.bad_frames <= _LOUD_BAD_FRAMES else logging.DEBUG
        log.log(
            level,
            "bad frame",
            extra={"fields": {"peer": conn.peer_id, "reason": exc.reason, "error": exc.message[:200], "count": conn.bad_frames}},
        )
        self._penalize(conn.peer_id, 1.0, f"bad frame: {exc.reason}")
        if conn.bad_frames >= self.params.max_bad_frames:
            self.stats["links_closed_garbage"] += 1
            conn.close(f"too many bad frames ({conn.bad_frames})")

    # ---- request / response (serving side) ---------------------------------------------------

    def _on_request(self, conn: Connection, req: Request) -> None:
        handler = self._handlers.get(req.protocol)
        if handler is None:
            self.stats["requests_unknown_protocol"] += 1
            conn.spawn(
                self._respond, conn, Response(req_id=req.req_id, ok=False, error=f"no handler for protocol {req.protocol!r}")
            )
            return
        if conn.inflight_in >= self.params.max_inflight_requests_per_peer:
            self.stats["requests_refused_busy"] += 1
            conn.spawn(self._respond, conn, Response(req_id=req.req_id, ok=False, error="too many requests in flight"))
            return
        conn.inflight_in += 1
        conn.spawn(self._serve, conn, req, handler)

    async def _serve(self, conn: Connection, req: Request, handler: Handler) -> None:
        p = self.params
        try:
            resp = None
            with trio.move_on_after(p.request_timeout_s) as scope:
                try:
                    out = await handler(conn.peer_id, req.payload)
                except Exception as exc:
                    self.stats["requests_handler_error"] += 1
                    log.info(
                        "request handler raised",
                        extra={"fields": {"peer": conn.peer_id, "protocol": req.protocol, "error": error_text(exc)}},
                    )
                    resp = Response(req_id=req.req_id, ok=False, error=error_text(exc))
                else:
                    if not isinstance(out, (bytes, bytearray)):
                        resp = Response(req_id=req.req_id, ok=False, error=f"handler returned {type(out).__name__}, not bytes")
                    elif len(out) + FRAME_OVERHEAD > p.max_frame_bytes:
                        resp = Response(
                            req_id=req.req_id, ok=False, error=f"response of {len(out)} bytes exceeds the frame limit"
                        )
                    else:
                        resp = Response(req_id=req.req_id, ok=True, payload=bytes(out))
            if scope.cancelled_caught or resp is None:
                resp = Response(req_id=req.req_id, ok=False, error=f"handler timed out after {p.request_timeout_s:g} s")
        finally:
            conn.inflight_in -= 1
        self.stats["requests_served"] += 1
        await self._respond(conn, resp)

    async def _respond(self, conn: Connection, resp: Response) -> None:
        try:
            await conn.send(encode_frame(resp))
        except LinkClosed:
            self.stats["responses_lost"] += 1

    # ---- dialling ----------------------------------------------------------------------------

    async def _connect_to(self, peer_id: str) -> Connection:
        e = self.peerstore.get(peer_id)
        if e is None or not e.addrs:
            raise PeerUnreachable(f"not connected to {peer_id} and no address known for it")
        last: Exception | None = None
        for addr in list(e.addrs):
            try:
                await self._dial(addr, expected=peer_id)
            except (NetError, OSError) as exc:
                last = exc
                continue
            conn = self._conns.get(peer_id)
            if conn is not None and conn.closing_reason is None:
                return conn
        raise PeerUnreachable(f"cannot reach {peer_id}: {last}")

    async def _dial(self, addr: str, *, expected: str | None) -> str:
        if self._nursery is None:
            raise PeerUnreachable("host is not running")
        if self._closing:
            raise PeerUnreachable("host is shutting down")
        known = self._addr_peer.get(addr)
        if known is not None and known in self._conns and (expected is None or expected == known):
            return known
        pending = self._dialing.get(addr)
        if pending is not None:  # someone is dialling this address already: share the result
            await pending.done.wait()
            if pending.peer_id is not None and pending.peer_id in self._conns:
                return pending.peer_id
            raise PeerUnreachable(f"dial to {addr} failed")
        d = self._dialing[addr] = _Dial()
        if expected:
            self._dialing_peers.add(expected)
        try:
            pid = await self._nursery.start(self._dial_task, addr, expected)
            d.peer_id = pid
            if len(self._addr_peer) > 4096:
                self._addr_peer.clear()
            self._addr_peer[addr] = pid
            self.stats["dials_ok"] += 1
            return pid
        except BaseException:
            self.stats["dials_failed"] += 1
            raise
        finally:
            del self._dialing[addr]
            if expected:
                self._dialing_peers.discard(expected)
            d.done.set()

    async def _dial_task(
        self, addr: str, expected: str | None, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        p = self.params
        err: BaseException | None = None
        started = False
        try:
            # Errors before started() are kept in ``err`` and raised outside the nursery, so that
            # callers of _dial see a plain NetError rather than an exception group.
            async with trio.open_nursery() as wsn:
                ws: WebSocketConnection | None = None
                try:
                    with trio.fail_after(p.dial_timeout_s):
                        ws = await connect_websocket_url(
                            wsn,
                            addr,
                            message_queue_size=2,
                            max_message_size=MAX_HANDSHAKE_FRAME,
                            receive_buffer_size=_RECV_BUFFER,
                        )
                except (OSError, HandshakeError, trio.TooSlowError, ValueError, ConnectionClosed) as exc:
                    err = PeerUnreachable(f"cannot dial {addr}: {type(exc).__name__}: {exc}")
                if ws is not None:
                    try:
                        res = await self._handshake(ws, outbound=True, expected=expected)
                    except HandshakeRefused as exc:
                        err = exc
                    else:
                        conn = self._new_conn(ws, res, outbound=True, ip=_endpoint_ip(ws.remote))
                        kept = await self._register(conn)
                        if not kept and res.peer_id not in self._conns:
                            err = PeerUnreachable(f"link to {addr} refused locally")
                        else:
                            task_status.started(res.peer_id)
                            started = True
                            if kept:
                                await self._run_conn(conn)
                wsn.cancel_scope.cancel()
        except Exception as exc:
            if started:
                log.exception("outbound link failed", extra={"fields": {"addr": addr}})
                return
            err = err or PeerUnreachable(f"cannot dial {addr}: {exc!r}")
        if not started:
            raise err or PeerUnreachable(f"cannot dial {addr}")

    async def _background_dial(self, addr: str, expected: str | None, boot: _BootState | None) -> None:
        p = self.params
        try:
            pid = await self._dial(addr, expected=expected)
        except (NetError, OSError) as exc:
            if boot is not None:
                boot.failures += 1
                boot.next_at = trio.current_time() + backoff_delay(boot.failures, p.reconnect_min_s, p.reconnect_max_s, self._rng)
            elif expected is not None:
                self.peerstore.on_dial_failed(expected, trio.current_time(), p.reconnect_min_s, p.reconnect_max_s)
            log.debug("dial failed", extra={"fields": {"addr": addr, "error": str(exc)}})
            return
        if boot is not None:
            boot.failures, boot.next_at, boot.peer_id = 0, 0.0, pid

    # ---- connection manager ------------------------------------------------------------------

    async def _maintain_loop(self) -> None:
        while True:
            try:
                self._maintain_once()
            except Exception:
                log.exception("connection manager step failed")
            await trio.sleep(self.params.maintain_interval_s)

    def _maintain_once(self) -> None:
        p = self.params
        if self._closing or self._nursery is None:
            return
        now = trio.current_time()
        connected = set(self._conns)
        self.peerstore.expire(self._wall_ms(), protected=connected)
        connected_addrs = {a for c in self._conns.values() for a in c.listen_addrs}
        own = set(self._listen_addrs) | {self.listen_addr}
        budget = p.max_outbound - self._outbound_count() - len(self._dialing)
        # Bootstrap peers are kept connected: redialled with backoff whenever the link is down.
        for addr in p.bootstrap:
            if budget <= 0:
                return
            st = self._boot.setdefault(addr, _BootState())
            if (
                addr in own
                or addr in connected_addrs
                or (st.peer_id is not None and st.peer_id in connected)
                or addr in self._dialing
                or now < st.next_at
            ):
                continue
            st.next_at = now + p.reconnect_min_s  # until the dial reports back
            budget -= 1
            self._nursery.start_soon(self._background_dial, addr, None, st)
        # Fill the mesh from the peer store up to target_peers.
        want = min(budget, p.target_peers - len(self._conns) - len(self._dialing))
        if want <= 0:
            return
        exclude = connected | self._dialing_peers | {self.peer_id}
        # Learned addresses come from signed records, but anyone can sign a record naming any
        # address: dials to them are rate-limited (token bucket), so records cannot aim a dial flood.
        self._dial_tokens = min(float(p.dial_burst), self._dial_tokens + (now - self._dial_tokens_at) * p.max_dials_per_s)
        self._dial_tokens_at = now
        for e in self.peerstore.dial_candidates(now, exclude, want):
            addr = e.addrs[e.failures % len(e.addrs)]
            if addr in self._dialing or addr in own or not self.accepts_from(e.peer_id):
                continue
            if self._dial_tokens < 1.0:
                self.stats["dials_rate_limited"] += 1
                break
            self._dial_tokens -= 1.0
            e.next_dial_at = now + p.reconnect_min_s
            self._nursery.start_soon(self._background_dial, addr, e.peer_id, None)

    async def _keepalive_loop(self) -> None:
        p = self.params
        while True:
            await trio.sleep(p.ping_interval_s)
            now = trio.current_time()
            for conn in list(self._conns.values()):
                # A large frame still arriving is life too: on a slow link one openings frame can
                # take longer than dead_after_s, with the peer's pings queued behind it.
                partial = getattr(conn.ws, "_message_size", 0)
                if partial and partial != conn.partial_seen:
                    conn.last_recv = now
                conn.partial_seen = partial
                idle = now - conn.last_recv
                if idle > p.dead_after_s:
                    self.stats["links_closed_dead"] += 1
                    conn.close(f"dead peer: nothing received for {idle:.1f} s")
                    continue
                nonce = self._rng.getrandbits(62)
                if len(conn.ping_sent) > 16:
                    conn.ping_sent.clear()
                conn.ping_sent[nonce] = now
                conn.try_send(encode_frame(Ping(nonce=nonce)))

    # ---- discovery ---------------------------------------------------------------------------

    def _refresh_record(self) -> None:
        now = self._wall_ms()
        ttl_ms = int(self.params.peer_record_ttl_s * 1000)
        rec = PeerRecord(addrs=self._listen_addrs[:8], role=self.role, expires_ms=now + ttl_ms)
        self._record = encode_envelope(rec, self.identity, seq=self._next_seq(), now_ms=now)
        self._record_expires_ms = now + ttl_ms

    def own_record(self) -> bytes:
        """Our signed peer record (renewed when half of its lifetime is gone)."""
        if self._wall_ms() > self._record_expires_ms - int(self.params.peer_record_ttl_s * 500):
            self._refresh_record()
        return self._record

    def _pex_frame(self, exclude: str) -> bytes:
        n = max(0, min(self.params.pex_records, 63))
        recs = [self.own_record()] + self.peerstore.records(n, exclude={exclude}, prefer=set(self._conns))
        return encode_frame(PeerExchange(records=recs))

    async def _pex_loop(self) -> None:
        while True:
            await trio.sleep(self.params.pex_interval_s)
            for pid, conn in list(self._conns.items()):
                conn.try_send(self._pex_frame(exclude=pid))

    def _on_pex(self, conn: Connection, msg: PeerExchange) -> None:
        now = trio.current_time()
        # Exchanges faster than half our own interval are ignored: each record costs a signature check.
        if now - conn.last_pex < min(1.0, self.params.pex_interval_s / 2):
            self.stats["pex_ignored_rate"] += 1
            return
        conn.last_pex = now
        self._add_records(msg.records, conn.peer_id)

    def _add_records(self, records: list[bytes], source: str | None) -> None:
        now_ms = self._wall_ms()
        connected = set(self._conns)
        bad = 0
        for rec in records:
            try:
                if self.peerstore.add_record(rec, now_ms, protected=connected):
                    self.stats["peer_records_learned"] += 1
            except WireError as exc:
                bad += 1
                self.stats[f"peer_records_bad.{exc.reason}"] += 1
        if bad and source is not None:
            self._penalize(source, 0.5 * bad, "bad peer records")

    def records_for(self, peer_ids: list[str]) -> list[bytes]:
        """Signed peer records we hold for these peers (gossip PRUNE peer exchange)."""
        return self.peerstore.records_for(peer_ids)

    def add_peer_records(self, records: list[bytes]) -> None:
        """Signed peer records learned outside peer exchange (gossip PRUNE)."""
        self._add_records(records, None)

    # ---- for the gossip layer ----------------------------------------------------------------

    def send_gossip(self, peer_id: str, rpc: GossipRPC) -> bool:
        """Queue one gossip RPC; False when it was dropped (no link, queue full, oversized)."""
        conn = self._conns.get(peer_id)
        if conn is None or conn.closing_reason is not None:
            return False
        size = rpc_size(rpc)
        if size > self.params.max_frame_bytes:
            self.stats["gossip_dropped_oversized"] += 1
            return False
        if conn.try_send_rpc(rpc, size):
            self.stats["gossip_rpcs_out"] += 1
            return True
        self.stats["gossip_dropped_queue_full"] += 1
        if conn.closing_reason is not None and conn.closing_reason.startswith("slow peer"):
            self.stats["links_closed_slow"] += 1
        return False

    def disconnect(self, peer_id: str, reason: str) -> None:
        """Close the link to a peer (gossip: graylisted too long)."""
        conn = self._conns.get(peer_id)
        if conn is not None:
            self.stats["links_closed_by_gossip"] += 1
            conn.close(f"gossip: {reason}")
