"""Wire codec cost per message: encoding and strict decoding of a gossip RPC link frame and of a
signed envelope.

    python tests/bench/bench_codec.py [--iterations 20000] [--payload 900]

Times ``encode_frame`` / ``decode_frame`` on a GossipRPC frame carrying one published message (a signed envelope
padded to about 1 KiB) and six IHAVE ids, and ``decode_envelope`` (strict decode + Ed25519
verification) and ``encode_envelope`` (canonical encoding + Ed25519 signing) on a small signed
envelope. One core, wall clock, mean over the iterations.
This is a benchmark, not a test: pytest collects test_*.py only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.identity import Identity  # noqa: E402
from node.net.framing import decode_frame, encode_frame  # noqa: E402
from node.wire.envelope import decode_envelope, encode_envelope  # noqa: E402
from node.wire.messages import GossipRPC, IHave, Ping, PublishedMessage  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=20000)
    ap.add_argument("--payload", type=int, default=900, help="bytes appended to the published envelope")
    a = ap.parse_args(argv)
    me = Identity.generate()
    env = encode_envelope(Ping(nonce=5), me, seq=1, now_ms=int(time.time() * 1000))
    rpc = GossipRPC(
        publish=[PublishedMessage(topic="gpow/verdict/1", data=env + os.urandom(a.payload))],
        ihave=[IHave(topic="gpow/verdict/1", ids=[os.urandom(32) for _ in range(6)])],
    )
    frame = encode_frame(rpc)
    cases = (
        ("encode_frame (gossip RPC)", lambda: encode_frame(rpc), len(frame)),
        ("decode_frame (gossip RPC)", lambda: decode_frame(frame, max_bytes=1 << 22), len(frame)),
        ("encode_envelope (incl. Ed25519 sign)", lambda: encode_envelope(Ping(nonce=5), me, seq=1, now_ms=1), len(env)),
        ("decode_envelope (incl. Ed25519 verify)", lambda: decode_envelope(env), len(env)),
    )
    for name, fn, size in cases:
        fn()
        t = time.perf_counter()
        for _ in range(a.iterations):
            fn()
        per = (time.perf_counter() - t) / a.iterations
        print(f"{name}: {per * 1e6:.1f} us per message of {size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
