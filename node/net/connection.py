"""One authenticated link to one peer: a bounded send queue, a writer, a reader, graceful close.

The send queue is a trio memory channel bounded in frames (and, for gossip, in bytes): gossip
frames that do not fit are dropped (``try_send`` returns False) while requests and responses wait
for room (``send``). A peer whose queue keeps overflowing without ever draining is closed, so one
slow peer cannot hold memory or slow the others.

Gossip RPCs are queued as objects (``try_send_rpc``) and encoded by the writer: the RPCs waiting
when the writer comes round leave as one frame (``coalesce_rpcs``), so under load many messages
share one frame, one seal and one websocket send, while an idle link sends each at once (no timer,
no added latency: Nagle's idea without the delay).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio
from trio_websocket import ConnectionClosed

from node.net.errors import LinkClosed, LinkIntegrityError
from node.net.framing import coalesce_rpcs, encode_frame, goodbye_frame
from node.net.params import NetParams
from node.net.reqresp import PendingRequests
from node.net.secure import SecureSocket
from node.wire.messages import GossipRPC

if TYPE_CHECKING:
    from node.identity import Identity
    from node.net.handshake import HandshakeResult

log = logging.getLogger("gpow.net")


class _RpcBatch:
    """Gossip RPCs queued one after another, waiting for the writer as one queue entry: a burst
    of them takes one slot of the frame-bounded queue (its bytes still count in full)."""

    __slots__ = ("rpcs", "size")

    def __init__(self, rpc: GossipRPC, size: int) -> None:
        self.rpcs = [rpc]
        self.size = size


class Connection:
    def __init__(
        self,
        ws: SecureSocket,
        *,
        peer_id: str,
        role: str,
        outbound: bool,
        listen_addrs: list[str],
        ip: str,
        connected_ms: int,
        params: NetParams,
    ) -> None:
        self.ws = ws
        self.peer_id = peer_id
        self.role = role
        self.outbound = outbound
        self.listen_addrs = list(listen_addrs)
        self.ip = ip
        self.connected_ms = connected_ms
        self.params = params
        self._send_ch, self._recv_ch = trio.open_memory_channel[bytes | _RpcBatch](params.send_queue_frames)
        self._held: bytes | _RpcBatch | None = None  # taken from the queue, not yet sent
        self._tail: _RpcBatch | None = None  # the last entry queued, while it is a batch the writer has not taken
        self.rpcs_coalesced = 0  # gossip RPCs that left inside another one's frame
        self.rpcs_oversized = 0  # gossip frames over the frame limit, dropped by the writer
        self.queued_bytes = 0
        self.overflow_drops = 0  # gossip drops since the queue last drained
        self.total_drops = 0
        self.closing_reason: str | None = None
        self.remote_goodbye: str | None = None
        self.close_code: int | None = None
        self.finished = trio.Event()
        self.pending = PendingRequests()
        self.out_slots = trio.Semaphore(params.max_inflight_requests_per_peer)
        self.inflight_in = 0
        self.bad_frames = 0
        self.integrity_failure: str | None = None
        self.last_recv = trio.current_time()
        self.frames_in = self.frames_out = self.bytes_in = self.bytes_out = 0
        self.rtt_s: float | None = None
        self.last_pex = -1e9
        self.partial_seen = 0  # bytes of a partly received websocket message at the last keepalive check
        self.ping_sent: dict[int, float] = {}
        self._nursery: trio.Nursery | None = None
        self._goodbye_sent = False
        self._room = trio.Event()  # set (and replaced) each time the writer sends a frame

    # ---- sending -----------------------------------------------------------------------------

    def try_send(self, frame: bytes) -> bool:
        """Queue a frame that may be dropped (gossip, pings). False when the queue is full."""
        if self.closing_reason is not None:
            return False
        if self.queued_bytes + len(frame) > self.params.send_queue_bytes:
            return self._dropped()
        try:
            self._send_ch.send_nowait(frame)
        except trio.WouldBlock:
            return self._dropped()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        self._tail = None  # RPCs queued after this frame go after it
        self.queued_bytes += len(frame)
        return True

    def try_send_rpc(self, rpc: GossipRPC, size: int) -> bool:
        """Queue a gossip RPC of at most ``size`` encoded bytes (``rpc_size``), dropped like
        ``try_send`` when the queue is full; the writer encodes it with the RPCs queued behind it."""
        if self.closing_reason is not None:
            return False
        if self.queued_bytes + size > self.params.send_queue_bytes:
            return self._dropped()
        if self._tail is not None:
            self._tail.rpcs.append(rpc)
            self._tail.size += size
        else:
            batch = _RpcBatch(rpc, size)
            try:
                self._send_ch.send_nowait(batch)
            except trio.WouldBlock:
                return self._dropped()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return False
            self._tail = batch
        self.queued_bytes += size
        return True

    def _dropped(self) -> bool:
        self.overflow_drops += 1
        self.total_drops += 1
        if self.overflow_drops > self.params.slow_peer_drops_before_disconnect:
            self.close(f"slow peer: {self.overflow_drops} frames dropped without the send queue draining")
        return False

    async def send(self, frame: bytes) -> None:
        """Queue a frame that must not be dropped (requests, responses); waits for room, in frames
        and in bytes (so queued memory per peer stays under send_queue_bytes plus one frame)."""
        while self.queued_bytes > 0 and self.queued_bytes + len(frame) > self.params.send_queue_bytes:
            if self.closing_reason is not None:
                break
            await self._room.wait()
        if self.closing_reason is not None:
            raise LinkClosed(f"link closing: {self.closing_reason}")
        try:
            await self._send_ch.send(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise LinkClosed(f"link closing: {self.closing_reason}") from None
        self._tail = None
        self.queued_bytes += len(frame)

    # ---- closing -----------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """Graceful close (sync, idempotent): queued frames are flushed, then Goodbye, then the
        websocket close; after drain_timeout_s the link is cut regardless."""
        if self.closing_reason is not None:
            return
        self.closing_reason = reason
        self._send_ch.close()  # the writer drains what is queued, then says goodbye
        self._room.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.deadline = min(
                self._nursery.cancel_scope.deadline, trio.current_time() + self.params.drain_timeout_s
            )

    @property
    def closed(self) -> bool:
        return self.finished.is_set()

    # ---- running -----------------------------------------------------------------------------

    async def run(self, on_frame: Callable[[Connection, bytes], None]) -> str:
        """Read and write until the link ends; return why it ended."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.closing_reason is not None:  # closed before it started
                    nursery.cancel_scope.deadline = trio.current_time() + self.params.drain_timeout_s
                nursery.start_soon(self._writer)
                await self._reader(on_frame)
                nursery.cancel_scope.cancel()
        finally:
            reason = self.closing_reason or (
                f"peer said goodbye: {self.remote_goodbye}" if self.remote_goodbye else self._ws_close_text()
            )
            self.closing_reason = self.closing_reason or reason
            self._send_ch.close()
            self.pending.fail_all(f"link to {self.peer_id[-8:]} closed: {reason}")
            self.finished.set()
            # Shielded so a cancelled node still tells its peers; short, since a peer that is
            # going down at the same moment never answers the websocket close.
            with trio.CancelScope(shield=True), trio.move_on_after(0.25):
                await self._say_goodbye(reason)
        return reason

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a task for the lifetime of this link (request handlers)."""
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    def _ws_close_text(self) -> str:
        cr = self.ws.closed
        if cr is None:
            return "link ended"
        self.close_code = cr.code
        return f"websocket closed ({cr.code} {cr.name}{': ' + cr.reason if cr.reason else ''})"

    async def _say_goodbye(self, reason: str) -> None:
        if not self._goodbye_sent and self.ws.closed is None and self.remote_goodbye is None:
            self._goodbye_sent = True
            try:
                await self.ws.send_message(goodbye_frame(reason))
            except (ConnectionClosed, LinkIntegrityError):
                pass
        await self.ws.aclose()

    def _take_rpcs(self, first: _RpcBatch) -> list[bytes]:
        """``first`` and the gossip RPCs queued right behind it, as frames."""
        rpcs = list(first.rpcs)
        self.queued_bytes -= first.size
        if self._tail is first:
            self._tail = None
        while True:
            try:
                nxt = self._recv_ch.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if not isinstance(nxt, _RpcBatch):
                self._held = nxt  # a request or response: sent after these, in its place
                break
            rpcs.extend(nxt.rpcs)
            self.queued_bytes -= nxt.size
            if self._tail is nxt:
                self._tail = None
        limit = self.params.max_frame_bytes
        merged = coalesce_rpcs(rpcs, limit // 2)
        self.rpcs_coalesced += len(rpcs) - len(merged)
        frames = []
        for rpc in merged:
            frame = encode_frame(rpc)
            if len(frame) > limit:
                self.rpcs_oversized += 1  # our own bug (the gossip layer bounds what it sends)
                log.error(
                    "gossip frame over the frame limit dropped", extra={"fields": {"peer": self.peer_id, "bytes": len(frame)}}
                )
                continue
            frames.append(frame)
        return frames

    async def _next_frames(self) -> list[bytes] | None:
        item = self._held
        self._held = None
        if item is None:
            try:
                item = await self._recv_ch.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return None
        if isinstance(item, _RpcBatch):
            return self._take_rpcs(item)
        self.queued_bytes -= len(item)
        return [item]

    async def _writer(self) -> None:
        try:
            while (frames := await self._next_frames()) is not None:
                for frame in frames:
                    await self.ws.send_message(frame)
                    self.frames_out += 1
                    self.bytes_out += len(frame)
                self._room.set()
                self._room = trio.Event()
                if self._held is None and self._recv_ch.statistics().current_buffer_used == 0:
                    self.overflow_drops = 0
            # close() was called and everything queued is out: goodbye, then close the websocket.
            await self._say_goodbye(self.closing_reason or "closing")
        except ConnectionClosed:
            pass
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _reader(self, on_frame: Callable[[Connection, bytes], None]) -> None:
        while True:
            try:
                data = await self.ws.get_message()
            except ConnectionClosed:
                return
            except LinkIntegrityError as exc:
                self.integrity_failure = str(exc)
                log.warning("link integrity failure", extra={"fields": {"peer": self.peer_id, "error": str(exc)}})
                self.close(f"integrity failure: {exc}")
                return
            self.last_recv = trio.current_time()
            self.frames_in += 1
            self.bytes_in += len(data)
            if isinstance(data, str):
                data = b"\xc1" + data.encode("utf-8", "replace")  # never valid msgpack: counted as garbage
            try:
                on_frame(self, data)
            except Exception:  # a bug in a handler must not kill the link or the node
                log.exception("frame handler failed", extra={"fields": {"peer": self.peer_id}})


async def open_raw_link(
    nursery: trio.Nursery,
    url: str,
    identity: Identity,
    *,
    network: str,
    role: str = "raw",
    listen_addrs: list[str] | None = None,
    expected_peer_id: str | None = None,
    timeout: float = 5.0,
    max_message_size: int = 64 * 1024 * 1024,
) -> tuple[SecureSocket, HandshakeResult]:
    """Dial ``url`` and complete the handshake, returning the link's secure socket and the result.

    For tests and adversarial tools that need to speak raw link frames over an authenticated link
    (the socket seals them; its ``raw`` websocket sends bytes unsealed); a real node uses Host.dial.
    Raises HandshakeRefused.
    """
    import secrets
    import time

    from trio_websocket import connect_websocket_url

    from node.net.errors import HandshakeRefused
    from node.net.handshake import Handshake

    def now_ms() -> int:
        return int(time.time() * 1000)

    ws = await connect_websocket_url(nursery, url, max_message_size=max_message_size)
    hs = Handshake(
        identity,
        network=network,
        role=role,
        listen_addrs=listen_addrs or [],
        nonce=secrets.token_bytes(32),
        now_ms=now_ms(),
        seq=now_ms() * 1000,
        expected_peer_id=expected_peer_id,
    )
    try:
        with trio.fail_after(timeout):
            for frame in hs.initial_frames():
                await ws.send_message(frame)
            while not hs.done:
                for frame in hs.receive(await ws.get_message(), now_ms()):
                    await ws.send_message(frame)
    except HandshakeRefused:
        await ws.aclose()
        raise
    except (ConnectionClosed, trio.TooSlowError) as exc:
        await ws.aclose()
        raise HandshakeRefused("closed", f"link ended during the handshake: {exc!r}", by_remote=True) from None
    assert hs.result is not None
    return SecureSocket(ws, hs.result.session), hs.result
