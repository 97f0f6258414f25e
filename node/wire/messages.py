"""Every message of the node protocol, as a dataclass with its schema (types and ranges).

A message's ``TYPE`` is its name on the wire. Fields are checked on decode by
``node.wire.codec.from_wire``; ``fld`` carries ranges and lengths. Signed blobs that travel inside
other messages (gossip payloads, roster entries, peer records, openings) are complete encoded
envelopes of their own, carried as ``bytes`` and decoded by whoever needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from node.wire import constants as C
from node.wire.codec import fld

MESSAGE_TYPES: dict[str, type] = {}

U63 = 2**63 - 1
MAX_BLOB = 64 * 1024 * 1024


def message(cls: type) -> type:
    """Register a message dataclass under its TYPE."""
    name = cls.TYPE  # type: ignore[attr-defined]
    if name in MESSAGE_TYPES:
        raise RuntimeError(f"duplicate message type {name}")
    MESSAGE_TYPES[name] = cls
    return cls


# ---- handshake and link ------------------------------------------------------------------------


@message
@dataclass(frozen=True)
class Hello:
    """First frame each side sends: who it is and a fresh nonce."""

    TYPE: ClassVar[str] = "hello"
    network: str = fld(max_len=64)
    role: str = fld(max_len=16)
    listen_addrs: list[str] = fld(max_len=8)
    nonce: bytes = fld(length=C.NONCE_BYTES)
    # Ephemeral X25519 key for the link's session keys (node.net.secure); signed with the rest.
    kx: bytes = fld(length=C.KX_PUBLIC_BYTES)
    agent: str = fld(max_len=64, default="gpow")


@message
@dataclass(frozen=True)
class HelloAuth:
    """Second frame: proves the key by signing both nonces and both peer ids (in the envelope)."""

    TYPE: ClassVar[str] = "hello-auth"
    my_nonce: bytes = fld(length=C.NONCE_BYTES)
    your_nonce: bytes = fld(length=C.NONCE_BYTES)
    your_peer_id: str = fld(max_len=64)


@message
@dataclass(frozen=True)
class Goodbye:
    TYPE: ClassVar[str] = "goodbye"
    reason: str = fld(max_len=256)


@message
@dataclass(frozen=True)
class Ping:
    TYPE: ClassVar[str] = "ping"
    nonce: int = fld(min=0, max=U63)
    # A validator timing an executor names it: its miner has it answer (relaying to a remote one),
    # so the round trip measured is the one a challenge takes. Empty: the peer itself answers.
    executor_id: str = fld(max_len=64, default="")


@message
@dataclass(frozen=True)
class Pong:
    TYPE: ClassVar[str] = "pong"
    nonce: int = fld(min=0, max=U63)


# ---- discovery ---------------------------------------------------------------------------------


@message
@dataclass(frozen=True)
class PeerRecord:
    """Signed by the peer it describes; travels as an encoded envelope."""

    TYPE: ClassVar[str] = "peer-record"
    addrs: list[str] = fld(max_len=8)
    role: str = fld(max_len=16)
    expires_ms: int = fld(min=0, max=U63)


@message
@dataclass(frozen=True)
class PeerExchange:
    TYPE: ClassVar[str] = "peer-exchange"
    records: list[bytes] = fld(max_len=64)


# ---- gossip ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubOpt:
    topic: str = fld(max_len=128)
    subscribe: bool = True


@dataclass(frozen=True)
class PublishedMessage:
    topic: str = fld(max_len=128)
    data: bytes = fld(max_len=C.DEFAULT_MAX_MESSAGE_BYTES)  # an envelope signed by its origin


@dataclass(frozen=True)
class IHave:
    topic: str = fld(max_len=128)
    ids: list[bytes] = fld(max_len=C.MAX_IHAVE_IDS)


@dataclass(frozen=True)
class Prune:
    topic: str = fld(max_len=128)
    backoff_s: int = fld(min=0, max=3600)
    peers: list[bytes] = fld(max_len=C.MAX_PRUNE_PEERS)  # signed peer records for peer exchange


@message
@dataclass(frozen=True)
class GossipRPC:
    """One gossipsub RPC: subscriptions, published messages and control, like libp2p's."""

    TYPE: ClassVar[str] = "gossip"
    subscriptions: list[SubOpt] = fld(max_len=C.MAX_SUBS_PER_RPC, default_factory=list)
    publish: list[PublishedMessage] = fld(max_len=C.MAX_PUBLISH_PER_RPC, default_factory=list)
    ihave: list[IHave] = fld(max_len=C.MAX_IHAVE_PER_RPC, default_factory=list)
    iwant: list[bytes] = fld(max_len=C.MAX_IWANT_IDS, default_factory=list)
    graft: list[str] = fld(max_len=C.MAX_CONTROL_PER_RPC, default_factory=list)
    prune: list[Prune] = fld(max_len=C.MAX_CONTROL_PER_RPC, default_factory=list)


