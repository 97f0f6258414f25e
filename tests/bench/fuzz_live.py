"""Fuzz every entry point of live gpow nodes over real websockets.

    python tests/bench/fuzz_live.py [--inputs 100000] [--workers 6] [--seed 1] [--json FILE]

Starts a validator and a miner (one CPU executor) as real ``python -m node run`` processes that
challenge each other as usual, then throws inputs at both of them over websockets:

- before the handshake (a fresh connection each): random bytes, text frames, mutated and truncated
  Hellos, Hellos with a wrong-typed field, stale or future timestamps, another network, a sender
  id that does not match the signing key, a signature by the wrong key, deep nesting, huge
  declared lengths, frames over the handshake limit;
- after the handshake (on authenticated raw links, a fresh identity per link since the node
  closes links that send garbage): every link frame type and every role message (challenges,
  reveals, registrations, pings, proof requests, rosters, verdicts, beacon reveals, validator
  sets ...) inside requests and gossip RPCs, valid, mutated (bit flips, truncation, splices),
  with a wrong type in one field (at frame, envelope and message level, re-signed so the schema
  check and not the signature refuses it), forged (stale, wrong key, mismatched id, other
  version, unknown type), replayed, deeply nested, with huge declared lengths, and oversized.

Meanwhile the honest pair must keep being served: the validator keeps challenging the miner's
executor (request/response both ways) and gossiping verdicts and rosters. Recorded: inputs by
kind, both nodes' RSS over the run, their error counters by type (host and gossip stats from
status.json), and every ERROR/Traceback line in their logs. Exit status 1 when a node died, an
honest verdict failed or stopped coming, memory grew past the bound, or a node logged an error.

``run_inprocess`` is the same fuzz against in-process nodes; tests/reliability/test_fuzz_live.py
runs a smaller version of it under pytest.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgpack  # noqa: E402
import trio  # noqa: E402
from trio_websocket import ConnectionClosed, HandshakeError, connect_websocket_url  # noqa: E402

from node.identity import Identity  # noqa: E402
from node.net.connection import open_raw_link  # noqa: E402
from node.net.errors import HandshakeRefused  # noqa: E402
from node.wire import constants as C  # noqa: E402
from node.wire.codec import pack_canonical  # noqa: E402
from node.wire.envelope import encode_envelope, signing_bytes  # noqa: E402
from node.wire.messages import (  # noqa: E402
    BeaconReveal,
    Busy,
    Challenge,
    Commitment,
    Deregister,
    ExecutorAttestation,
    Goodbye,
    GossipRPC,
    Heartbeat,
    Hello,
    HelloAuth,
    IHave,
    Openings,
    PeerExchange,
    PeerRecord,
    Ping,
    Pong,
    ProofBundle,
    ProofRequest,
    Prune,
    PublishedMessage,
    Register,
    Request,
    Response,
    Reveal,
    Roster,
    SubOpt,
    ValidatorSet,
    Verdict,
)

NETWORK = "gpow-fuzz"
MAX_FRAME = 1024 * 1024  # the targets' [net] max_frame_bytes: oversized inputs stay cheap to send
WS_MAX = MAX_FRAME + 64 * 1024  # what the host's websocket layer refuses outright (close 1009)

PROTOCOLS = [
    C.PROTO_CHALLENGE,
    C.PROTO_REVEAL,
    C.PROTO_OPENINGS,
    C.PROTO_REGISTER,
    C.PROTO_PING,
    C.PROTO_PROOF,
    C.PROTO_VALIDATOR_SET,
    "gpow/nope/1",
    "",
]
TOPICS = [
    C.TOPIC_ROSTER,
    C.TOPIC_CHALLENGE,
    C.TOPIC_REVEAL,
    C.TOPIC_VERDICT,
    C.TOPIC_PEERS,
    C.TOPIC_BEACON,
    C.TOPIC_VALIDATOR_SET,
    "gpow/nope/1",
    "",
]
LINK_TYPE_NAMES = ["goodbye", "ping", "pong", "peer-exchange", "gossip", "request", "response"]

# Post-handshake input kinds and their weights; pre-handshake inputs are drawn with PRE_FRACTION.
POST_KINDS = {
    "random-bytes": 8,
    "text-frame": 1,
    "valid": 14,
    "mutated-frame": 12,
    "mutated-inner": 14,
    "wrong-type-frame": 6,
    "wrong-type-envelope": 6,
    "wrong-type-body": 10,
    "forged": 12,
    "replay": 5,
    "deep-nesting": 4,
    "huge-length": 4,
    "oversized": 0.3,
    "ws-oversized": 0.05,
    "unsealed": 0.5,
}
PRE_KINDS = {
    "random-bytes": 3,
    "text-frame": 1,
    "hello-valid-then-quit": 1,
    "hello-mutated": 4,
    "hello-truncated": 2,
    "hello-wrong-type": 4,
    "hello-forged": 4,
    "auth-first": 1,
    "goodbye": 1,
    "deep-nesting": 1,
    "huge-length": 1,
    "oversized": 0.5,
}
PRE_FRACTION = 0.05


# ---- input generation (pure: bytes from a seeded RNG) -------------------------------------------


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _seal_map(signer: Identity, top: dict) -> bytes:
    """Sign an arbitrary envelope map (possibly breaking the schema) so the signature is valid
    whenever the fields could be checked at all: refusals then come from the schema, not the sig."""
    try:
        sig = signer.sign(signing_bytes(top["v"], top["type"], top["sender"], top["seq"], top["ts"], top["body"]))
    except Exception:
        sig = bytes(64)
    out = dict(top, sig=sig)
    try:
        return pack_canonical(out)
    except Exception:
        return msgpack.packb(dict(sorted(out.items())), use_bin_type=True)


def _other_type(rng: random.Random, v: Any) -> Any:
    """A value of a different type than ``v`` (what a sloppy or hostile encoder would put there)."""
    choices: list[Any] = [0, -1, 2**63, 2**64 - 1, "x", "", b"", b"\x00" * 33, True, None, [], [1, "a"], {"k": 1}, {}, 1.5]
    choices = [c for c in choices if type(c) is not type(v)]
    return rng.choice(choices)


def _paths(v: Any, prefix: tuple = (), depth: int = 0) -> list[tuple]:
    out = [prefix] if prefix else []
    if depth > 6:
        return out
    if isinstance(v, dict):
        for k in sorted(v):
            out.extend(_paths(v[k], prefix + (k,), depth + 1))
    elif isinstance(v, list):
        for i, x in enumerate(v[:3]):
            out.extend(_paths(x, prefix + (i,), depth + 1))
    return out


def _replace(v: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(v, dict):
        return {**v, head: _replace(v[head], rest, new)}
    out = list(v)
    out[head] = _replace(out[head], rest, new)
    return out


def _mutate_bytes(rng: random.Random, data: bytes, pool: list[bytes]) -> tuple[str, bytes]:
    b = bytearray(data)
    op = rng.choice(["flip", "flip", "byte", "truncate", "extend", "insert", "delete", "splice", "dup"])
    if not b:
        return "extend", rng.randbytes(rng.randrange(1, 64))
    if op == "flip":
        for _ in range(rng.choice([1, 1, 2, 8])):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif op == "byte":
        b[rng.randrange(len(b))] = rng.choice([0x00, 0xFF, 0xC1, 0xD9, 0xDB, 0xC6, 0xDD, 0xDF, 0x7F, 0x80, 0x90, 0xA0])
    elif op == "truncate":
        del b[rng.randrange(len(b)) :]
    elif op == "extend":
        b += rng.randbytes(rng.randrange(1, 64))
    elif op == "insert":
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.randbytes(rng.randrange(1, 16))
    elif op == "delete":
        i = rng.randrange(len(b))
        del b[i : i + rng.randrange(1, 16)]
    elif op == "splice" and pool:
        other = rng.choice(pool)
        i, j = rng.randrange(len(b)), rng.randrange(len(other) or 1)
        b = b[:i] + bytearray(other[j:])
    else:
        i = rng.randrange(len(b))
        b[i:i] = b[i : i + rng.randrange(1, 32)]
    return op, bytes(b)


def _deep(rng: random.Random) -> bytes:
    depth = rng.choice([13, 14, 20, 100, 1000, 5000, 100_000])
    kind = rng.random()
    if kind < 0.4:
        return b"\x91" * depth + b"\xc0"
    if kind < 0.7:  # deep inside a well-formed frame
        inner = b"\x81\xa1a" * depth + b"\xc0"
        return b"\x82\xa1b" + inner + b"\xa1t\xa4ping"
    return b"\x91" * depth  # and never closed


def _huge_length(rng: random.Random) -> bytes:
    head = rng.choice([b"\xdb", b"\xc6", b"\xdd", b"\xdf"])  # str32, bin32, array32, map32
    n = rng.choice([2**32 - 1, 2**31, MAX_FRAME * 4, 65537])
    tail = rng.randbytes(rng.randrange(0, 32))
    if rng.random() < 0.5:
        return head + n.to_bytes(4, "big") + tail
    # a request frame whose payload claims to be huge
    return b"\x82\xa1b\x83\xa7payload" + b"\xc6" + n.to_bytes(4, "big") + tail


@dataclass
class Templates:
    """Valid role messages signed by one link identity, and the route each naturally takes."""

    me: Identity
    target: str
    executors: list[str]
    rng: random.Random
    now_ms: Callable[[], int]

    def body(self) -> tuple[Any, str, str]:
        """(message, request protocol, gossip topic)."""
        r, now = self.rng, self.now_ms()
        cid, ex = r.randbytes(16), r.choice(self.executors or [self.target])
        att = self.attestation(r.choice([self.target, self.me.peer_id, Identity.from_seed(r.randbytes(32)).peer_id]))
        msgs: list[tuple[Any, str, str]] = [
            (
                Challenge(
                    challenge_id=cid,
                    executor_id=ex,
                    seed=r.randbytes(32),
                    n=r.choice([64, 128, 16384]),
                    steps=r.choice([1, 8, 2**31]),
                    b_matrices=r.choice([1, 4, 64]),
                    samples=r.choice([1, 8, 4096]),
                    commit_deadline_ms=now + r.choice([-1000, 2000, 10**9]),
                    openings_timeout_ms=5000,
                    sample_commit=r.randbytes(32),
                ),
                C.PROTO_CHALLENGE,
                C.TOPIC_CHALLENGE,
            ),
            (Reveal(challenge_id=cid, secret=r.randbytes(32)), C.PROTO_REVEAL, C.TOPIC_REVEAL),
            (Register(attestation=att), C.PROTO_REGISTER, C.TOPIC_ROSTER),
            (Heartbeat(busy=r.random() < 0.5), C.PROTO_REGISTER, C.TOPIC_PEERS),
            (Deregister(reason="fuzz"), C.PROTO_REGISTER, C.TOPIC_PEERS),
            (Ping(nonce=r.randrange(2**62), executor_id=r.choice(["", ex])), C.PROTO_PING, C.TOPIC_PEERS),
            (ProofRequest(challenge_id=cid), C.PROTO_PROOF, C.TOPIC_VERDICT),
            (Roster(version=r.randrange(10), entries=[att]), C.PROTO_REGISTER, C.TOPIC_ROSTER),
            (
                Verdict(
                    challenge_id=cid,
                    executor_id=ex,
                    miner_id=self.target,
                    passed=r.random() < 0.5,
                    reasons=["passed"],
                    n=64,
                    steps=8,
                    commit_us=1,
                    openings_us=1,
                    verify_us=1,
                    expected_us=0,
                    score_ppm=5,
                    evidence=r.choice([b"", r.randbytes(100)]),
                ),
                C.PROTO_PROOF,
                C.TOPIC_VERDICT,
            ),
            (
                BeaconReveal(round=r.randrange(100), secret=r.randbytes(32), next_commit=r.randbytes(32)),
                C.PROTO_PROOF,
                C.TOPIC_BEACON,
            ),
            (
                ValidatorSet(version=r.randrange(10), validators=[self.me.peer_id], expires_ms=now + 60_000),
                C.PROTO_VALIDATOR_SET,
                C.TOPIC_VALIDATOR_SET,
            ),
            (
                Commitment(
                    challenge_id=cid, challenge_hash=r.randbytes(32), root=r.randbytes(32), d_final=r.randbytes(32), prove_ms=1
                ),
                C.PROTO_CHALLENGE,
                C.TOPIC_CHALLENGE,
            ),
            (
                Busy(challenge_id=cid, challenge_hash=r.randbytes(32), busy_with=r.randbytes(40)),
                C.PROTO_CHALLENGE,
                C.TOPIC_CHALLENGE,
            ),
            (Openings(challenge_id=cid, blob=r.randbytes(r.choice([0, 64, 4096]))), C.PROTO_OPENINGS, C.TOPIC_REVEAL),
            (
                ProofBundle(challenge=r.randbytes(50), commitment=r.randbytes(50), reveal=r.randbytes(32), openings=b""),
                C.PROTO_PROOF,
                C.TOPIC_VERDICT,
            ),
            (PeerRecord(addrs=["ws://127.0.0.1:9"], role="miner", expires_ms=now + 60_000), C.PROTO_PING, C.TOPIC_PEERS),
            (
                ExecutorAttestation(
                    miner_id=self.target,
                    engine="cpu",
                    gpu_model="cpu-reference",
                    memory_bytes=1 << 20,
                    gpu_uuid="CPU-x",
                    pci_bus_id="",
                    host_fingerprint="h",
                    expires_ms=now + 60_000,
                ),
                C.PROTO_REGISTER,
                C.TOPIC_ROSTER,
            ),
        ]
        return r.choice(msgs)

    def attestation(self, miner_id: str) -> bytes:
        """An attestation the link identity signs (naming the target, itself or a stranger as miner)."""
        return encode_envelope(
            ExecutorAttestation(
                miner_id=miner_id,
                engine="cpu",
                gpu_model="cpu-reference",
                memory_bytes=1 << 20,
                gpu_uuid="CPU-fuzz",
                pci_bus_id="",
                host_fingerprint="fuzz",
                expires_ms=self.now_ms() + 60_000,
            ),
            self.me,
            seq=self.rng.randrange(1, 2**62),
            now_ms=self.now_ms(),
        )

    def seal(self, body: Any) -> bytes:
        return encode_envelope(body, self.me, seq=self.rng.randrange(1, 2**62), now_ms=self.now_ms())

    def envelope_map(self, body: Any) -> dict:
        env = self.seal(body)
        return msgpack.unpackb(env, raw=False)


class InputMaker:
    """Makes one input at a time for a link or a fresh connection; counts them by kind."""

    def __init__(self, rng: random.Random, now_ms: Callable[[], int] | None = None) -> None:
        self.rng = rng
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.kinds: Counter[str] = Counter()
        self.fields: set[str] = set()  # (message, field path) pairs given a wrong type
        self._sent: list[bytes] = []  # earlier valid envelopes and frames, for replays and splices

    # -- post-handshake --

    def _wrap(self, t: Templates, env: bytes, proto: str, topic: str) -> bytes:
        r = self.rng
        choice = r.random()
        if choice < 0.45:
            return pack_canonical(
                {
                    "b": Request(
                        req_id=r.randrange(2**40), protocol=proto if r.random() < 0.8 else r.choice(PROTOCOLS), payload=env
                    ),
                    "t": "request",
                }
            )
        if choice < 0.9:
            return pack_canonical(
                {
                    "b": GossipRPC(publish=[PublishedMessage(topic=topic if r.random() < 0.8 else r.choice(TOPICS), data=env)]),
                    "t": "gossip",
                }
            )
        if choice < 0.95:
            return pack_canonical({"b": PeerExchange(records=[env]), "t": "peer-exchange"})
        return pack_canonical({"b": GossipRPC(prune=[Prune(topic=topic, backoff_s=1, peers=[env])]), "t": "gossip"})

    def _link_frame(self, t: Templates) -> bytes:
        """A valid link frame that is not a role message."""
        r = self.rng
        k = r.random()
        if k < 0.2:
            msg: Any = Ping(nonce=r.randrange(2**62))
        elif k < 0.3:
            msg = Pong(nonce=r.randrange(2**62))
        elif k < 0.4:
            msg = Response(req_id=r.randrange(2**40), ok=r.random() < 0.5, error="x", payload=r.randbytes(8))
        elif k < 0.8:
            topics = [r.choice(TOPICS) for _ in range(r.randrange(1, 4))]
            msg = GossipRPC(
                subscriptions=[SubOpt(topic=tp, subscribe=r.random() < 0.7) for tp in topics],
                ihave=[IHave(topic=r.choice(TOPICS), ids=[r.randbytes(32) for _ in range(r.randrange(4))])]
                if r.random() < 0.5
                else [],
                iwant=[r.randbytes(32) for _ in range(r.randrange(3))],
                graft=[r.choice(TOPICS)] if r.random() < 0.4 else [],
                prune=[Prune(topic=r.choice(TOPICS), backoff_s=r.randrange(3600), peers=[])] if r.random() < 0.3 else [],
            )
        elif k < 0.97:
            msg = PeerExchange(
                records=[t.seal(PeerRecord(addrs=["ws://127.0.0.1:1"], role="miner", expires_ms=self.now_ms() + 60_000))]
            )
        else:
            msg = Goodbye(reason="fuzz")  # closes the link: rare
        return pack_canonical({"b": msg, "t": type(msg).TYPE})

    def _valid_envelope(self, t: Templates) -> tuple[bytes, str, str]:
        body, proto, topic = t.body()
        return t.seal(body), proto, topic

    def post(self, t: Templates) -> tuple[str, bytes | str]:
        r = self.rng
        kind = _pick(r, POST_KINDS)
        self.kinds[kind] += 1
        if kind == "random-bytes":
            return kind, r.randbytes(r.choice([0, 1, 2, 8, 64, 512, 4096]))
        if kind == "text-frame":
            return kind, r.choice(["hello", "{}", "\x00" * 10, "é" * 100])
        if kind == "unsealed":  # a valid frame sent around the link's encryption, as an injector on the path would
            return kind, self._link_frame(t)
        if kind == "valid":
            if r.random() < 0.5:
                data = self._link_frame(t)
            else:
                env, proto, topic = self._valid_envelope(t)
                data = self._wrap(t, env, proto, topic)
                self._remember(env)
            self._remember(data)
            return kind, data
        if kind == "mutated-frame":
            base = self._link_frame(t) if r.random() < 0.4 else self._wrap(t, *self._valid_envelope(t))
            return kind, _mutate_bytes(r, base, self._sent)[1]
        if kind == "mutated-inner":
            env, proto, topic = self._valid_envelope(t)
            return kind, self._wrap(t, _mutate_bytes(r, env, self._sent)[1], proto, topic)
        if kind == "wrong-type-frame":
            base = self._link_frame(t) if r.random() < 0.5 else self._wrap(t, *self._valid_envelope(t))
            tree = msgpack.unpackb(base, raw=False)
            path = r.choice(_paths(tree))
            self.fields.add(f"frame:{tree.get('t')}:{'.'.join(map(str, path))}")
            return kind, self._pack_any(_replace(tree, path, _other_type(r, _get(tree, path))))
        if kind in ("wrong-type-envelope", "wrong-type-body"):
            body, proto, topic = t.body()
            top = t.envelope_map(body)
            if kind == "wrong-type-envelope":
                key = r.choice(["v", "type", "sender", "seq", "ts", "sig", "body"])
                path: tuple = (key,)
            else:
                paths = _paths(top["body"]) or [()]
                path = ("body",) + r.choice(paths)
            self.fields.add(f"{top['type']}:{'.'.join(map(str, path))}")
            top = _replace(top, path, _other_type(r, _get(top, path)))
            top.pop("sig", None)
            return kind, self._wrap(t, _seal_map(t.me, top), proto, topic)
        if kind == "forged":
            return kind, self._wrap(t, *self._forged(t))
        if kind == "replay":
            if not self._sent:
                return kind, self._link_frame(t)
            old = r.choice(self._sent)
            return kind, old if old[:1] in (b"\x82",) and r.random() < 0.5 else self._wrap(
                t, old, r.choice(PROTOCOLS), r.choice(TOPICS)
            )
        if kind == "deep-nesting":
            return kind, _deep(r)
        if kind == "huge-length":
            return kind, _huge_length(r)
        if kind == "oversized":
            return kind, b"\x82\xa1b" + r.randbytes(16) * ((MAX_FRAME + 64) // 16)
        return kind, b"\x00" * (WS_MAX + 1024)  # ws-oversized

    def _forged(self, t: Templates) -> tuple[bytes, str, str]:
        r = self.rng
        body, proto, topic = t.body()
        top = t.envelope_map(body)
        top.pop("sig")
        how = r.choice(["stale", "future", "wrong-key", "id-mismatch", "version", "unknown-type", "unsigned", "seq-range"])
        self.kinds[f"forged:{how}"] += 1
        signer = t.me
        if how == "stale":
            top["ts"] = self.now_ms() - r.choice([130_000, 3_600_000, 10**12])
        elif how == "future":
            top["ts"] = self.now_ms() + r.choice([130_000, 3_600_000])
        elif how == "wrong-key":
            signer = Identity.from_seed(r.randbytes(32))  # sender stays ours: the signature does not verify
        elif how == "id-mismatch":
            top["sender"] = r.choice([t.target, Identity.from_seed(r.randbytes(32)).peer_id])  # signed by us
        elif how == "version":
            top["v"] = r.choice([0, 2, 255])
        elif how == "unknown-type":
            top["type"] = r.choice(["zzz", "hello-auth", "x" * 49])
        elif how == "unsigned":
            return pack_canonical(dict(top, sig=bytes(64))), proto, topic
        else:
            top["seq"] = r.choice([-1, 2**63])
        return _seal_map(signer, top), proto, topic

    def _pack_any(self, tree: Any) -> bytes:
        try:
            return pack_canonical(tree)
        except Exception:
            return msgpack.packb(tree, use_bin_type=True)

    def _remember(self, data: bytes) -> None:
        if len(self._sent) < 256:
            self._sent.append(data)
        else:
            self._sent[self.rng.randrange(256)] = data

    # -- pre-handshake (the first frame of a fresh connection) --

    def pre(self, me: Identity, target: str) -> tuple[str, bytes | str]:
        r = self.rng
        kind = _pick(r, PRE_KINDS)
        self.kinds[f"pre:{kind}"] += 1
        now = self.now_ms()
        hello = Hello(network=NETWORK, role="miner", listen_addrs=[], nonce=r.randbytes(32), kx=r.randbytes(32))
        valid = encode_envelope(hello, me, seq=r.randrange(1, 2**62), now_ms=now)
        if kind == "random-bytes":
            return kind, r.randbytes(r.choice([0, 1, 16, 300, 4096]))
        if kind == "text-frame":
            return kind, "GET / HTTP/1.1"
        if kind == "hello-valid-then-quit":
            return kind, valid
        if kind == "hello-mutated":
            return kind, _mutate_bytes(r, valid, self._sent)[1]
        if kind == "hello-truncated":
            return kind, valid[: r.randrange(len(valid))]
        top = msgpack.unpackb(valid, raw=False)
        top.pop("sig")
        if kind == "hello-wrong-type":
            path = r.choice(_paths(top))
            self.fields.add(f"hello:{'.'.join(map(str, path))}")
            return kind, _seal_map(me, _replace(top, path, _other_type(r, _get(top, path))))
        if kind == "hello-forged":
            how = r.choice(["stale", "network", "id-mismatch", "wrong-key", "version", "self"])
            self.kinds[f"pre:hello-forged:{how}"] += 1
            signer = me
            if how == "stale":
                top["ts"] = now - 3_600_000
            elif how == "network":
                top["body"] = dict(top["body"], network="other-net")
            elif how == "id-mismatch":
                top["sender"] = target  # claims to be the node itself / someone else, signed by us
            elif how == "wrong-key":
                signer = Identity.from_seed(r.randbytes(32))
            elif how == "version":
                top["v"] = 2
            else:
                top["sender"] = target
                signer = Identity.from_seed(r.randbytes(32))
            return kind, _seal_map(signer, top)
        if kind == "auth-first":
            return kind, encode_envelope(
                HelloAuth(my_nonce=r.randbytes(32), your_nonce=r.randbytes(32), your_peer_id=target), me, seq=1, now_ms=now
            )
        if kind == "goodbye":
            return kind, pack_canonical({"b": Goodbye(reason="no"), "t": "goodbye"})
        if kind == "deep-nesting":
            return kind, _deep(r)
        if kind == "huge-length":
            return kind, _huge_length(r)
        return kind, r.randbytes(20_000)  # over the 16 KiB handshake frame limit


def _get(v: Any, path: tuple) -> Any:
    for p in path:
        v = v[p]
    return v


# ---- the fuzz client ------------------------------------------------------------------------------


@dataclass
class Target:
    addr: str
    peer_id: str
    executors: list[str] = field(default_factory=list)


@dataclass
class FuzzResult:
    inputs: int = 0
    links: int = 0
    links_refused: int = 0
    connections_pre: int = 0
    frames_received: int = 0
    send_failures: int = 0
    kinds: Counter = field(default_factory=Counter)
    fields: set = field(default_factory=set)


class Fuzzer:
    def __init__(self, targets: list[Target], *, inputs: int, seed: int, workers: int = 4) -> None:
        self.targets = targets
        self.budget = inputs
        self.seed = seed
        self.workers = workers
        self.result = FuzzResult()
        self.makers: list[InputMaker] = []
        self.progress: Callable[[int], None] | None = None

    def _take(self) -> bool:
        if self.result.inputs >= self.budget:
            return False
        self.result.inputs += 1
        if self.progress is not None and self.result.inputs % 5000 == 0:
            self.progress(self.result.inputs)
        return True

    async def run(self) -> FuzzResult:
        async with trio.open_nursery() as n:
            for w in range(self.workers):
                n.start_soon(self._worker, w)
        for m in self.makers:
            self.result.kinds.update(m.kinds)
            self.result.fields |= m.fields
        return self.result

    async def _worker(self, w: int) -> None:
        rng = random.Random(self.seed * 1000 + w)
        maker = InputMaker(rng)
        self.makers.append(maker)
        while self.result.inputs < self.budget:
            target = self.targets[rng.randrange(len(self.targets))]
            if rng.random() < PRE_FRACTION * 10:  # a burst of fresh connections, each one pre-handshake input
                for _ in range(rng.randrange(1, 20)):
                    if not self._take():
                        return
                    await self._pre_one(rng, maker, target)
            else:
                await self._link(rng, maker, target)

    async def _pre_one(self, rng: random.Random, maker: InputMaker, target: Target) -> None:
        me = Identity.from_seed(rng.randbytes(32))
        _, data = maker.pre(me, target.peer_id)
        self.result.connections_pre += 1
        try:
            async with trio.open_nursery() as n:
                with trio.move_on_after(3):
                    ws = await connect_websocket_url(n, target.addr, message_queue_size=4, max_message_size=WS_MAX)
                    try:
                        await ws.send_message(data)
                        with trio.move_on_after(0.5):  # the node's Hello, then its refusal
                            while True:
                                await ws.get_message()
                                self.result.frames_received += 1
                    except ConnectionClosed:
                        pass
                    await ws.aclose()
                n.cancel_scope.cancel()
        except (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError):
            self.result.send_failures += 1

    async def _link(self, rng: random.Random, maker: InputMaker, target: Target) -> None:
        me = Identity.from_seed(rng.randbytes(32))
        try:
            async with trio.open_nursery() as n:
                try:
                    ws, _ = await open_raw_link(n, target.addr, me, network=NETWORK, role="miner", max_message_size=WS_MAX)
                except (HandshakeRefused, OSError, HandshakeError):
                    self.result.links_refused += 1
                    await trio.sleep(0.01)
                    return
                self.result.links += 1
                t = Templates(me, target.peer_id, target.executors, rng, maker.now_ms)
                n.start_soon(self._drain, ws)
                length = rng.choice([5, 20, 100, 1000])
                for _ in range(length):
                    if ws.closed is not None or not self._take():
                        break
                    kind, data = maker.post(t)
                    try:
                        await (ws.raw if kind == "unsealed" else ws).send_message(data)
                    except ConnectionClosed:
                        break
                with trio.move_on_after(0.2):
                    await ws.aclose()
                n.cancel_scope.cancel()
        except (OSError, ConnectionClosed, trio.BrokenResourceError, HandshakeError):
            self.result.send_failures += 1

    async def _drain(self, ws) -> None:
        """Read everything the node sends (a fuzzer that never read would be a slow-reader test)."""
        try:
            while True:
                await ws.get_message()
                self.result.frames_received += 1
        except ConnectionClosed:
            pass


# ---- node counters --------------------------------------------------------------------------------


def error_counters(net: dict) -> dict[str, Any]:
    """The error counters of one node's status (host.stats_dict()), grouped by type."""
    host = {
        k: v
        for k, v in net.items()
        if isinstance(v, int)
        and any(
            k.startswith(p)
            for p in (
                "bad_frames",
                "handshake_refused",
                "links_closed",
                "links_refused",
                "inbound_rejected",
                "requests_handler_error",
                "requests_refused",
                "ws_internal_errors",
                "requests_unknown_protocol",
                "peer_records_bad",
                "pex_ignored",
                "gossip_dropped",
                "responses_unsolicited",
                "handshakes_ok",
                "links_opened",
            )
        )
    }
    g = net.get("gossip", {})
    return {
        "host": dict(sorted(host.items())),
        "gossip_invalid": g.get("invalid", {}),
        "gossip_ignored": g.get("ignored", {}),
        "gossip_penalties": g.get("penalties", {}),
        "graylisted": g.get("graylisted", 0),
        "gossip_internal_errors": g.get("invalid", {}).get("internal-error", 0),
    }


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# ---- node configs ---------------------------------------------------------------------------------


