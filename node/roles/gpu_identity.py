"""One GPU counted once: which live executors report the same GPU UUID.

Rules (issue 10):
- A GPU UUID reported by two or more live executor ids, whatever miners they belong to, makes
  each of them a duplicate of the others, until one of them leaves cleanly (``deregister``) or
  stops reporting that UUID.
- An executor id is one executor wherever it goes: the same id seen under a new miner (after a
  clean deregister or not) replaces its old entry and is never a duplicate of itself.
- The first live registrant of a UUID holds it: only the others are duplicates (a UUID is public,
  so copying a victim's into a roster must fail the copier, not the victim). A co-scheduled
  challenge of the contenders settles it (``settle``): a holder that fails SETTLE_LOSSES of them in
  a row while a contender passes hands the UUID to that contender.
- Empty UUIDs say nothing and never match. CPU executors report ``CPU-<their own id>``, unique
  per executor, so honest CPU executors never collide.
- An entry not re-observed for ``stale_after_ms`` (rosters are refreshed every few seconds and
  attestations expire after 10 minutes) counts as gone, so an executor whose miner vanished
  without a word does not hold its UUID forever. "Now" is the newest observation time seen.

A pure core: no clock, no trio; times come in as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_STALE_AFTER_MS = 15 * 60 * 1000  # longer than an attestation lives (10 min)
SETTLE_LOSSES = 3  # contests a holder must lose in a row before its UUID moves


@dataclass
class GpuSighting:
    executor_id: str
    miner_id: str
    gpu_uuid: str
    pci_bus_id: str
    host_fingerprint: str
    first_seen_ms: int
    last_seen_ms: int
    contests_lost: int = 0  # co-scheduled contests for its UUID lost in a row while holding it


class GpuIdentityRegistry:
    def __init__(self, stale_after_ms: int = DEFAULT_STALE_AFTER_MS):
        self.stale_after_ms = stale_after_ms
        self._live: dict[str, GpuSighting] = {}
        self._by_uuid: dict[str, set[str]] = {}
        self._now_ms = 0
        self._pruned_ms = 0

    def observe(
        self, executor_id: str, miner_id: str, gpu_uuid: str, pci_bus_id: str, host_fingerprint: str, now_ms: int
    ) -> None:
        """Record an executor's latest signed attestation (the newest one replaces the last)."""
        self._now_ms = max(self._now_ms, now_ms)
        self._prune()
        old = self._live.get(executor_id)
        if old is not None and old.gpu_uuid != gpu_uuid:
            self._unindex(old)
            old = None
        if old is None:
            self._live[executor_id] = GpuSighting(executor_id, miner_id, gpu_uuid, pci_bus_id, host_fingerprint, now_ms, now_ms)
            if gpu_uuid:
                self._by_uuid.setdefault(gpu_uuid, set()).add(executor_id)
        else:
            old.miner_id, old.pci_bus_id, old.host_fingerprint = miner_id, pci_bus_id, host_fingerprint
            old.last_seen_ms = max(old.last_seen_ms, now_ms)

    def deregister(self, executor_id: str, now_ms: int) -> None:
        """The executor left cleanly: it no longer holds its GPU."""
        self._now_ms = max(self._now_ms, now_ms)
        old = self._live.pop(executor_id, None)
        if old is not None:
            self._unindex(old)

    def _unindex(self, s: GpuSighting) -> None:
        ids = self._by_uuid.get(s.gpu_uuid)
        if ids is not None:
            ids.discard(s.executor_id)
            if not ids:
                del self._by_uuid[s.gpu_uuid]

    def _prune(self) -> None:
        # Forget stale entries now and then, so executors that vanished do not pile up.
        if self._now_ms - self._pruned_ms < self.stale_after_ms // 4:
            return
        self._pruned_ms = self._now_ms
        for s in [s for s in self._live.values() if not self._is_live(s)]:
            del self._live[s.executor_id]
            self._unindex(s)

    def _is_live(self, s: GpuSighting) -> bool:
        return self._now_ms - s.last_seen_ms <= self.stale_after_ms

    def _contenders(self, gpu_uuid: str) -> list[GpuSighting]:
        """The live executors reporting ``gpu_uuid``, the holder first (earliest registrant)."""
        live = [self._live[e] for e in self._by_uuid.get(gpu_uuid, ()) if self._is_live(self._live[e])]
        return sorted(live, key=lambda s: (s.first_seen_ms, s.executor_id))

    def holder(self, gpu_uuid: str) -> str | None:
        contenders = self._contenders(gpu_uuid)
        return contenders[0].executor_id if contenders else None

    def duplicates_of(self, executor_id: str) -> set[str]:
        """For an executor that is not the holder of its GPU UUID: the other live executors that
        report it (the holder among them). Empty for the holder and for unique UUIDs."""
        s = self._live.get(executor_id)
        if s is None or not s.gpu_uuid or not self._is_live(s):
            return set()
        contenders = self._contenders(s.gpu_uuid)
        if len(contenders) < 2 or contenders[0].executor_id == executor_id:
            return set()
        return {c.executor_id for c in contenders if c.executor_id != executor_id}

    def contenders_of(self, executor_id: str) -> set[str]:
        """Every other live executor reporting this one's GPU UUID, holder or not (co-scheduling)."""
        s = self._live.get(executor_id)
        if s is None or not s.gpu_uuid:
            return set()
        return {c.executor_id for c in self._contenders(s.gpu_uuid) if c.executor_id != executor_id}

    def settle(self, passed: set[str], failed: set[str]) -> list[tuple[str, str]]:
        """After a co-scheduled challenge of contenders for one UUID: a holder in ``failed`` while a
        contender is in ``passed`` has lost one contest; one that passes wins and clears its losses.
        The UUID moves only after SETTLE_LOSSES contests lost in a row, so one transient failure
        of the real card (a late commitment) does not hand it to a copier for good.
        Returns (uuid, new holder) moves."""
        moves = []
        for eid in passed | failed:
            s = self._live.get(eid)
            if s is None or not s.gpu_uuid or self.holder(s.gpu_uuid) != eid:
                continue
            if eid in passed:
                s.contests_lost = 0
                continue
            winners = [c for c in self._contenders(s.gpu_uuid)[1:] if c.executor_id in passed]
            if not winners:
                continue
            s.contests_lost += 1
            if s.contests_lost >= SETTLE_LOSSES:
                w = winners[0]
                w.first_seen_ms, s.first_seen_ms = s.first_seen_ms, w.first_seen_ms
                if w.first_seen_ms == s.first_seen_ms:
                    s.first_seen_ms += 1
                s.contests_lost = 0
                moves.append((s.gpu_uuid, w.executor_id))
        return moves

    def duplicate_groups(self) -> list[set[str]]:
        """Every set of two or more live executors sharing one GPU UUID."""
        groups = []
        for ids in self._by_uuid.values():
            live = {e for e in ids if self._is_live(self._live[e])}
            if len(live) > 1:
                groups.append(live)
        return groups

    def sighting(self, executor_id: str) -> GpuSighting | None:
        return self._live.get(executor_id)
