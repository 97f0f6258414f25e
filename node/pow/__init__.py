"""Chain proof-of-work, spec pow-v1: Philox streams, the chain, Merkle commitments, openings and the
verifier, plus the numpy reference engine. Imports only numpy and hashlib (no network, no cupy)."""
