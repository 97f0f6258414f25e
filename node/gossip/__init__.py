"""Gossipsub v1.1: a sans-IO router (router.py, scoring.py, mcache.py) and a thin trio driver."""

from node.gossip.driver import GossipDriver
from node.gossip.params import GossipParams

__all__ = ["GossipDriver", "GossipParams"]
