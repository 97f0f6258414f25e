"""Agreed scores: what the network as a whole thinks of an executor.

Every node keeps the verdicts gossiped by admitted validators. An executor's agreed score over the
last ``window_rounds`` rounds is the median, over the validators that judged it, of each
validator's pass rate for it; it exists only when at least ``min_validators`` validators
contributed. The median is what makes one lying validator powerless: with three honest ones
agreeing, an always-pass or always-fail liar moves neither end of the middle.
"""

from __future__ import annotations

import statistics
from collections import OrderedDict
from dataclasses import dataclass, field

MAX_VERDICTS = 200_000  # bounded memory: the oldest verdicts are forgotten first


@dataclass(frozen=True)
class VerdictView:
    validator_id: str
    executor_id: str
    round: int
    passed: bool
    challenge_id: str
    reasons: tuple[str, ...] = ()


@dataclass
class AgreedScore:
    executor_id: str
    value: float | None  # None: fewer than min_validators judged it in the window
    per_validator: dict[str, float] = field(default_factory=dict)
    verdicts: int = 0


class AgreedScores:
    def __init__(self, window_rounds: int = 10, min_validators: int = 3) -> None:
        if window_rounds < 1 or min_validators < 1:
            raise ValueError("window_rounds and min_validators must be at least 1")
        self.window_rounds = window_rounds
        self.min_validators = min_validators
        self._by_id: OrderedDict[str, VerdictView] = OrderedDict()
        self._by_executor: dict[str, dict[str, VerdictView]] = {}

    def add(self, v: VerdictView) -> bool:
        """Keep one verdict; False for a challenge id already counted."""
        if v.challenge_id in self._by_id:
            return False
        self._by_id[v.challenge_id] = v
        self._by_executor.setdefault(v.executor_id, {})[v.challenge_id] = v
        while len(self._by_id) > MAX_VERDICTS:
            _, old = self._by_id.popitem(last=False)
            self._by_executor.get(old.executor_id, {}).pop(old.challenge_id, None)
        return True

    def score(self, executor_id: str, current_round: int) -> AgreedScore:
        low = current_round - self.window_rounds
        per: dict[str, list[bool]] = {}
        n = 0
        for v in self._by_executor.get(executor_id, {}).values():
            if low < v.round <= current_round:
                per.setdefault(v.validator_id, []).append(v.passed)
                n += 1
        rates = {vid: sum(p) / len(p) for vid, p in per.items()}
        value = statistics.median(rates.values()) if len(rates) >= self.min_validators else None
        return AgreedScore(executor_id, value, rates, n)

    def executors(self) -> list[str]:
        return sorted(self._by_executor)

    def table(self, current_round: int) -> list[AgreedScore]:
        return [self.score(e, current_round) for e in self.executors()]
