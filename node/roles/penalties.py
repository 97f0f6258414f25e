"""How much each kind of misbehaviour costs a peer in gossip scoring (P7, the behaviour penalty).

The gossip score charges the square of the accumulated penalty, so these are small counts: one
honest-looking slip costs 1, while a forgery or an impersonation pushes a peer towards the
graylist (score -80 by default: about nine units) on its own. Refusals that are the refuser's
own state (out of capacity, a deadline already past) cost nothing.
"""

from __future__ import annotations

SLIP = 1.0  # a ping or request that does not decode, a stale message
MALFORMED = 2.0  # a message that breaks the schema or fails its signature
REFUSED_ROLE = 3.0  # a challenge from a validator outside the admitted set, a replayed challenge
FORGERY = 4.0  # a beacon reveal that contradicts its commitment
IMPERSONATION = 9.0  # registering another identity's executor


def for_refusal(reason: str) -> float:
    """The penalty for a request we refused with ``reason`` (ChallengeRefused.reason or a WireError's)."""
    # not-assigned, beacon-unknown: beacon views may differ for a moment (clocks, gossip)
    if reason in ("capacity", "expired", "unknown-challenge", "not-assigned", "beacon-unknown"):
        return 0.0
    if reason in ("unadmitted-validator", "replay", "wrong-validator", "bad-reveal", "deadline-too-far", "wrong-issuer"):
        return REFUSED_ROLE
    if reason in ("bad-signature", "malformed", "schema", "oversized", "unknown-type"):
        return MALFORMED
    return SLIP
