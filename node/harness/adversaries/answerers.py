"""Executors that answer falsely in one named way each, built on the product's ``Answerer`` seam.

Each is a cheat a rational miner would try; validators must catch each one with a named reason
(node/harness/adversaries/__init__.py lists what catching it looks like).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from node.identity import Identity
from node.pow.engine import ChallengeParams, Engine, Trace
from node.roles.answerer import Answerer
from node.roles.executor import ExecutorService
from node.wire.envelope import Signer
from node.wire.messages import Challenge, ExecutorAttestation


class FakeModel(Answerer):
    """Claims a faster GPU model than it runs: its times miss that model's profile."""

    def __init__(self, claimed_model: str = "cpu-fast"):
        self.claimed_model = claimed_model

    def attestation(self, body: ExecutorAttestation) -> ExecutorAttestation:
        return dataclasses.replace(body, gpu_model=self.claimed_model)


class ReplayCommitment(Answerer):
    """Does the work once, then answers every later challenge with that old trace and commitment."""

    def __init__(self) -> None:
        self._old: Trace | None = None

    def prove(self, engine: Engine, params: ChallengeParams, deadline_s: float | None = None) -> Trace:
        if self._old is None:
            self._old = engine.prove(params)
        return self._old

    def release(self, engine: Engine, trace: Trace) -> None:
        if trace is not self._old:  # the old trace is kept for every later answer
            engine.release(trace)


class ForeignKey(Answerer):
    """Signs its answers with a key that is not its own."""

    def __init__(self) -> None:
        self._signer = Signer(Identity.generate())

    def sign(self, signer: Signer, body: Any) -> bytes:
        if isinstance(body, ExecutorAttestation):
            return signer.seal(body)  # registers honestly, cheats later
        return self._signer.seal(body)


class AnswersForOthers(ExecutorService):
    """An executor that answers challenges addressed to another executor, signing with its own key."""

    def addressed_to_me(self, body: Challenge) -> bool:
        return True


class Relay(Answerer):
    """Re-issues each challenge to another executor under its own validator key, passing off the
    other executor's work as its own. The proof is bound to both keys, so it cannot match."""

    def __init__(self) -> None:
        self._fake_validator = Identity.generate()
        self._other_executor = Identity.generate()

    def prove(self, engine: Engine, params: ChallengeParams, deadline_s: float | None = None) -> Trace:
        relayed = dataclasses.replace(params, validator=self._fake_validator.public_key, executor=self._other_executor.public_key)
        return engine.prove(relayed)
