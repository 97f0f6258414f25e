"""The secure channel: every link frame after the handshake is encrypted and authenticated.

The handshake authenticates the peers; without more, anyone on the path could still inject, drop,
reorder or read link frames afterwards (gossip control frames are not signed). So each side's
signed Hello carries a fresh X25519 key (``kx``), and once the Hellos are exchanged both sides
derive two directional session keys with libsodium's ``crypto_kx`` (BLAKE2b of the shared secret
and both public keys). From then on each websocket message is ChaCha20-Poly1305 (IETF) sealed
under the sender's key with an implicit per-direction counter as nonce, as in Noise transport
messages: a frame that was tampered with, injected, replayed, dropped or reordered fails to open,
and the link is closed (the counters can no longer agree, so there is nothing to recover).

``SecureChannel`` is the sans-IO part (bytes in, bytes out); ``SecureSocket`` wraps a
trio-websocket connection with it, so the link code above sends and receives plaintext frames.
Websocket text messages are never sealed; they pass through as they are (the link layer counts
them as garbage).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from node.net.errors import LinkIntegrityError
from node.wire import constants as C

KX_PUBLIC_BYTES = C.KX_PUBLIC_BYTES
assert KX_PUBLIC_BYTES == sodium.crypto_kx_PUBLIC_KEY_BYTES
SEAL_OVERHEAD = sodium.crypto_aead_chacha20poly1305_ietf_ABYTES  # 16-byte Poly1305 tag per frame
_NONCE_PREFIX = b"\x00\x00\x00\x00"  # 4 zero bytes + 8-byte little-endian frame counter = 12 bytes


@dataclass(frozen=True)
class SessionKeys:
    """The two directional keys of one link, as derived by both sides (ours ``tx`` is theirs ``rx``)."""

    tx: bytes
    rx: bytes


class KeyExchange:
    """An ephemeral X25519 key pair for one handshake."""

    def __init__(self, seed: bytes | None = None) -> None:
        if seed is None:
            self.public, self._secret = sodium.crypto_kx_keypair()
        else:
            self.public, self._secret = sodium.crypto_kx_seed_keypair(seed)

    def session(self, remote_public: bytes) -> SessionKeys:
        """Derive the link's keys. The side with the smaller public key takes libsodium's client
        role, so the two sides agree without knowing who dialled. Raises ValueError on a key that
        cannot be used (wrong length, our own key echoed, a low-order point)."""
        if len(remote_public) != KX_PUBLIC_BYTES:
            raise ValueError(f"key exchange key must be {KX_PUBLIC_BYTES} bytes, got {len(remote_public)}")
        if remote_public == self.public:
            raise ValueError("the peer echoed our own key exchange key")
        try:
            if self.public < remote_public:
                rx, tx = sodium.crypto_kx_client_session_keys(self.public, self._secret, remote_public)
            else:
                rx, tx = sodium.crypto_kx_server_session_keys(self.public, self._secret, remote_public)
        except (CryptoError, TypeError) as exc:
            raise ValueError(f"unusable key exchange key: {exc}") from None
        return SessionKeys(tx=tx, rx=rx)


class SecureChannel:
    """Seal outgoing frames and open incoming ones, each direction with its own counter."""

    def __init__(self, keys: SessionKeys) -> None:
        self._tx_key = keys.tx
        self._rx_key = keys.rx
        self.sent = 0
        self.received = 0

    def seal(self, plaintext: bytes) -> bytes:
        nonce = _NONCE_PREFIX + self.sent.to_bytes(8, "little")
        self.sent += 1
        return sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, None, nonce, self._tx_key)

    def open(self, sealed: bytes) -> bytes:
        """The plaintext of the next frame; LinkIntegrityError if it is not the frame the peer sealed next."""
        if len(sealed) < SEAL_OVERHEAD:
            raise LinkIntegrityError(f"frame {self.received} is {len(sealed)} bytes, shorter than its tag")
        nonce = _NONCE_PREFIX + self.received.to_bytes(8, "little")
        try:
            plain = sodium.crypto_aead_chacha20poly1305_ietf_decrypt(bytes(sealed), None, nonce, self._rx_key)
        except CryptoError:
            raise LinkIntegrityError(
                f"frame {self.received} failed authentication (tampered, injected, replayed or out of order)"
            ) from None
        self.received += 1
        return plain


class SecureSocket:
    """A trio-websocket connection whose binary messages go through a SecureChannel.

    Offers what the link code uses (send_message, get_message, aclose, closed, remote); any other
    attribute is the websocket's. ``raw`` is the websocket itself (tests use it to inject frames).
    """

    def __init__(self, ws: Any, keys: SessionKeys) -> None:
        self.raw = ws
        self.channel = SecureChannel(keys)
        self.send_interrupted = False

    async def send_message(self, message: bytes | str) -> None:
        """Seal and send. After a send that was cancelled or failed the peer may or may not hold that
        frame, so no later frame of ours could be trusted to open: further sends raise
        LinkIntegrityError (the link is going down anyway; its goodbye is then left out rather than
        arriving as a frame the peer must count as an attack)."""
        if isinstance(message, str):
            await self.raw.send_message(message)
            return
        if self.send_interrupted:
            raise LinkIntegrityError("an earlier send on this link was interrupted; nothing more can be sealed")
        sealed = self.channel.seal(message)
        try:
            await self.raw.send_message(sealed)
        except BaseException:
            self.send_interrupted = True
            raise

    async def get_message(self) -> bytes | str:
        data = await self.raw.get_message()
        if isinstance(data, str):
            return data
        return self.channel.open(data)

    async def aclose(self, *args: Any, **kwargs: Any) -> None:
        await self.raw.aclose(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)