# ---- request / response ------------------------------------------------------------------------


@message
@dataclass(frozen=True)
class Request:
    TYPE: ClassVar[str] = "request"
    req_id: int = fld(min=0, max=U63)
    protocol: str = fld(max_len=64)
    payload: bytes = fld(max_len=MAX_BLOB)


@message
@dataclass(frozen=True)
class Response:
    TYPE: ClassVar[str] = "response"
    req_id: int = fld(min=0, max=U63)
    ok: bool = True
    error: str = fld(max_len=512, default="")
    payload: bytes = fld(max_len=MAX_BLOB, default=b"")


# ---- roles: executors, rosters, challenges, verdicts --------------------------------------------


@message
@dataclass(frozen=True)
class ExecutorAttestation:
    """Signed by the executor itself: what it claims to be and which miner it works for."""

    TYPE: ClassVar[str] = "executor-attestation"
    miner_id: str = fld(max_len=64)
    engine: str = fld(max_len=16)  # "gpu" or "cpu"
    gpu_model: str = fld(max_len=128)
    memory_bytes: int = fld(min=0, max=2**50)
    gpu_uuid: str = fld(max_len=128)
    pci_bus_id: str = fld(max_len=64)
    host_fingerprint: str = fld(max_len=128)
    expires_ms: int = fld(min=0, max=U63)


@message
@dataclass(frozen=True)
class Roster:
    """Gossiped by a miner: the signed attestations of the executors it serves."""

    TYPE: ClassVar[str] = "roster"
    version: int = fld(min=0, max=U63)
    entries: list[bytes] = fld(max_len=C.MAX_ROSTER_ENTRIES)  # encoded ExecutorAttestation envelopes


@message
@dataclass(frozen=True)
class Register:
    """A remote executor asks its miner to serve it; ``attestation`` is its signed envelope."""

    TYPE: ClassVar[str] = "register"
    attestation: bytes = fld(max_len=8192)


@message
@dataclass(frozen=True)
class Heartbeat:
    TYPE: ClassVar[str] = "heartbeat"
    busy: bool = False


@message
@dataclass(frozen=True)
class Deregister:
    TYPE: ClassVar[str] = "deregister"
    reason: str = fld(max_len=256)


@message
@dataclass(frozen=True)
class Challenge:
    """Signed by the validator; addressed to one executor (by its peer id)."""

    TYPE: ClassVar[str] = "challenge"
    challenge_id: bytes = fld(length=C.CHALLENGE_ID_BYTES)
    executor_id: str = fld(max_len=64)
    seed: bytes = fld(length=32)
    n: int = fld(min=64, max=16384)
    steps: int = fld(min=1, max=2**31)
    b_matrices: int = fld(min=1, max=64)
    samples: int = fld(min=1, max=4096)
    commit_deadline_ms: int = fld(min=0, max=U63)  # validator wall clock
    openings_timeout_ms: int = fld(min=1, max=3_600_000)  # counted from the reveal
    sample_commit: bytes = fld(length=32)
    round: int = fld(min=0, max=U63, default=0)  # the schedule's round; 0 outside rounds


