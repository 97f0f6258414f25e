"""What every node of a network agrees on, whatever its role: who may validate (the admitted set),
when rounds happen (the schedule and its beacon), and what each executor's agreed score is.

Owns the gossip topics for validator sets, beacon reveals and verdicts; the validator role plugs
into it (its own reveals and verdicts, and a listener for other validators' verdicts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import trio

from node.clock import now_ms
from node.gossip.router import Validation
from node.roles import agreed as A
from node.roles import penalties as P
from node.roles import rounds as RB
from node.roles.admission import AdmissionError, ValidatorSetBook
from node.roles.agreed import AgreedScores, VerdictView
from node.roles.params import AdmissionParams, RoundParams
from node.roles.rounds import Beacon, RoundSchedule, assign
from node.wire import WireError, decode_envelope
from node.wire import constants as C
from node.wire.envelope import Envelope
from node.wire.messages import BeaconReveal, ValidatorSet, Verdict

log = logging.getLogger("gpow.agreement")

PULL_SET_S = 1.0  # how often a node with an authority but no set yet asks its peers


class Agreement:
    def __init__(
        self, host, admission: AdmissionParams, rounds: RoundParams, *, gossip, wall_ms: Callable[[], int] | None = None
    ) -> None:
        self.host = host
        self.gossip = gossip  # node.gossip.GossipDriver, built on the host
        self.params = rounds
        self.wall_ms = wall_ms or now_ms
        self.book = ValidatorSetBook(admission.validators, admission.authority)
        self.set_file = admission.set_file
        self.schedule = RoundSchedule(
            round_ms=int(rounds.round_s * 1000),
            window_ms=int(rounds.reveal_window_s * 1000),
            jitter_ms=int(rounds.jitter_s * 1000),
            genesis_ms=rounds.genesis_ms,
        )
        self.beacon = Beacon(self.schedule, host.identity.peer_id, since_ms=self.wall_ms())
        self.scores = AgreedScores(rounds.window_rounds, rounds.min_validators, rounds=rounds.enabled)
        self.verdict_listeners: list[Callable[[Envelope], None]] = []
        self.rejected_verdicts = 0
        # The authority signs a set once; it is re-gossiped long after, so its timestamp is not news.
        gossip.subscribe(C.TOPIC_VALIDATOR_SET, self._on_set, self._validate_set, check_freshness=False)
        gossip.subscribe(C.TOPIC_BEACON, self._on_beacon, self._validate_beacon)
        gossip.subscribe(C.TOPIC_VERDICT, self._on_verdict, self._validate_verdict)
        host.set_handler(C.PROTO_VALIDATOR_SET, self._serve_set)

    # ---- rounds ------------------------------------------------------------------------------

    def current_round(self) -> int:
        return self.schedule.round_at(self.wall_ms()) if self.params.enabled else 0

    def publish_reveal(self, r: int) -> None:
        self.gossip.publish(C.TOPIC_BEACON, self.beacon.make_reveal(r))

    def round_validators(self, r: int) -> frozenset[str]:
        """Validators that take part in round r: admitted ones that revealed (all admitted if none
        did), less those dropped from the beacon for equivocating. Empty while our view of round r
        may not be everyone's (we started too recently): we neither challenge nor count then."""
        if not self.beacon.trusted(r):
            return frozenset()
        now = self.wall_ms()
        revealed = {v for v in self.beacon.contributors(r) if self.book.is_admitted(v, now)}
        if revealed:
            return frozenset(revealed)
        return frozenset(v for v in self.book.members(now) if not self.beacon.excluded(v, r))

    def assignee(self, r: int, executor_id: str) -> str | None:
        """The validator round r's beacon drew for ``executor_id``; None before the beacon is known here."""
        beacon = self.beacon.value(r, self.wall_ms())
        if beacon is None or not self.beacon.trusted(r):
            return None
        return assign(beacon, executor_id, self.round_validators(r))

    def assigned(self, validator_id: str, executor_id: str, r: int, now_ms: int | None = None) -> bool | None:
        """Does round r's beacon give ``executor_id`` to ``validator_id``? None while the beacon
        is unknown here (before its window closes, or older than the beacon's memory)."""
        if not self.params.enabled:
            return None
        beacon = self.beacon.value(r, self.wall_ms() if now_ms is None else now_ms)
        if beacon is None or not self.beacon.trusted(r):
            return None
        return assign(beacon, executor_id, self.round_validators(r)) == validator_id

    # ---- validator set -----------------------------------------------------------------------

    def load_set_file(self) -> None:
        if not self.set_file:
            return
        raw = Path(self.set_file).read_bytes()
        env = decode_envelope(raw, expect=ValidatorSet)
        self.book.offer(env, self.wall_ms())

    def _validate_set(self, env: Envelope) -> Validation:
        if not self.book.authority:
            return Validation.IGNORE
        try:
            self.book.offer(env, self.wall_ms())
        except AdmissionError as exc:
            log.warning("validator set refused", extra={"fields": {"sender": env.sender, "reason": str(exc)}})
            return Validation.REJECT
        return Validation.ACCEPT

    def _on_set(self, env: Envelope) -> None:
        pass  # taken in _validate_set, so a newer set counts before it is forwarded

    async def _serve_set(self, peer_id: str, payload: bytes) -> bytes:
        if not self.book.current_raw:
            raise LookupError("no validator set here")
        return self.book.current_raw

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Load the set file (and gossip it); without a set, ask connected peers for theirs, since
        a node that joins after the last update has seen no gossip of it."""
        try:
            self.load_set_file()
        except (OSError, WireError, AdmissionError) as exc:
            raise SystemExit(f"[admission] set_file {self.set_file}: {exc}") from None
        task_status.started()
        if self.book.current_raw:
            self.gossip.publish_raw(C.TOPIC_VALIDATOR_SET, self.book.current_raw)
        while True:
            if self.book.authority and self.book.current is None:
                await self._pull_set()
            await trio.sleep(PULL_SET_S)

    async def _pull_set(self) -> None:
        from node.net.errors import NetError

        for peer in list(self.host.connected_peers())[:4]:
            try:
                raw = await self.host.request(peer, C.PROTO_VALIDATOR_SET, b"", timeout=5.0)
                self.book.offer(decode_envelope(raw, expect=ValidatorSet, max_bytes=1 << 20), self.wall_ms())
            except (NetError, WireError) as exc:
                log.debug("no validator set from peer", extra={"fields": {"peer": peer[-8:], "error": str(exc)}})
            except AdmissionError as exc:
                self.gossip.penalize(peer, P.MALFORMED, f"validator set: {exc.reason}")
            if self.book.current is not None:
                return

    # ---- beacon ------------------------------------------------------------------------------

    def _validate_beacon(self, env: Envelope) -> Validation:
        if not isinstance(env.body, BeaconReveal):
            return Validation.REJECT
        if not self.book.is_admitted(env.sender, self.wall_ms()):
            self.book.stats.refused += 1
            return Validation.REJECT
        return Validation.ACCEPT

    def _on_beacon(self, env: Envelope) -> None:
        outcome = self.beacon.on_reveal(env.sender, env.body, self.wall_ms())
        if outcome in RB.FORGED or outcome in RB.REFUSED:
            # Equivocation and a secret that contradicts its commitment are forgeries; a withheld
            # reveal or a far-off round breaks the protocol. Both are forwarded (accepted above),
            # so every node sees the evidence and drops the same validator.
            self.gossip.penalize(env.sender, P.FORGERY if outcome in RB.FORGED else P.MALFORMED, f"beacon reveal {outcome}")
            log.warning(
                "beacon reveal refused",
                extra={"fields": {"validator": env.sender[-8:], "round": env.body.round, "outcome": outcome}},
            )

    # ---- verdicts ----------------------------------------------------------------------------

    def _validate_verdict(self, env: Envelope) -> Validation:
        """Count a verdict here, so that only counted ones travel on: one from outside the set or
        with another validator's challenge id is rejected (and its sender penalised); a duplicate,
        one for a round the beacon did not draw its validator for, or one out of the window, is
        ignored (not forwarded, nobody's fault: beacon views can differ at a window's edge)."""
        if not isinstance(env.body, Verdict):
            return Validation.REJECT
        if not self.book.is_admitted(env.sender, self.wall_ms()):
            self.rejected_verdicts += 1
            self.book.stats.refused += 1
            log.info("verdict from a validator outside the set refused", extra={"fields": {"validator": env.sender[-8:]}})
            return Validation.REJECT
        outcome = self.add_verdict(env.sender, env.body)
        if outcome == A.FOREIGN_ID:
            self.gossip.penalize(env.sender, P.FORGERY, "verdict under another validator's challenge id")
            log.warning(
                "verdict under another validator's challenge id refused",
                extra={"fields": {"validator": env.sender[-8:], "challenge": env.body.challenge_id.hex()[:12]}},
            )
            return Validation.REJECT
        return Validation.ACCEPT if outcome == A.COUNTED else Validation.IGNORE

    def add_verdict(self, validator_id: str, v: Verdict) -> str:
        """Offer a verdict to the agreed scores; returns agreed.COUNTED or why it does not count."""
        assignee = self.assignee(v.round, v.executor_id) if self.params.enabled else None
        view = VerdictView(validator_id, v.executor_id, v.round, v.passed, v.challenge_id.hex(), tuple(v.reasons))
        return self.scores.add(view, assignee, self.current_round())

    def _on_verdict(self, env: Envelope) -> None:
        for listener in self.verdict_listeners:  # counted already, in _validate_verdict
            listener(env)

    # ---- status ------------------------------------------------------------------------------

    def status(self) -> dict:
        now = self.wall_ms()
        r = self.current_round()
        return {
            "validator_set": self.book.describe(now),
            "rounds": {
                "enabled": self.params.enabled,
                "round": r,
                "next_round_in_s": round((self.schedule.start_ms(r + 1) - now) / 1000, 1) if self.params.enabled else None,
                "beacon": vars(self.beacon.stats),
                "excluded": self.beacon.excluded_now(r),  # dropped from the beacon for equivocating
            },
            # Executors only one validator speaks of are left out: a flood of made-up ids would
            # otherwise fill the status (they are still held, within that validator's bound).
            "agreed_scores": {
                s.executor_id: {"score": s.value, "validators": s.per_validator, "verdicts": s.verdicts, "missing": s.missing}
                for s in self.scores.table(r, self.book.members(now) if not self.book.open else None)
                if s.value is not None or len(s.per_validator) > 1
            },
            "rejected_verdicts": self.rejected_verdicts,
            # per validator: verdicts held, and those not counted, by reason
            "verdicts": {"stored": {v: self.scores.stored(v) for v in self.scores.validators()}, "refused": self.scores.refused},
        }
