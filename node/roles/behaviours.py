"""How an executor behaves: honestly, or (for the harness and tests only) like a named cheater.

A behaviour decides what an executor attests, how it proves, what it commits and opens, and which
key signs. Every cheat here is one a rational miner would try; the validator must catch each one
with a named reason. Selected by ``[miner].cheat`` / ``[executor].cheat`` (testing only).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from node.identity import Identity
from node.pow.engine import ChallengeParams, Engine, Trace
from node.wire.messages import ExecutorAttestation

if TYPE_CHECKING:
    from node.roles.executor import ExecutorService


class Behaviour:
    """The honest executor. Subclasses override one thing each."""

    kind = "honest"
    answers_for_others = False

    def attestation(self, body: ExecutorAttestation) -> ExecutorAttestation:
        return body

    def prove(self, engine: Engine, params: ChallengeParams, deadline_s: float | None = None) -> Trace:
        return engine.prove(params)

    def commitment(self, service: "ExecutorService", trace: Trace) -> tuple[bytes, bytes]:
        return trace.root, trace.digests[-1]

    def release(self, engine: Engine, trace: Trace) -> None:
        engine.release(trace)

    def openings(self, service: "ExecutorService", trace: Trace, blob: bytes, secret: bytes, k: int) -> bytes:
        return blob

    def sign(self, service: "ExecutorService", body: Any) -> bytes:
        return service.signer.seal(body)


Honest = Behaviour


class FakeModel(Behaviour):
    """Claims a faster GPU model than it runs: its times miss that model's profile."""

    kind = "fake-model"

    def __init__(self, claimed_model: str = "cpu-fast"):
        self.claimed_model = claimed_model

    def attestation(self, body: ExecutorAttestation) -> ExecutorAttestation:
        return dataclasses.replace(body, gpu_model=self.claimed_model)


class ReplayCommitment(Behaviour):
    """Does the work once, then answers every later challenge with that old trace and commitment."""

    kind = "replay"

    def __init__(self) -> None:
        self._old: Trace | None = None

    def prove(self, engine: Engine, params: ChallengeParams, deadline_s: float | None = None) -> Trace:
        if self._old is None:
            self._old = engine.prove(params)
        return self._old

    def release(self, engine: Engine, trace: Trace) -> None:
        if trace is not self._old:  # the old trace is kept for every later answer
            engine.release(trace)


class ForeignKey(Behaviour):
    """Signs its answers with a key that is not its own."""

    kind = "foreign-key"

    def __init__(self) -> None:
        from node.wire.envelope import Signer

        self._signer = Signer(Identity.generate())

    def sign(self, service: "ExecutorService", body: Any) -> bytes:
        if type(body).__name__ == "ExecutorAttestation":
            return service.signer.seal(body)  # registers honestly, cheats later
        return self._signer.seal(body)


class AnswerForOthers(Behaviour):
    """Answers challenges addressed to another executor, signing with its own key."""

    kind = "wrong-executor"
    answers_for_others = True


class Relay(Behaviour):
    """Re-issues each challenge to another executor under its own validator key, passing off the
    other executor's work as its own. The proof is bound to both keys, so it cannot match."""

    kind = "relay"

    def __init__(self) -> None:
        self._fake_validator = Identity.generate()
        self._other_executor = Identity.generate()

    def prove(self, engine: Engine, params: ChallengeParams, deadline_s: float | None = None) -> Trace:
        relayed = dataclasses.replace(
            params, validator=self._fake_validator.public_key, executor=self._other_executor.public_key
        )
        return engine.prove(relayed)


# Kinds that need a cheating engine (built from node.pow's primitives) are registered by
# node.roles.cheat_engines; the rest are plain behaviours.
BEHAVIOURS: dict[str, type[Behaviour]] = {
    "honest": Behaviour,
    "fake-model": FakeModel,
    "replay": ReplayCommitment,
    "foreign-key": ForeignKey,
    "wrong-executor": AnswerForOthers,
    "relay": Relay,
}


def make_behaviour(spec: str) -> Behaviour:
    """``kind`` or ``kind:arg`` (e.g. ``corrupt-rows:0.2``) -> a behaviour instance."""
    from node.roles import cheat_engines  # registers the engine-level cheats

    kind, _, arg = spec.partition(":")
    kind = kind or "honest"
    cls = BEHAVIOURS.get(kind) or cheat_engines.ENGINE_CHEATS.get(kind)
    if cls is None:
        known = sorted(set(BEHAVIOURS) | set(cheat_engines.ENGINE_CHEATS))
        raise ValueError(f"unknown cheat kind {kind!r} (known: {', '.join(known)})")
    return cls(arg) if arg else cls()
