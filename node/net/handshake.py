"""The authenticated handshake as a sans-IO state machine (no sockets, no trio).

Both sides send at once a signed ``Hello`` envelope (network, role, listen addresses, a fresh
32-byte nonce; the protocol version travels in the envelope). On the other side's Hello each side
answers with a signed ``HelloAuth`` envelope naming both nonces and the other side's peer id. The
link is authenticated when a side has received a valid HelloAuth:

- the envelope signatures prove that each side holds the key its peer id encodes;
- ``your_nonce`` must be the nonce we just made, so an old HelloAuth cannot be replayed;
- ``your_peer_id`` must be our id, so a HelloAuth made for someone else cannot be relayed to us;
- ``my_nonce`` and the envelope sender must match the Hello we received on this link.

Each Hello also carries an ephemeral X25519 key; the two give the link's session keys
(``HandshakeResult.session``), and every frame after the handshake is sealed with them
(node.net.secure). The key is inside the signed Hello and the HelloAuth signs the fresh nonces, so
a man in the middle can neither swap the keys nor replay an old Hello with a key it knows.

Refusals raise HandshakeRefused with a short code and a reason; the I/O driver sends the reason
to the other side in a Goodbye link frame. A Goodbye received during the handshake is a refusal
by the remote.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from node.identity import Identity
from node.net.errors import HandshakeRefused
from node.net.framing import LINK_TYPES
from node.net.secure import KeyExchange, SessionKeys
from node.wire import constants as C
from node.wire.codec import from_wire, unpack_strict
from node.wire.envelope import Envelope, decode_envelope, encode_envelope
from node.wire.errors import BadSignature, StaleMessage, VersionMismatch, WireError
from node.wire.messages import Goodbye, Hello, HelloAuth

# Handshake frames are small; anything larger is refused before decoding.
MAX_HANDSHAKE_FRAME = 16 * 1024


class State(enum.Enum):
    WAIT_HELLO = "wait-hello"
    WAIT_AUTH = "wait-auth"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class HandshakeResult:
    peer_id: str
    role: str
    listen_addrs: list[str]
    agent: str
    network: str
    session: SessionKeys  # the link's keys: every frame after the handshake is sealed with them


class Handshake:
    """One side of one handshake. Feed received frames to ``receive``; send what it returns."""

    def __init__(
        self,
        identity: Identity,
        *,
        network: str,
        role: str,
        listen_addrs: list[str],
        nonce: bytes,
        now_ms: int,
        seq: int,
        expected_peer_id: str | None = None,
        max_skew_ms: int = C.DEFAULT_MAX_CLOCK_SKEW_MS,
        agent: str = "gpow",
        kx_seed: bytes | None = None,
    ) -> None:
        if len(nonce) != C.NONCE_BYTES:
            raise ValueError(f"nonce must be {C.NONCE_BYTES} bytes")
        self.identity = identity
        self.network = network
        self.role = role
        self.listen_addrs = list(listen_addrs)[:8]
        self.nonce = nonce
        self.expected_peer_id = expected_peer_id
        self.max_skew_ms = max_skew_ms
        self.agent = agent
        self._seq = seq
        self.state = State.WAIT_HELLO
        self.remote_hello: Envelope | None = None
        self.result: HandshakeResult | None = None
        self.failure: HandshakeRefused | None = None
        self._kx = KeyExchange(kx_seed)  # ephemeral: a fresh key per handshake gives forward secrecy
        self._session: SessionKeys | None = None
        self._hello_bytes = self._seal(
            Hello(network=network, role=role, listen_addrs=self.listen_addrs, nonce=nonce, kx=self._kx.public, agent=agent),
            now_ms,
        )

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    def initial_frames(self) -> list[bytes]:
        """What to send as soon as the link is open: our Hello."""
        return [self._hello_bytes]

    def receive(self, data: bytes, now_ms: int) -> list[bytes]:
        """Process one frame from the other side; return frames to send. Raises HandshakeRefused."""
        if self.state in (State.DONE, State.FAILED):
            raise self._fail("unexpected", f"frame received in state {self.state.value}")
        try:
            return self._receive(data, now_ms)
        except HandshakeRefused as exc:
            self.state = State.FAILED
            self.failure = exc
            raise

    # ---- internals ---------------------------------------------------------------------------

    def _seal(self, body: object, now_ms: int) -> bytes:
        self._seq += 1
        return encode_envelope(body, self.identity, seq=self._seq, now_ms=now_ms)

    def _fail(self, code: str, reason: str, by_remote: bool = False) -> HandshakeRefused:
        return HandshakeRefused(code, reason, by_remote=by_remote)

    def _receive(self, data: bytes, now_ms: int) -> list[bytes]:
        if not isinstance(data, (bytes, bytearray)):
            raise self._fail("malformed", "handshake frames are binary")
        if len(data) > MAX_HANDSHAKE_FRAME:
            raise self._fail("oversized", f"handshake frame of {len(data)} bytes (limit {MAX_HANDSHAKE_FRAME})")
        goodbye = _as_goodbye(bytes(data))
        if goodbye is not None:
            raise self._fail("remote", f"the peer refused the handshake: {goodbye}", by_remote=True)
        try:
            env = decode_envelope(
                bytes(data), max_bytes=MAX_HANDSHAKE_FRAME, now_ms=now_ms, max_skew_ms=self.max_skew_ms, expect=(Hello, HelloAuth)
            )
        except VersionMismatch as exc:
            raise self._fail("version", exc.message) from None
        except BadSignature as exc:
            raise self._fail("bad-signature", f"{exc.message} (the peer does not hold the key of the id it claims)") from None
        except StaleMessage as exc:
            raise self._fail("clock-skew", exc.message) from None
        except WireError as exc:
            raise self._fail("malformed", f"{exc.reason}: {exc.message}") from None
        if self.state is State.WAIT_HELLO:
            return self._on_hello(env, now_ms)
        return self._on_auth(env)

    def _on_hello(self, env: Envelope, now_ms: int) -> list[bytes]:
        if not isinstance(env.body, Hello):
            raise self._fail("unexpected", f"expected hello, got {env.type}")
        hello: Hello = env.body
        if hello.network != self.network:
            raise self._fail("network", f"peer is on network {hello.network!r}, this node on {self.network!r}")
        if env.sender == self.identity.peer_id:
            raise self._fail("self", "connected to ourselves")
        if self.expected_peer_id is not None and env.sender != self.expected_peer_id:
            raise self._fail("unexpected-peer", f"dialled {self.expected_peer_id} but the peer is {env.sender}")
        if hello.nonce == self.nonce:
            raise self._fail("replay", "the peer echoed our own nonce")
        try:
            self._session = self._kx.session(hello.kx)
        except ValueError as exc:
            raise self._fail("key-exchange", str(exc)) from None
        self.remote_hello = env
        self.state = State.WAIT_AUTH
        auth = HelloAuth(my_nonce=self.nonce, your_nonce=hello.nonce, your_peer_id=env.sender)
        return [self._seal(auth, now_ms)]

    def _on_auth(self, env: Envelope) -> list[bytes]:
        if not isinstance(env.body, HelloAuth):
            raise self._fail("unexpected", f"expected hello-auth, got {env.type}")
        assert self.remote_hello is not None
        auth: HelloAuth = env.body
        if env.sender != self.remote_hello.sender:
            raise self._fail("impersonation", f"hello-auth signed by {env.sender}, hello by {self.remote_hello.sender}")
        if auth.your_peer_id != self.identity.peer_id:
            raise self._fail("relayed", f"hello-auth was made for {auth.your_peer_id}, not for this node")
        if auth.your_nonce != self.nonce:
            raise self._fail("replay", "hello-auth does not sign the nonce of this handshake (replayed?)")
        if auth.my_nonce != self.remote_hello.body.nonce:
            raise self._fail("replay", "hello-auth names a different nonce than the peer's hello")
        hello: Hello = self.remote_hello.body
        assert self._session is not None
        self.state = State.DONE
        self.result = HandshakeResult(
            peer_id=env.sender,
            role=hello.role,
            listen_addrs=list(hello.listen_addrs),
            agent=hello.agent,
            network=hello.network,
            session=self._session,
        )
        return []


def _as_goodbye(data: bytes) -> str | None:
    """A Goodbye link frame (the other side refusing) or None for anything else."""
    try:
        top = unpack_strict(data, max_bytes=MAX_HANDSHAKE_FRAME)
    except WireError:
        return None
    if isinstance(top, dict) and set(top) == {"b", "t"} and top.get("t") == Goodbye.TYPE:
        try:
            return from_wire(LINK_TYPES[Goodbye.TYPE], top["b"]).reason
        except WireError:
            return "(unreadable reason)"
    return None
