"""Forgeries and replays against live nodes on loopback: each is refused with its reason and costs
the peer that delivered it gossip score (visible in ``gossip.score`` and the penalty counters).

- at a miner: a replayed challenge, a replayed reveal, a challenge signed by the wrong key, one whose
  sender id is not the signing key, a stale one, one from a validator outside the admitted set;
- at the handshake: a Hello whose peer id does not match the key that signed it;
- at a validator: replayed, wrong-signer and badly signed commitments from a fake miner;
  replayed and stale verdicts, and verdicts from outside the admitted set;
- issue 13: a forged roster entry, an equivocating publisher (kept as evidence), and a fraudulent
  opening that ends in a verdict carrying evidence and a ban of executor and miner at another
  validator that re-checks it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import msgpack
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from node.gossip.driver import GossipDriver
from node.gossip.params import GossipParams
from node.harness.adversaries import node_parts
from node.identity import Identity
from node.net.connection import open_raw_link
from node.net.errors import RequestFailed
from node.net.framing import encode_frame
from node.net.host import Host
from node.net.params import NetParams
from node.pow.chain import sample_commit
from node.roles import verdicts as R
from node.roles.agreed import new_challenge_id
from node.roles.executor import challenge_hash
from node.wire import constants as C
from node.wire.envelope import decode_envelope, encode_envelope, signing_bytes
from node.wire.messages import (
    Challenge,
    Commitment,
    ExecutorAttestation,
    GossipRPC,
    Hello,
    PublishedMessage,
    Reveal,
    Roster,
    Verdict,
)
from tests.net.gossip_host import GossipHost

from .conftest import NETWORK, ErrorLog, make_cfg, start_node, wait_for

pytestmark = pytest.mark.slow


def now_ms() -> int:
    return int(time.time() * 1000)


_SEQ = [now_ms() * 1000]


def seal(body, ident: Identity, *, ts: int | None = None, seq: int | None = None) -> bytes:
    _SEQ[0] += 1
    return encode_envelope(body, ident, seq=_SEQ[0] if seq is None else seq, now_ms=now_ms() if ts is None else ts)


def forge(body, claimed: Identity | str, signer: Identity) -> bytes:
    """An envelope that names ``claimed`` as sender but is signed by ``signer``."""
    sender = claimed if isinstance(claimed, str) else claimed.peer_id
    top = msgpack.unpackb(seal(body, signer), raw=False)
    top["sender"] = sender
    top["sig"] = signer.sign(signing_bytes(top["v"], top["type"], sender, top["seq"], top["ts"], top["body"]))
    return msgpack.packb(dict(sorted(top.items())), use_bin_type=True)


def a_challenge(validator: Identity, executor_id: str, *, secret: bytes, ts: int | None = None) -> bytes:
    return seal(
        Challenge(
            challenge_id=new_challenge_id(validator.peer_id),
            executor_id=executor_id,
            seed=os.urandom(32),
            n=64,
            steps=4,
            b_matrices=4,
            samples=4,
            commit_deadline_ms=now_ms() + 10_000,
            openings_timeout_ms=5000,
            sample_commit=sample_commit(secret),
        ),
        validator,
        ts=ts,
    )


def attacker_host(role: str = "miner") -> GossipHost:
    return GossipHost(
        Identity.generate(),
        NetParams(listen_port=0, network=NETWORK, maintain_interval_s=0.2),
        role,
        GossipParams(heartbeat_s=0.2),
    )


async def refused(host: Host, peer: str, proto: str, payload: bytes) -> str:
    with pytest.raises(RequestFailed) as ei:
        await host.request(peer, proto, payload, timeout=5)
    return ei.value.remote_error or ""


async def test_replays_forgeries_and_stale_messages_at_a_miner(tmp_path: Path, error_log: ErrorLog):
    vid = Identity.generate()
    admitted = {"validators": [vid.peer_id]}
    async with trio.open_nursery() as nursery:
        m = await start_node(nursery, make_cfg(tmp_path, "m", "miner", [], admission=admitted))
        (ex,) = m.service.local
        a = attacker_host()
        await nursery.start(a.run)
        await a.dial(m.host.listen_addr)
        penalties = lambda: m.gossip.stats_dict()["penalties"]  # noqa: E731
        score = lambda: m.gossip.score(a.peer_id)  # noqa: E731

        # a challenge signed by the admitted validator (captured and delivered by someone else) is
        # answered once; the same bytes again are a replay
        secret = os.urandom(32)
        ch = a_challenge(vid, ex, secret=secret)
        cm = decode_envelope(await a.request(m.identity.peer_id, C.PROTO_CHALLENGE, ch, timeout=10), expect=Commitment)
        assert cm.sender == ex and cm.body.challenge_hash == challenge_hash(ch)
        assert score() >= 0
        assert (await refused(a, m.identity.peer_id, C.PROTO_CHALLENGE, ch)).startswith("ChallengeRefused: replay")
        assert penalties().get("challenge: replay") == 1 and score() < 0
        # the reveal opens it once; replayed, it is refused as a replay
        cid = decode_envelope(ch).body.challenge_id
        rv = seal(Reveal(challenge_id=cid, secret=secret), vid)
        await a.request(m.identity.peer_id, C.PROTO_REVEAL, rv, timeout=10)
        assert (await refused(a, m.identity.peer_id, C.PROTO_REVEAL, rv)).startswith("ChallengeRefused: replay")
        assert penalties().get("reveal: replay") == 1
        # a signature by the wrong key; a sender id that is not the signing key
        s0 = score()
        wrong_key = forge(decode_envelope(a_challenge(vid, ex, secret=secret)).body, vid, Identity.generate())
        assert "bad-signature" in await refused(a, m.identity.peer_id, C.PROTO_CHALLENGE, wrong_key)
        mismatch = forge(decode_envelope(a_challenge(vid, ex, secret=secret)).body, vid.peer_id, a.identity)
        assert "bad-signature" in await refused(a, m.identity.peer_id, C.PROTO_CHALLENGE, mismatch)
        assert penalties().get("challenge: bad-signature") == 2 and score() < s0
        # a stale timestamp (ten minutes old, validly signed)
        stale = a_challenge(vid, ex, secret=secret, ts=now_ms() - 600_000)
        assert (await refused(a, m.identity.peer_id, C.PROTO_CHALLENGE, stale)).startswith("ChallengeRefused: stale")
        assert penalties().get("challenge: stale") == 1
        # a challenge signed by a validator outside the admitted set
        s1 = score()
        own = a_challenge(a.identity, ex, secret=secret)
        assert "unadmitted-validator" in await refused(a, m.identity.peer_id, C.PROTO_CHALLENGE, own)
        assert penalties().get("challenge: unadmitted-validator") == 1 and score() < s1
        # the executor never proved any of the refused ones
        assert m.service.local[ex].stats["commitments"] == 1
        nursery.cancel_scope.cancel()
    assert error_log.texts() == []


async def test_hello_whose_peer_id_does_not_match_its_key_is_refused(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        m = await start_node(nursery, make_cfg(tmp_path, "m", "miner", []))
        me, victim = Identity.generate(), Identity.generate()
        hello = forge(
            Hello(network=NETWORK, role="validator", listen_addrs=[], nonce=os.urandom(32), kx=os.urandom(32)), victim, me
        )
        async with open_websocket_url(m.host.listen_addr) as ws:
            await ws.send_message(hello)
            with pytest.raises(ConnectionClosed):
                with trio.fail_after(5):
                    while True:
                        await ws.get_message()
        assert m.host.stats["handshake_refused.bad-signature"] == 1
        assert victim.peer_id not in m.host.connected_peers()
        nursery.cancel_scope.cancel()


class FakeMiner:
    """A miner host that lists one executor and answers challenges the way ``how`` says."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.host = attacker_host()
        self.executor = Identity.generate()
        self.first: bytes | None = None
        self.host.set_handler(C.PROTO_CHALLENGE, self._on_challenge)

    @property
    def gossip(self) -> GossipDriver:
        return self.host.gossip

    def attestation(self, miner_id: str | None = None) -> bytes:
        return seal(
            ExecutorAttestation(
                miner_id=miner_id or self.host.peer_id,
                engine="cpu",
                gpu_model="cpu-reference",
                memory_bytes=64 * 64 * 40,
                gpu_uuid="CPU-fake",
                pci_bus_id="",
                host_fingerprint="fake",
                expires_ms=now_ms() + 600_000,
            ),
            self.executor,
        )

    async def _on_challenge(self, peer: str, payload: bytes) -> bytes:
        ch = decode_envelope(payload, expect=Challenge)
        good = Commitment(
            challenge_id=ch.body.challenge_id,
            challenge_hash=challenge_hash(payload),
            root=os.urandom(32),
            d_final=os.urandom(32),
            prove_ms=1,
        )
        if self.how == "replay":  # the commitment made for the first challenge, every time after
            if self.first is None:
                self.first = seal(
                    Commitment(
                        challenge_id=os.urandom(16),
                        challenge_hash=os.urandom(32),
                        root=os.urandom(32),
                        d_final=os.urandom(32),
                        prove_ms=1,
                    ),
                    self.executor,
                )
            return self.first
        if self.how == "wrong-signer":
            return seal(good, Identity.generate())
        raw = bytearray(seal(good, self.executor))  # bad-signature: one bit of the signature flipped
        i = raw.find(b"\xc4\x40") + 2
        raw[i] ^= 1
        return bytes(raw)