SMALL_CPU_MEMORY = 64 * 64 * 40  # n = 64: about 35 states


def sections(role: str, data_dir: Path, profiles: Path, admitted: list[str], bootstrap: list[str]) -> dict[str, dict]:
    """The [tables] of one fuzz target's config: defaults, except loopback, fast test timings and a
    1 MiB frame limit (so oversized inputs are cheap to send)."""
    return {
        "node": {"role": role, "data_dir": str(data_dir), "status_interval_s": 0.5},
        "net": {
            "listen_host": "127.0.0.1",
            "listen_port": 0,
            "network": NETWORK,
            "bootstrap": bootstrap,
            "max_frame_bytes": MAX_FRAME,
        },
        "gossip": {"heartbeat_s": 0.2},
        "admission": {"validators": admitted},
        "validator": {
            "challenge_interval_s": 1.0,
            "n_cpu": 64,
            "samples": 8,
            "probation_challenges": 0,
            "commit_slack_s": 5.0,
            "openings_timeout_s": 5.0,
            "profiles_file": str(profiles),
        },
        "miner": {
            "engine": "cpu",
            "cpu_memory_bytes": SMALL_CPU_MEMORY,
            "roster_interval_s": 0.5,
            "host_fingerprint": f"host-{role}",
        },
    }


