"""Ed25519 node identities, key files and self-certifying peer ids.

A peer id is the libp2p encoding of an Ed25519 public key: base58btc of the identity multihash of
the protobuf-framed key. It starts with ``12D3KooW`` and contains the key itself, so anyone holding
the id can check a signature without asking anyone for the key.
"""

from __future__ import annotations

import functools
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
# identity multihash (0x00, length 36) + protobuf PublicKey{Type: Ed25519 (1), Data: 32 bytes}
_PEER_ID_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])
KEY_FILE_MAGIC = "gpow-ed25519-seed-v1"


class IdentityError(Exception):
    """A key file or peer id that cannot be used; the message says why and how to fix it."""


def b58encode(data: bytes) -> str:
    num = int.from_bytes(data, "big")
    out = []
    while num:
        num, rem = divmod(num, 58)
        out.append(_B58[rem])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    num = 0
    for ch in text:
        try:
            num = num * 58 + _B58_INDEX[ch]
        except KeyError:
            raise IdentityError(f"invalid base58 character {ch!r}") from None
    pad = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * pad + body


def peer_id_from_public_key(public_key: bytes) -> str:
    if len(public_key) != 32:
        raise IdentityError(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
    return b58encode(_PEER_ID_PREFIX + public_key)


_PEER_ID_CACHE: dict[str, bytes] = {}


def public_key_from_peer_id(peer_id: str) -> bytes:
    """Return the Ed25519 key a peer id encodes, or raise IdentityError."""
    cached = _PEER_ID_CACHE.get(peer_id)
    if cached is not None:
        return cached
    if not isinstance(peer_id, str) or not 40 <= len(peer_id) <= 60:
        raise IdentityError("a peer id is a 52-character base58 string")
    raw = b58decode(peer_id)
    if len(raw) != 38 or not raw.startswith(_PEER_ID_PREFIX):
        raise IdentityError("peer id does not encode an Ed25519 public key")
    key = raw[len(_PEER_ID_PREFIX) :]
    if b58encode(raw) != peer_id:  # one canonical spelling per key
        raise IdentityError("peer id is not in canonical form")
    if len(_PEER_ID_CACHE) > 65536:
        _PEER_ID_CACHE.clear()
    _PEER_ID_CACHE[peer_id] = key
    return key


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
        return True
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False


@dataclass(frozen=True)
class Identity:
    """A node's signing key. The peer id and public key are derived, never stored separately."""

    signing_key: nacl.signing.SigningKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        if len(seed) != 32:
            raise IdentityError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(nacl.signing.SigningKey(seed))

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @functools.cached_property
    def peer_id(self) -> str:  # computed once: every message a node signs names it
        return peer_id_from_public_key(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature

    def __repr__(self) -> str:  # never print the secret
        return f"Identity({self.peer_id})"


def write_key_file(path: Path, identity: Identity, *, force: bool = False) -> None:
    """Write the key's seed as hex, readable by the owner only (mode 0600)."""
    path = Path(path)
    if path.exists() and not force:
        raise IdentityError(f"{path} already exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{KEY_FILE_MAGIC}\n{bytes(identity.signing_key).hex()}\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_key_file(path: Path) -> Identity:
    """Load a key file, refusing one that group or others can read or write."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise IdentityError(f"key file {path} does not exist; create one with `gpow keygen --out {path}`") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise IdentityError(
            f"key file {path} has mode {mode:04o}: others can read it. "
            f"Fix it with `chmod 600 {path}` (and consider the key compromised if it was shared)"
        )
    lines = path.read_text().split()
    if len(lines) != 2 or lines[0] != KEY_FILE_MAGIC:
        raise IdentityError(f"{path} is not a gpow key file (expected '{KEY_FILE_MAGIC}' header)")
    try:
        seed = bytes.fromhex(lines[1])
    except ValueError:
        raise IdentityError(f"{path}: key is not hex") from None
    return Identity.from_seed(seed)


def load_or_create_key_file(path: Path) -> Identity:
    path = Path(path)
    if path.exists():
        return load_key_file(path)
    identity = Identity.generate()
    write_key_file(path, identity)
    return identity