async def publish_when_subscribed(gossip: GossipDriver, peer: str, topic: str, data: bytes) -> None:
    await wait_for(lambda: topic in getattr(gossip.router.peers.get(peer), "topics", ()), 10, f"{peer[-6:]} on {topic}")
    gossip.publish_raw(topic, data)


@pytest.mark.parametrize(
    "how,reason", [("replay", R.REPLAY), ("wrong-signer", R.WRONG_SIGNER), ("bad-signature", R.BAD_SIGNATURE)]
)
async def test_forged_commitments_fail_the_challenge_and_cost_the_miner_score(tmp_path: Path, how: str, reason: str):
    async with trio.open_nursery() as nursery:
        v = await start_node(nursery, make_cfg(tmp_path, "v", "validator", []))
        fm = FakeMiner(how)
        await nursery.start(fm.host.run)
        await fm.host.dial(v.host.listen_addr)
        await publish_when_subscribed(
            fm.gossip, v.identity.peer_id, C.TOPIC_ROSTER, seal(Roster(version=1, entries=[fm.attestation()]), fm.host.identity)
        )
        await wait_for(lambda: len(v.ledger.verdicts(fm.executor.peer_id)) >= 2, 20, "two verdicts on the fake executor")
        for rec in v.ledger.verdicts(fm.executor.peer_id):
            assert not rec.passed and R.reason_kind(rec.reasons[0]) == reason, rec.reasons
        assert v.gossip.stats_dict()["penalties"].get(f"answer: {reason}", 0) >= 2
        assert v.gossip.score(fm.host.peer_id) < 0
        nursery.cancel_scope.cancel()