def write_profiles(path: Path) -> None:
    path.write_text(
        '[[profile]]\nmodel = "cpu-reference"\nmemory_bytes = 0\nn = 64\nstep_seconds = 0.01\n'
        'measured = false\nsource = "fuzz: generous, the fuzzer shares the machine"\n'
    )


# ---- in-process run (pytest) -----------------------------------------------------------------------


async def run_inprocess(tmp: Path, *, inputs: int, seed: int, workers: int = 4) -> dict:
    """Fuzz an in-process validator and miner; return the report (see ``main`` for the checks)."""
    import dataclasses

    from node.app.config import NodeConfig, build_section
    from node.app.node import Node

    write_profiles(tmp / "profiles.toml")
    vid = Identity.from_seed(random.Random(seed).randbytes(32))

    def cfg(role: str, bootstrap: list[str]) -> NodeConfig:
        s = sections(role, tmp / role, tmp / "profiles.toml", [vid.peer_id], bootstrap)
        c = NodeConfig()
        for name, table in s.items():
            setattr(c, name, build_section(type(getattr(c, name)), {**dataclasses.asdict(getattr(c, name)), **table}, name))
        return c

    report: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        v = Node(cfg("validator", []), vid)
        await nursery.start(v.run)
        m = Node(cfg("miner", [v.host.listen_addr]), Identity.from_seed(random.Random(seed + 1).randbytes(32)))
        await nursery.start(m.run)
        with trio.fail_after(20):
            while v.service.stats.passed < 1:
                await trio.sleep(0.05)
        before = (v.service.stats.verdicts, v.service.stats.passed)
        honest_ids = set(m.service.local)
        targets = [
            Target(v.host.listen_addr, v.identity.peer_id),
            Target(m.host.listen_addr, m.identity.peer_id, list(m.service.local)),
        ]
        t0 = time.monotonic()
        res = await Fuzzer(targets, inputs=inputs, seed=seed, workers=workers).run()
        elapsed = time.monotonic() - t0
        during = (v.service.stats.verdicts - before[0], v.service.stats.passed - before[1])
        # after the storm: the honest pair still works (one more passing verdict)
        with trio.fail_after(20):
            while v.service.stats.passed <= before[1] + during[1]:
                await trio.sleep(0.05)
        report = {
            "inputs": res.inputs,
            "seconds": round(elapsed, 2),
            "links": res.links,
            "links_refused": res.links_refused,
            "connections_pre": res.connections_pre,
            "frames_received": res.frames_received,
            "kinds": dict(res.kinds),
            "fields_wrong_typed": len(res.fields),
            "honest": {
                "verdicts_during": during[0],
                "passed_during": during[1],
                "failed": [r.reasons for r in v.ledger.verdicts() if not r.passed and r.executor_id in honest_ids],
            },
            # Rosters the fuzzer signed for itself are valid input: the validator learns those
            # executors, challenges them while their link is up, and fails them when it is not.
            "sybil_executors_challenged": len({r.executor_id for r in v.ledger.verdicts()} - honest_ids),
            "sybil_verdicts_failed": sum(1 for r in v.ledger.verdicts() if not r.passed and r.executor_id not in honest_ids),
            "executors_known_at_end": len(v.service.executors),
            "validator": error_counters(v.host.stats_dict()),
            "miner": error_counters(m.host.stats_dict()),
            "miner_refused": m.service.stats.get("refused", 0),
        }
        nursery.cancel_scope.cancel()
    return report


