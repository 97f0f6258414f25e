"""Process limits the host lives within: the open-file (descriptor) limit.

Every socket is a descriptor. A node that lets inbound sockets take its last descriptors can no
longer dial, open its ledger or write a proof: so the soft limit is raised to the hard one at
start, and inbound sockets are capped below it with a reserve kept for everything else.
"""

from __future__ import annotations

import logging

log = logging.getLogger("gpow.net")

try:
    import resource
except ImportError:  # not on POSIX: no limit to read or raise
    resource = None  # type: ignore[assignment]

# Used where the limit cannot be read: a common default soft limit.
_UNKNOWN_LIMIT = 1024


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (as go does at start since 1.19);
    return the soft limit in force afterwards."""
    if resource is None:
        return _UNKNOWN_LIMIT
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.debug("raised the open file limit", extra={"fields": {"from": soft, "to": target}})
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open file limit", extra={"fields": {"soft": soft, "hard": hard, "error": str(exc)}})
    return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20


def inbound_socket_cap(configured: int, nofile: int, reserve: int) -> int:
    """Inbound sockets allowed at once: the configured cap, but always ``reserve`` descriptors
    below the process limit (at least 1, so a tiny limit still serves someone)."""
    return max(1, min(configured, nofile - reserve))