async def test_replayed_stale_and_unadmitted_verdicts(tmp_path: Path, error_log: ErrorLog):
    other = Identity.generate()  # another admitted validator, speaking over a raw link
    async with trio.open_nursery() as nursery:
        v_id = Identity.generate()
        v = await start_node(
            nursery,
            make_cfg(
                tmp_path,
                "v",
                "validator",
                [],
                admission={"validators": [v_id.peer_id, other.peer_id]},
                validator={"audit": False},
            ),
            v_id,
        )
        ws, _ = await open_raw_link(nursery, v.host.listen_addr, other, network=NETWORK)

        async def gossip(data: bytes) -> None:
            await ws.send_message(encode_frame(GossipRPC(publish=[PublishedMessage(topic=C.TOPIC_VERDICT, data=data)])))

        body = Verdict(
            challenge_id=new_challenge_id(other.peer_id),
            executor_id=Identity.generate().peer_id,
            miner_id=Identity.generate().peer_id,
            passed=True,
            reasons=[R.PASSED],
            n=64,
            steps=4,
            commit_us=1,
            openings_us=1,
            verify_us=1,
            expected_us=1,
            score_ppm=900_000,
        )
        verdict = seal(body, other)
        await gossip(verdict)
        await wait_for(lambda: v.service.stats.foreign_verdicts == 1, 5, "the verdict")
        # the same bytes again: one message id, dropped as a duplicate, never delivered twice
        dup0 = v.gossip.stats_dict()["duplicates"]
        await gossip(verdict)
        await wait_for(lambda: v.gossip.stats_dict()["duplicates"] > dup0, 5, "the duplicate")
        # re-signed under a new seq (a new message id): counted once per (validator, challenge), not forwarded
        await gossip(seal(body, other))
        await wait_for(lambda: v.agreement.scores.refused.get(other.peer_id, {}).get("duplicate") == 1, 5, "the re-signed copy")
        assert v.service.stats.foreign_verdicts == 1 and len(v.ledger.foreign_verdicts()) == 1
        # a stale copy (older than the clock-skew limit): ignored as stale, the relayer is not blamed
        await gossip(seal(body, other, ts=now_ms() - 600_000))
        await wait_for(lambda: v.gossip.stats_dict()["ignored"].get("stale", 0) == 1, 5, "the stale verdict")
        assert v.gossip.score(other.peer_id) >= 0
        # under a challenge id that is not its own (issue 18: read in a BUSY, or copied): rejected and penalised
        await gossip(seal(dataclasses.replace(body, challenge_id=new_challenge_id(v_id.peer_id)), other))
        await wait_for(
            lambda: v.agreement.scores.refused.get(other.peer_id, {}).get("foreign-id") == 1, 5, "the foreign challenge id"
        )
        assert v.gossip.score(other.peer_id) < 0
        # the verdict copied and signed by a peer outside the admitted set: rejected, penalised (P4)
        rogue = Identity.generate()
        ws2, _ = await open_raw_link(nursery, v.host.listen_addr, rogue, network=NETWORK)
        await ws2.send_message(encode_frame(GossipRPC(publish=[PublishedMessage(topic=C.TOPIC_VERDICT, data=seal(body, rogue))])))
        await wait_for(lambda: v.agreement.rejected_verdicts == 1, 5, "the unadmitted verdict")
        await wait_for(lambda: v.gossip.score(rogue.peer_id) < 0, 5, "a score penalty for the rogue")
        assert v.gossip.stats_dict()["invalid"].get("validator") == 2  # the foreign id and the rogue
        assert v.service.stats.foreign_verdicts == 1
        nursery.cancel_scope.cancel()
    assert error_log.texts() == []