# ---- real processes (the full run) ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default="")
    ap.add_argument("--rss-bound-mib", type=float, default=64.0, help="max RSS growth after warm-up")
    ap.add_argument("--json", default="", help="write the report here")
    args = ap.parse_args(argv)

    import tempfile

    from node.harness.main import write_node_config
    from node.harness.processes import NodeProcess, stop_all
    from node.identity import load_or_create_key_file

    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpow-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    write_profiles(work / "profiles.toml")
    (work / "validator").mkdir(exist_ok=True)
    vid = load_or_create_key_file(work / "validator" / "node.key").peer_id
    nodes: list[NodeProcess] = []

    def start(role: str, bootstrap: list[str]) -> tuple[NodeProcess, dict]:
        d = work / role
        d.mkdir(exist_ok=True)
        write_node_config(d / "config.toml", sections(role, d, work / "profiles.toml", [vid], bootstrap))
        p = NodeProcess(
            role,
            role,
            d,
            d / "config.toml",
            ["--log-level", "warning", "run", "--config", str(d / "config.toml")],
            d / "node.log",
        )
        (d / "status.json").unlink(missing_ok=True)
        p.start()
        nodes.append(p)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = p.status()
            if st and st.get("listen"):
                return p, st
            time.sleep(0.1)
        raise RuntimeError(f"{role} did not start:\n{p.log_tail()}")

    def passed(p: NodeProcess) -> tuple[int, int, int]:
        s = ((p.status() or {}).get("validator") or {}).get("stats", {})
        return s.get("verdicts", 0), s.get("passed", 0), s.get("failed", 0)

    try:
        v, vst = start("validator", [])
        m, mst = start("miner", [vst["listen"]])
        deadline = time.monotonic() + 30
        while passed(v)[1] < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("no passing verdict before the fuzz")
            time.sleep(0.2)
        mst = m.status() or mst
        executors = list((mst.get("miner") or {}).get("local_executors", {}))
        targets = [Target(vst["listen"], vst["peer_id"]), Target(mst["listen"], mst["peer_id"], executors)]
        samples: list[dict] = []
        honest: list[tuple[float, int, int, int]] = []
        before = passed(v)
        t0 = time.monotonic()

        async def sampler() -> None:
            while True:
                samples.append(
                    {"t": round(time.monotonic() - t0, 1), "validator": rss_bytes(v.proc.pid), "miner": rss_bytes(m.proc.pid)}
                )
                honest.append((time.monotonic() - t0, *passed(v)))
                await trio.sleep(1.0)

        def progress(n: int) -> None:
            print(f"  {n} inputs, {time.monotonic() - t0:.0f} s, verdicts passed {passed(v)[1] - before[1]}", flush=True)

        async def fuzz() -> FuzzResult:
            async with trio.open_nursery() as n:
                n.start_soon(sampler)
                fz = Fuzzer(targets, inputs=args.inputs, seed=args.seed, workers=args.workers)
                fz.progress = progress
                res = await fz.run()
                n.cancel_scope.cancel()
            return res

        print(f"fuzzing validator {vst['peer_id'][-8:]} and miner {mst['peer_id'][-8:]} with {args.inputs} inputs", flush=True)
        res = trio.run(fuzz)
        elapsed = time.monotonic() - t0
        # after the storm: one more passing verdict within 30 s
        after_deadline, after_ok = time.monotonic() + 30, False
        while time.monotonic() < after_deadline:
            if passed(v)[1] > honest[-1][2]:
                after_ok = True
                break
            time.sleep(0.2)
        alive = {p.name: p.alive() for p in nodes}
        import sqlite3

        with sqlite3.connect(f"file:{work / 'validator' / 'ledger.sqlite3'}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT executor_id, passed, reasons FROM verdicts").fetchall()
        honest_failed = [json.loads(r[2]) for r in rows if r[0] in executors and not r[1]]
        sybil = {r[0] for r in rows if r[0] not in executors}
        vstat, mstat = v.status() or {}, m.status() or {}
        errors = {}
        for p in nodes:
            lines = p.log_path.read_text(errors="replace").splitlines()
            errors[p.name] = [ln[:300] for ln in lines if "Traceback" in ln or " ERROR " in ln or '"level": "ERROR"' in ln][:20]
        warm = [s for s in samples if s["t"] >= elapsed * 0.1] or samples
        growth = {k: (max(s[k] for s in warm) - warm[0][k]) / 2**20 for k in ("validator", "miner")}
        # honest gaps: longest stretch with no new passing verdict while fuzzing
        gaps, last_t, last_p = [], 0.0, before[1]
        for t, _, p_, _ in honest:
            if p_ > last_p:
                gaps.append(t - last_t)
                last_t, last_p = t, p_
        gaps.append(honest[-1][0] - last_t if honest else 0)
        report = {
            "command": "python tests/bench/fuzz_live.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "inputs": res.inputs,
            "seconds": round(elapsed, 1),
            "inputs_per_s": round(res.inputs / elapsed),
            "links": res.links,
            "links_refused": res.links_refused,
            "connections_pre": res.connections_pre,
            "frames_received": res.frames_received,
            "kinds": dict(sorted(res.kinds.items())),
            "fields_wrong_typed": len(res.fields),
            "alive": alive,
            "honest": {
                "verdicts_during": honest[-1][1] - before[0] if honest else 0,
                "passed_during": honest[-1][2] - before[1] if honest else 0,
                "failed": honest_failed,
                "longest_gap_s": round(max(gaps), 1),
                "verdict_after": after_ok,
                "all_reasons": ((vstat.get("validator") or {}).get("stats") or {}).get("reasons", {}),
            },
            "sybil_executors_challenged": len(sybil),
            "sybil_verdicts_failed": sum(1 for r in rows if r[0] not in executors and not r[1]),
            "executors_known_at_end": len((vstat.get("validator") or {}).get("executors") or {}),
            "rss_mib": {
                k: {
                    "start": round(samples[0][k] / 2**20, 1),
                    "max": round(max(s[k] for s in samples) / 2**20, 1),
                    "end": round(samples[-1][k] / 2**20, 1),
                    "growth_after_warmup": round(growth[k], 1),
                }
                for k in ("validator", "miner")
            },
            "validator": error_counters(vstat.get("net", {})),
            "miner": error_counters(mstat.get("net", {})),
            "miner_stats": (mstat.get("miner") or {}).get("stats", {}),
            "log_errors": errors,
        }
        ok = (
            all(alive.values())
            and not report["honest"]["failed"]
            and after_ok
            and report["honest"]["passed_during"] > 0
            and all(g <= args.rss_bound_mib for g in growth.values())
            and not any(errors.values())
        )
        report["ok"] = ok
        text = json.dumps(report, indent=1, default=str)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
        return 0 if ok else 1
    finally:
        stop_all(nodes)


if __name__ == "__main__":
    sys.exit(main())
