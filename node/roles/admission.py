"""Who may challenge: the network's admitted validator set.

Two sources, from the ``[admission]`` config table:
- a static allowlist of validator peer ids (``validators``), or
- an admitting authority (``authority``, a peer id): the set is whatever the newest unexpired
  ``ValidatorSet`` message signed by that key says. It travels on gossip and can also be loaded
  from a file (``set_file``) written by ``gpow admission sign``.
With neither, every validator is admitted (a development network).

Everything here is pure: the caller passes the decoded envelope and the wall clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from node.clock import now_ms
from node.wire.envelope import Envelope
from node.wire.messages import ValidatorSet

log = logging.getLogger("gpow.admission")


class AdmissionError(Exception):
    """A validator-set message that cannot be used; ``reason`` is a short stable tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class AdmissionStats:
    sets_accepted: int = 0
    sets_rejected: int = 0
    refused: int = 0  # challenges or verdicts refused because their sender is not admitted


class ValidatorSetBook:
    def __init__(self, validators: list[str] | None = None, authority: str = "") -> None:
        self.static = frozenset(validators or [])
        self.authority = authority
        self.current: ValidatorSet | None = None
        self.current_raw: bytes = b""
        self.stats = AdmissionStats()

    @property
    def open(self) -> bool:
        """True when no rule restricts validators (development networks)."""
        return not self.static and not self.authority

    @property
    def source(self) -> str:
        if self.authority:
            return f"authority {self.authority}"
        if self.static:
            return "static allowlist"
        return "open (any validator)"

    def members(self, now_ms: int) -> frozenset[str]:
        """The admitted validator ids now; empty when open or when the authority's set expired."""
        if self.authority:
            if self.current is None or self.current.expires_ms < now_ms:
                return frozenset()
            return frozenset(self.current.validators)
        return self.static

    def is_admitted(self, peer_id: str, now_ms: int) -> bool:
        if self.open:
            return True
        return peer_id in self.members(now_ms)

    def offer(self, env: Envelope, now_ms: int) -> bool:
        """Consider a signed ValidatorSet; returns True if it became the current set.

        Raises AdmissionError for a set that is not the authority's or has expired; an older or
        equal version is not an error (gossip delivers old copies), it is just not taken.
        """
        if not isinstance(env.body, ValidatorSet):
            raise AdmissionError("wrong-type", f"expected a validator-set, got {env.type}")
        if not self.authority:
            raise AdmissionError("no-authority", "this node is not configured with an admitting authority")
        if env.sender != self.authority:
            self.stats.sets_rejected += 1
            raise AdmissionError("not-authority", f"validator set signed by {env.sender}, not by the authority {self.authority}")
        body: ValidatorSet = env.body
        if body.expires_ms < now_ms:
            self.stats.sets_rejected += 1
            raise AdmissionError("expired", f"validator set version {body.version} expired")
        if self.current is not None and body.version <= self.current.version:
            return False
        self.current, self.current_raw = body, env.raw
        self.stats.sets_accepted += 1
        log.info("validator set updated", extra={"fields": {"version": body.version, "validators": len(body.validators)}})
        return True

    def describe(self, now_ms: int) -> dict:
        return {
            "source": self.source,
            "version": self.current.version if self.current else None,
            "validators": sorted(self.members(now_ms)),
            "refused": self.stats.refused,
        }


def sign_main(args) -> int:
    """``gpow admission sign``: the authority signs the set of admitted validators."""
    import sys
    import time
    from pathlib import Path

    from node.identity import IdentityError, load_key_file, public_key_from_peer_id
    from node.wire.envelope import Signer

    try:
        authority = load_key_file(Path(args.key))
        for v in args.validator:
            public_key_from_peer_id(v)  # refuse a typo before it locks a validator out
    except IdentityError as exc:
        print(f"gpow admission sign: {exc}", file=sys.stderr)
        return 2
    expires = int(time.time() * 1000 + args.ttl_days * 86_400_000)
    raw = Signer(authority).seal(ValidatorSet(version=args.version, validators=sorted(set(args.validator)), expires_ms=expires))
    Path(args.out).write_bytes(raw)
    print(
        f"validator set v{args.version}: {len(set(args.validator))} validators, signed by {authority.peer_id}, "
        f"expires in {args.ttl_days:g} days -> {args.out}"
    )
    return 0


def show_main(args) -> int:
    """``gpow admission show``: check a signed validator set and print it."""
    import json
    import sys
    from pathlib import Path

    from node.wire import WireError, decode_envelope

    try:
        env = decode_envelope(Path(args.file).read_bytes(), expect=ValidatorSet)
        book = ValidatorSetBook(authority=args.authority or env.sender)
        book.offer(env, now_ms())
    except (OSError, WireError, AdmissionError) as exc:
        print(f"gpow admission show: {args.file}: {exc}", file=sys.stderr)
        return 1
    body: ValidatorSet = env.body
    print(
        json.dumps(
            {"signed_by": env.sender, "version": body.version, "expires_ms": body.expires_ms, "validators": body.validators},
            indent=1,
        )
    )
    return 0
