"""Openings and proof files: exact round trips and strict decoding."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from node.pow.cpu_engine import CpuEngine
from node.pow.engine import ChallengeParams
from node.pow.openings import (
    ProofFile,
    ProofFormatError,
    build_openings,
    decode_openings,
    decode_proof_file,
    encode_openings,
    encode_proof_file,
)
from node.pow.verifier import verify

Z = bytes(32)


@pytest.fixture(scope="module")
def proof() -> ProofFile:
    p = ChallengeParams(hashlib.sha256(b"openings").digest(), Z, b"\x02" * 32, 64, 5, 2)
    tr = CpuEngine().prove(p)
    r = hashlib.sha256(b"r").digest()
    return ProofFile(p, 9, tr.root, tr.digests[-1], r, build_openings(tr, r, 9))


def _obj(pf: ProofFile) -> dict[str, Any]:
    return msgpack.unpackb(encode_proof_file(pf), raw=False)


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_round_trips(proof: ProofFile) -> None:
    raw = encode_openings(proof.openings)
    assert decode_openings(raw) == proof.openings
    assert encode_openings(decode_openings(raw)) == raw
    pf = decode_proof_file(encode_proof_file(proof))
    assert pf == proof
    res = verify(pf.params, pf.k, pf.root, pf.d_T, pf.reveal, pf.openings)
    assert res.ok, res.failures


def test_shared_rows_sent_once(proof: ProofFile) -> None:
    op = proof.openings
    needed_roles = sum(2 + 4 for _ in op.samples)
    assert len(op.rows) < needed_roles  # t = 0 samples reuse X_0[i] for all four references
    assert list(op.rows) == sorted(op.rows) and list(op.digests) == sorted(op.digests)


MUTATIONS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("extra top key", lambda o: o.update(extra=1)),
    ("missing reveal", lambda o: o.pop("reveal")),
    ("wrong format", lambda o: o.update(format="gpow-pow-proof-x")),
    ("version", lambda o: o.update(v=2)),
    ("seed length", lambda o: o["params"].update(seed=b"\x00" * 31)),
    ("seed as str", lambda o: o["params"].update(seed="00" * 32)),
    ("n not power of two", lambda o: o["params"].update(n=96)),
    ("T zero", lambda o: o["params"].update(T=0)),
    ("k zero", lambda o: o["params"].update(k=0)),
    ("k bool", lambda o: o["params"].update(k=True)),
    ("negative m", lambda o: o["params"].update(m=-1)),
    ("root length", lambda o: o["commitment"].update(root=b"\x00" * 33)),
    ("commitment extra key", lambda o: o["commitment"].update(x=b"")),
    ("openings version", lambda o: o["openings"].update(v=0)),
    ("sample arity", lambda o: o["openings"]["samples"][0].append(1)),
    ("sample t as str", lambda o: o["openings"]["samples"][0].__setitem__(0, "1")),
    ("digest hash length", lambda o: o["openings"]["digests"][0].__setitem__(1, b"\x00" * 31)),
    ("proof hash length", lambda o: o["openings"]["digests"][-1][2].append(b"\x00" * 8)),
    ("digests unsorted", lambda o: o["openings"]["digests"].reverse()),
    ("digest duplicated", lambda o: o["openings"]["digests"].append(o["openings"]["digests"][-1])),
    ("rows unsorted", lambda o: o["openings"]["rows"].reverse()),
    ("row as list", lambda o: o["openings"]["rows"][0].__setitem__(2, [1, 2, 3])),
    ("row path as bin", lambda o: o["openings"]["rows"][0].__setitem__(3, b"\x00" * 32)),
    ("path too long", lambda o: o["openings"]["rows"][0].__setitem__(3, [b"\x00" * 32] * 15)),
    ("row too long", lambda o: o["openings"]["rows"][0].__setitem__(2, b"\x00" * 16385)),
    ("row index 2^32", lambda o: o["openings"]["rows"][-1].__setitem__(1, 2**32)),
]


@pytest.mark.parametrize("name, mutate", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_strict_decode_rejects(proof: ProofFile, name: str, mutate: Callable[[dict[str, Any]], Any]) -> None:
    obj = _obj(proof)
    mutate(obj)
    with pytest.raises(ProofFormatError):
        decode_proof_file(_pack(obj))


def test_rejects_bad_bytes(proof: ProofFile) -> None:
    raw = encode_proof_file(proof)
    for bad in (raw + b"\x00", raw[:-1], b"", b"\xc1", _pack([1, 2]), _pack({"format": 1})):
        with pytest.raises(ProofFormatError):
            decode_proof_file(bad)
    with pytest.raises(ProofFormatError):
        decode_proof_file("not bytes")  # type: ignore[arg-type]
    op_raw = encode_openings(proof.openings)
    with pytest.raises(ProofFormatError, match="trailing"):
        decode_openings(op_raw + b"\x90")
    # A map with a key given twice (msgpack would silently keep the last one).
    dup = b"\x85" + _pack("v")[0:] + _pack(1) + op_raw[1:]
    with pytest.raises(ProofFormatError, match="duplicate"):
        decode_openings(dup)
