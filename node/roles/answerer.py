"""How an executor turns a challenge into signed answers: the seam between the executor's protocol
rules (which challenges it takes, when, for whom) and the work and signatures that answer them.

``ExecutorService`` owns the rules and calls an ``Answerer`` for everything it sends back. The
answerer here is the only one the product ships; tests and the harness pass their own through
``ExecutorService(answerer=...)`` to see that validators judge every answer on its merits.
"""

from __future__ import annotations

from typing import Any

from node.pow.engine import ChallengeParams, Engine, Trace
from node.wire.envelope import Signer
from node.wire.messages import ExecutorAttestation


class Answerer:
    """Attests the executor's facts, proves with its engine, commits to the trace, opens the rows
    it was asked for and signs with the executor's own key."""

    def attestation(self, body: ExecutorAttestation) -> ExecutorAttestation:
        return body

    def prove(self, engine: Engine, params: ChallengeParams, deadline_s: float | None = None) -> Trace:
        return engine.prove(params)

    def commitment(self, trace: Trace) -> tuple[bytes, bytes]:
        return trace.root, trace.digests[-1]

    def release(self, engine: Engine, trace: Trace) -> None:
        engine.release(trace)

    def openings(self, trace: Trace, blob: bytes, secret: bytes, k: int) -> bytes:
        return blob

    def sign(self, signer: Signer, body: Any) -> bytes:
        return signer.seal(body)