@message
@dataclass(frozen=True)
class Commitment:
    """Signed by the executor: the trace root and final digest for one challenge."""

    TYPE: ClassVar[str] = "commitment"
    challenge_id: bytes = fld(length=C.CHALLENGE_ID_BYTES)
    challenge_hash: bytes = fld(length=32)  # sha256 of the challenge envelope: binds the answer
    root: bytes = fld(length=32)
    d_final: bytes = fld(length=32)
    prove_ms: int = fld(min=0, max=U63)  # the executor's own figure, informational only


@message
@dataclass(frozen=True)
class Busy:
    """Signed by an executor that is already running a challenge; never scored against it."""

    TYPE: ClassVar[str] = "busy"
    challenge_id: bytes = fld(length=C.CHALLENGE_ID_BYTES)
    challenge_hash: bytes = fld(length=32)
    # The signed challenge it is running: proof that it is really busy, and with what. One
    # addressed to a different executor id is proof that two identities share one engine.
    busy_with: bytes = fld(max_len=8192)


@message
@dataclass(frozen=True)
class Reveal:
    TYPE: ClassVar[str] = "reveal"
    challenge_id: bytes = fld(length=C.CHALLENGE_ID_BYTES)
    secret: bytes = fld(length=32)


@message
@dataclass(frozen=True)
class Openings:
    """Signed by the executor; ``blob`` is the openings in node.pow's documented layout."""

    TYPE: ClassVar[str] = "openings"
    challenge_id: bytes = fld(length=C.CHALLENGE_ID_BYTES)
    blob: bytes = fld(max_len=MAX_BLOB)


@message
@dataclass(frozen=True)
class Verdict:
    """Gossiped by a validator after checking a challenge."""

    TYPE: ClassVar[str] = "verdict"
    challenge_id: bytes = fld(length=C.CHALLENGE_ID_BYTES)
    executor_id: str = fld(max_len=64)
    miner_id: str = fld(max_len=64)
    passed: bool = fld()  # no default (fld marks it a field for mypy, whose dataclass plugin knows only field())
    reasons: list[str] = fld(max_len=32)
    n: int = fld(min=0, max=16384)
    steps: int = fld(min=0, max=2**31)
    commit_us: int = fld(min=0, max=U63)
    openings_us: int = fld(min=0, max=U63)
    verify_us: int = fld(min=0, max=U63)
    expected_us: int = fld(min=0, max=U63)  # 0: no profile for this model
    score_ppm: int = fld(min=0, max=1_000_000)
    round: int = fld(min=0, max=U63, default=0)
    evidence: bytes = fld(max_len=MAX_BLOB, default=b"")  # for a false answer: the signed openings


@message
@dataclass(frozen=True)
class ProofRequest:
    """Ask a validator for what it verified (challenge, commitment, reveal, openings) to audit it."""

    TYPE: ClassVar[str] = "proof-request"
    challenge_id: bytes = fld(length=C.CHALLENGE_ID_BYTES)


@message
@dataclass(frozen=True)
class ProofBundle:
    TYPE: ClassVar[str] = "proof-bundle"
    challenge: bytes = fld(max_len=8192)  # the signed challenge envelope
    commitment: bytes = fld(max_len=8192)  # the signed commitment envelope
    reveal: bytes = fld(length=32)
    openings: bytes = fld(max_len=MAX_BLOB)  # the signed openings envelope


# ---- the validator set and the round beacon -----------------------------------------------------


@message
@dataclass(frozen=True)
class ValidatorSet:
    """Signed by the admitting authority: the validators allowed to challenge. Newest version wins."""

    TYPE: ClassVar[str] = "validator-set"
    version: int = fld(min=0, max=U63)
    validators: list[str] = fld(max_len=1024)
    expires_ms: int = fld(min=0, max=U63)


@message
@dataclass(frozen=True)
class BeaconReveal:
    """Gossiped by a validator at the start of a round: its secret for this round (committed one
    round earlier) and the commitment to its secret for the next round."""

    TYPE: ClassVar[str] = "beacon-reveal"
    round: int = fld(min=0, max=U63)
    secret: bytes = fld(max_len=32)  # empty when the validator has no commitment on record (just joined)
    next_commit: bytes = fld(length=32)
