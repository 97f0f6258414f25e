"""The gossipsub message cache: recent messages by heartbeat window, for IHAVE and IWANT.

``history`` holds one list of ids per heartbeat (newest first); ``shift`` drops the oldest window.
Ids in the newest ``gossip`` windows are advertised in IHAVE. Hard caps on messages and bytes keep
memory bounded even under a flood: the oldest messages go first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass
class CachedMessage:
    topic: str
    data: bytes
    iwant_counts: dict[str, int] | None = None  # peer -> times sent in answer to IWANT


class MessageCache:
    def __init__(self, history: int, gossip: int, *, max_messages: int, max_bytes: int) -> None:
        if not 0 < gossip <= history:
            raise ValueError("need 0 < gossip <= history")
        self.gossip = gossip
        self.history: deque[list[bytes]] = deque([[]], maxlen=history)
        self.msgs: OrderedDict[bytes, CachedMessage] = OrderedDict()  # insertion order = age
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.msgs)

    def __contains__(self, msg_id: bytes) -> bool:
        return msg_id in self.msgs

    def put(self, msg_id: bytes, topic: str, data: bytes) -> None:
        if msg_id in self.msgs:
            return
        self.msgs[msg_id] = CachedMessage(topic, data)
        self.bytes += len(data)
        self.history[0].append(msg_id)
        while self.msgs and (len(self.msgs) > self.max_messages or self.bytes > self.max_bytes):
            _, old = self.msgs.popitem(last=False)
            self.bytes -= len(old.data)
            # Its id stays in a history window; lookups for it simply miss.

    def get(self, msg_id: bytes) -> CachedMessage | None:
        return self.msgs.get(msg_id)

    def get_for_peer(self, msg_id: bytes, peer: str, limit: int) -> CachedMessage | None:
        """The message for an IWANT from ``peer``, unless it was already sent ``limit`` times."""
        m = self.msgs.get(msg_id)
        if m is None:
            return None
        if m.iwant_counts is None:
            m.iwant_counts = {}
        n = m.iwant_counts.get(peer, 0)
        if n >= limit:
            return None
        if n == 0 and len(m.iwant_counts) >= 1024:
            return None  # bounded: more requesters than any honest mesh has
        m.iwant_counts[peer] = n + 1
        return m

    def gossip_ids(self, topic: str) -> list[bytes]:
        out: list[bytes] = []
        for i, window in enumerate(self.history):
            if i >= self.gossip:
                break
            for msg_id in window:
                m = self.msgs.get(msg_id)
                if m is not None and m.topic == topic:
                    out.append(msg_id)
        return out

    def shift(self) -> None:
        if len(self.history) == self.history.maxlen:
            for msg_id in self.history[-1]:
                old = self.msgs.pop(msg_id, None)
                if old is not None:
                    self.bytes -= len(old.data)
        self.history.appendleft([])
