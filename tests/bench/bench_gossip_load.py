"""Load generator and measurements shared by the gossip benchmarks (gpow, bare trio-websocket,
py-libp2p). Only the standard library and trio: it is imported by bench_gossip.py (project venv)
and by bench_gossip_libp2p.py (the py-libp2p venv), so every system gets the same pacing, the
same topology and the same statistics.

All nodes of one system live in one trio process, so publish and delivery times come from one
clock (time.perf_counter)."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import trio

MSG_BYTES = 1024
TOPIC = "gpow/bench/1"
PUBLISHERS = 5


def topology(n: int, degree: int = 3, seed: int = 1) -> list[list[int]]:
    """Node i dials ``degree`` random earlier nodes (a connected graph, the same for every system)."""
    rng = random.Random(seed)
    return [sorted(rng.sample(range(i), min(degree, i))) for i in range(n)]


def publishers(n: int) -> list[int]:
    """Up to PUBLISHERS nodes spread over the join order (early nodes have more links)."""
    step = max(1, n // PUBLISHERS)
    return list(range(0, n, step))[:PUBLISHERS]


def tag(idx: int) -> bytes:
    """The first 8 bytes of every benchmark payload: the message index (big-endian)."""
    return idx.to_bytes(8, "big")


def untag(data: bytes) -> int:
    return int.from_bytes(data[:8], "big")


def pct(sorted_vals: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(q / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


class Recorder:
    """Publish times and deliveries of one load step. Deliveries of messages from other steps
    (or repeats to the same node) are not counted as deliveries here."""

    def __init__(self, n_nodes: int) -> None:
        self.receivers = n_nodes - 1  # every node but the publisher
        self.t_pub: dict[int, float] = {}
        self.origin: dict[int, int] = {}
        self.got: dict[int, set[int]] = {}
        self.lat: list[float] = []
        self.full = 0
        self.first_pub = 0.0
        self.last_full = 0.0
        self.duplicates = 0
        self.done = trio.Event()
        self.expected = -1

    def published(self, idx: int, node: int) -> None:
        t = time.perf_counter()
        self.origin[idx] = node
        if not self.t_pub:
            self.first_pub = t
        self.t_pub[idx] = t
        self.got[idx] = set()

    def delivered(self, node: int, data_or_idx: bytes | int) -> None:
        t = time.perf_counter()
        idx = data_or_idx if isinstance(data_or_idx, int) else untag(data_or_idx)
        got = self.got.get(idx)
        if got is None or self.origin[idx] == node:  # another step's message, or a local echo
            return
        if node in got:
            self.duplicates += 1
            return
        got.add(node)
        self.lat.append(t - self.t_pub[idx])
        if len(got) == self.receivers:
            self.full += 1
            self.last_full = t
            if self.full == self.expected:
                self.done.set()


@dataclass
class StepResult:
    offered_rate: float
    published: int
    publish_s: float  # first to last publish
    fully_delivered: int  # messages that reached every other node
    missing_deliveries: int
    duplicates_seen_by_app: int
    delivered_rate: float  # fully delivered messages / (last full delivery - first publish)
    p50_ms: float
    p99_ms: float
    max_ms: float
    sustained: bool


@dataclass
class SystemResult:
    system: str
    nodes: int
    links: int
    setup_s: float
    fixed: StepResult | None = None
    ramp: list[StepResult] = field(default_factory=list)
    max_sustained_rate: float = 0.0
    at_max: StepResult | None = None
    error: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


Publish = Callable[[int, int], Awaitable[None]]  # (node index, message index)


async def run_step(
    rec: Recorder, publish: Publish, pubs: list[int], rate: float, count: int, first_idx: int, drain_s: float, lag_p99_s: float
) -> StepResult:
    """Publish ``count`` messages at ``rate`` msgs/s (round-robin over ``pubs``, paced on absolute
    deadlines so a late publish does not lower the offered rate), then wait for every delivery or
    ``drain_s`` after the last publish."""
    rec.expected = count
    t0 = trio.current_time()
    for k in range(count):
        due = t0 + k / rate
        if trio.current_time() < due:
            await trio.sleep_until(due)
        idx = first_idx + k
        node = pubs[k % len(pubs)]
        rec.published(idx, node)
        await publish(node, idx)
        if k % 16 == 15:
            await trio.lowlevel.checkpoint()  # let deliveries run even when publishing is late
    last_pub = time.perf_counter()
    with trio.move_on_after(drain_s):
        await rec.done.wait()
    lat = sorted(rec.lat)
    missing = count * rec.receivers - len(lat)
    span = (rec.last_full - rec.first_pub) if rec.full else 0.0
    delivered_rate = rec.full / span if span > 0 else 0.0
    p99 = pct(lat, 99)
    pub_span = last_pub - rec.first_pub
    # Lagging: a delivery missing, a slow tail, deliveries still arriving lag_p99_s after the last
    # publish (a backlog), or the publishers themselves (same process) falling behind the offered rate.
    sustained = (
        missing == 0
        and p99 <= lag_p99_s
        and rec.last_full - last_pub <= lag_p99_s
        and (count - 1) / max(pub_span, 1e-9) >= 0.95 * rate
    )
    return StepResult(
        offered_rate=rate,
        published=count,
        publish_s=round(last_pub - rec.first_pub, 4),
        fully_delivered=rec.full,
        missing_deliveries=missing,
        duplicates_seen_by_app=rec.duplicates,
        delivered_rate=round(delivered_rate, 1),
        p50_ms=round(pct(lat, 50) * 1000, 2),
        p99_ms=round(p99 * 1000, 2),
        max_ms=round((lat[-1] if lat else float("nan")) * 1000, 2),
        sustained=sustained,
    )


@dataclass
class LoadPlan:
    fixed_rate: float = 20.0  # latency comparison point, the same offered load for every system
    fixed_messages: int = 200
    ramp_start: float = 10.0
    ramp_factor: float = 1.5
    ramp_max: float = 5000.0
    step_s: float = 2.0  # publishing time of one ramp step
    drain_s: float = 2.0
    lag_p99_s: float = 0.5  # a step whose p99 exceeds this counts as lagging
    budget_s: float = 45.0  # ramp time limit per system and size (keeps a full run under ~5 min)
    warmup: int = 20


async def run_plan(
    res: SystemResult,
    n_nodes: int,
    publish: Publish,
    set_recorder: Callable[[Recorder], None],
    plan: LoadPlan,
    settle: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Warm-up, the fixed-rate latency run, then a geometric rate ramp until a step lags."""
    pubs = publishers(n_nodes)
    idx = 1

    async def step(rate: float, count: int) -> StepResult:
        nonlocal idx
        rec = Recorder(n_nodes)
        set_recorder(rec)
        r = await run_step(rec, publish, pubs, rate, count, idx, plan.drain_s, plan.lag_p99_s)
        idx += count
        if settle is not None:
            await settle()
        await trio.sleep(0.3)  # stragglers of this step land before the next one starts
        return r

    await step(plan.fixed_rate, plan.warmup)
    res.fixed = await step(plan.fixed_rate, plan.fixed_messages)
    rate = plan.ramp_start
    deadline = trio.current_time() + plan.budget_s
    while rate <= plan.ramp_max and trio.current_time() < deadline:
        r = await step(rate, max(10, int(rate * plan.step_s)))
        res.ramp.append(r)
        if not r.sustained:
            break
        res.max_sustained_rate = r.offered_rate
        res.at_max = r
        rate = round(rate * plan.ramp_factor, 1)