async def test_forged_roster_entries_are_rejected_and_penalised(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        v = await start_node(nursery, make_cfg(tmp_path, "v", "validator", []))
        honest, forger = FakeMiner("replay"), FakeMiner("replay")
        for fm in (honest, forger):
            await nursery.start(fm.host.run)
            await fm.host.dial(v.host.listen_addr)
        vid = v.identity.peer_id
        # 1: the forger lists the honest miner's executor (its attestation names the honest miner)
        await publish_when_subscribed(
            forger.gossip, vid, C.TOPIC_ROSTER, seal(Roster(version=1, entries=[honest.attestation()]), forger.host.identity)
        )
        await wait_for(lambda: v.service.stats.rosters_rejected == 1, 5, "the first forged roster")
        # 2: an entry naming the forger but signed by someone else than the executor it claims
        att = dataclasses.replace(decode_envelope(honest.attestation()).body, miner_id=forger.host.peer_id)
        forged_entry = forge(att, honest.executor, forger.host.identity)
        forger.gossip.publish_raw(C.TOPIC_ROSTER, seal(Roster(version=2, entries=[forged_entry]), forger.host.identity))
        await wait_for(lambda: v.service.stats.rosters_rejected == 2, 5, "the second forged roster")
        assert honest.executor.peer_id not in v.service.executors
        assert v.gossip.stats_dict()["invalid"].get("validator") == 2
        await wait_for(lambda: v.gossip.score(forger.host.peer_id) < 0, 5, "a score penalty for the forger")
        # the honest miner's own roster is accepted
        await publish_when_subscribed(
            honest.gossip, vid, C.TOPIC_ROSTER, seal(Roster(version=1, entries=[honest.attestation()]), honest.host.identity)
        )
        await wait_for(lambda: honest.executor.peer_id in v.service.executors, 5, "the honest roster")
        assert v.service.executors[honest.executor.peer_id].miner_id == honest.host.peer_id
        nursery.cancel_scope.cancel()


async def test_equivocating_publisher_is_penalised_and_kept_as_evidence(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        v = await start_node(nursery, make_cfg(tmp_path, "v", "validator", []))
        fm = FakeMiner("replay")
        await nursery.start(fm.host.run)
        await fm.host.dial(v.host.listen_addr)
        seq = now_ms() * 1000 + 12345
        one = seal(Roster(version=1, entries=[fm.attestation()]), fm.host.identity, seq=seq)
        two = seal(Roster(version=2, entries=[]), fm.host.identity, seq=seq)  # same (sender, seq), other content
        await publish_when_subscribed(fm.gossip, v.identity.peer_id, C.TOPIC_ROSTER, one)
        await wait_for(lambda: fm.executor.peer_id in v.service.executors, 5, "the first roster")
        fm.gossip.publish_raw(C.TOPIC_ROSTER, two)
        await wait_for(lambda: v.gossip.equivocations(), 5, "equivocation evidence")
        (ev,) = v.gossip.equivocations()
        assert ev.origin == fm.host.peer_id and ev.seq == seq
        assert {ev.first_data, ev.second_data} == {one, two}  # both signed messages kept
        assert v.gossip.stats_dict()["equivocations"] == 1
        assert v.gossip.score(fm.host.peer_id) < -50  # P7: 10 units, squared
        # the second message was withheld from the application: the roster did not change
        assert fm.executor.peer_id in v.service.executors
        nursery.cancel_scope.cancel()


async def test_fraudulent_opening_gives_evidence_and_a_ban_at_another_validator(tmp_path: Path):
    """Validator 1 catches a false proof and gossips a verdict with the signed openings as
    evidence; validator 2, which challenges nobody itself (concurrency 0), re-checks the evidence
    and bans the executor and its miner."""
    v1_id, v2_id = Identity.generate(), Identity.generate()
    admitted = {"validators": [v1_id.peer_id, v2_id.peer_id]}
    async with trio.open_nursery() as nursery:
        v1 = await start_node(nursery, make_cfg(tmp_path, "v1", "validator", [], admission=admitted), v1_id)
        v2 = await start_node(
            nursery,
            make_cfg(tmp_path, "v2", "validator", [v1.host.listen_addr], admission=admitted, validator={"concurrency": 0}),
            v2_id,
        )
        cheat = await start_node(
            nursery,
            make_cfg(tmp_path, "c", "miner", [v1.host.listen_addr], admission=admitted),
            parts=node_parts("corrupt-rows:1.0"),
        )
        (ex,) = cheat.service.local
        miner = cheat.identity.peer_id
        await wait_for(
            lambda: any(r.reasons[0].startswith(R.FALSE_PROOF) for r in v1.ledger.verdicts(ex)), 20, "a false-proof verdict"
        )
        assert {b["peer_id"] for b in v1.ledger.bans()} == {ex, miner}
        assert v1.gossip.score(miner) < 0
        await wait_for(lambda: {b["peer_id"] for b in v2.ledger.bans()} == {ex, miner}, 20, "the ban at validator 2")
        assert all(b["reason"] == f"fraud evidence from {v1_id.peer_id}" for b in v2.ledger.bans())
        assert v2.service.stats.audits >= 1 and v2.service.stats.audit_disagreements == 0
        assert v2.service.stats.issued == 0  # it judged from the evidence alone
        (fv, *_) = [f for f in v2.ledger.foreign_verdicts(ex) if not f["passed"]]
        assert fv["reasons"][0].startswith(R.FALSE_PROOF)
        nursery.cancel_scope.cancel()
