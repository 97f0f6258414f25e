"""Openings (spec pow-v1 section 4.5), their msgpack layout, and the standalone proof file.

Openings are built generically from any :class:`~node.pow.engine.Trace` by :func:`build_openings`.
Rows and digests that several samples (or roles) share are sent once: they are keyed by what they
claim to be, ``(s, i)`` for row ``i`` of state ``X_s`` and ``s`` for ``d_s``. The verifier
recomputes which keys every sample needs and checks every entry for every role it plays, so
the keys are only a lookup, never trusted.

Openings layout (msgpack; ``bin`` is a msgpack bin, ``uint`` a non-negative int < 2^32)::

    {
      "v": 1,
      "samples": [[t, i], ...],                 # the k samples (uint, uint), in order
      "digests": [[s, d_s, [h, ...]], ...],     # d_s (bin 32) and its RFC 9162 inclusion proof
                                                #   of leaf s against R (bin 32 each, bottom-up);
                                                #   s strictly increasing
      "rows":    [[s, i, row, [h, ...]], ...],  # row i of X_s (bin, n bytes, int8) and its row
                                                #   path to d_s (bin 32 each, bottom-up);
                                                #   (s, i) strictly increasing
    }

Proof file layout (msgpack), what ``gpow pow prove --out`` writes and ``gpow pow verify`` reads::

    {
      "format": "gpow-pow-proof",
      "v": 1,
      "params": {"seed": bin32, "validator": bin32, "executor": bin32,
                 "n": uint, "T": uint, "m": uint, "k": uint},
      "commitment": {"root": bin32, "d_T": bin32},
      "reveal": bin32,
      "openings": { ...the openings map above... }
    }

Decoding is strict: exactly these keys (no more, no duplicates), exact types, 32-byte hashes,
sorted unique keys, no trailing bytes. Anything else raises :class:`ProofFormatError`. Whether
the content is *true* (lengths against n and T, paths, relations) is the verifier's business.
docs/proof-format.md holds the same description.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from node.pow import merkle
from node.pow.chain import band_of, band_refs, derive_samples
from node.pow.engine import ChallengeParams, Trace

__all__ = [
    "OPENINGS_VERSION",
    "PROOF_FORMAT",
    "ProofFormatError",
    "RowOpening",
    "DigestOpening",
    "Openings",
    "ProofFile",
    "needed_keys",
    "build_openings",
    "encode_openings",
    "decode_openings",
    "encode_proof_file",
    "decode_proof_file",
]

OPENINGS_VERSION = 1
PROOF_FORMAT = "gpow-pow-proof"
PROOF_VERSION = 1

_U32 = 2**32
_MAX_ROW = 16384  # the largest n
_MAX_PATH = 14  # log2 of the largest n
_MAX_TOP_PROOF = 32  # tree of at most 2^32 leaves
_MAX_ENTRIES = 1 << 22  # a bound on list lengths, far above any real k


class ProofFormatError(ValueError):
    """Openings or a proof file that does not follow the documented layout."""


@dataclass(frozen=True)
class RowOpening:
    row: bytes  # n bytes, int8 two's complement
    path: tuple[bytes, ...]  # log2(n) siblings from the row node to d_s, bottom-up


@dataclass(frozen=True)
class DigestOpening:
    digest: bytes  # d_s
    proof: tuple[bytes, ...]  # RFC 9162 inclusion proof of L_s against R, bottom-up


@dataclass(frozen=True)
class Openings:
    samples: tuple[tuple[int, int], ...]  # (t, i) of each sample, in order
    digests: Mapping[int, DigestOpening]  # keyed by state index s
    rows: Mapping[tuple[int, int], RowOpening]  # keyed by (s, i)


@dataclass(frozen=True)
class ProofFile:
    params: ChallengeParams
    k: int
    root: bytes
    d_T: bytes
    reveal: bytes
    openings: Openings


def needed_keys(t: int, i: int, n: int, digests: Mapping[int, bytes] | list[bytes]) -> tuple[list[int], list[tuple[int, int]]]:
    """The digest indices and row keys that sample ``(t, i)`` needs.

    ``digests`` must hold ``d_{t-1}`` when ``t >= 1`` (the references depend on it). Rows come in
    role order: ``X_t[i]``, ``X_{t+1}[i]``, then the four references.
    """
    d_prev = digests[t - 1] if t >= 1 else None
    refs = band_refs(d_prev, t, n, band_of(i, n))
    ds = [t, t + 1] + ([t - 1] if t >= 1 else []) + [j for j, _ in refs]
    rows = [(t, i), (t + 1, i)] + [(j, (i + o) % n) for j, o in refs]
    return ds, rows


def build_openings(trace: Trace, reveal: bytes, k: int) -> Openings:
    """Everything the verifier needs for the ``k`` samples that ``reveal`` selects."""
    params = trace.params
    n, T = params.n, params.T
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    samples = derive_samples(trace.root, reveal, k, T, n)
    get_top = getattr(trace, "top_levels", None)
    top_levels = get_top() if callable(get_top) else merkle.build_levels(merkle.top_leaves(trace.digests))
    row_levels: dict[int, list[np.ndarray]] = {}
    digests: dict[int, DigestOpening] = {}
    rows: dict[tuple[int, int], RowOpening] = {}
    for t, i in samples:
        ds, rks = needed_keys(t, i, n, trace.digests)
        for s in ds:
            if s not in digests:
                digests[s] = DigestOpening(trace.digests[s], tuple(merkle.top_proof(top_levels, s)))
        for s, ri in rks:
            if (s, ri) in rows:
                continue
            if s not in row_levels:
                row_levels[s] = merkle.pow2_levels(np.asarray(trace.row_nodes(s), dtype=np.uint8))
            rows[(s, ri)] = RowOpening(trace.row(s, ri), tuple(merkle.pow2_path(row_levels[s], ri)))
    return Openings(
        samples=tuple(samples),
        digests=dict(sorted(digests.items())),
        rows=dict(sorted(rows.items())),
    )


# --- encoding -----------------------------------------------------------------------------------


def _openings_obj(op: Openings) -> dict[str, Any]:
    return {
        "v": OPENINGS_VERSION,
        "samples": [[int(t), int(i)] for t, i in op.samples],
        "digests": [[int(s), d.digest, list(d.proof)] for s, d in sorted(op.digests.items())],
        "rows": [[int(s), int(i), r.row, list(r.path)] for (s, i), r in sorted(op.rows.items())],
    }


def encode_openings(op: Openings) -> bytes:
    return msgpack.packb(_openings_obj(op), use_bin_type=True)


def encode_proof_file(pf: ProofFile) -> bytes:
    p = pf.params
    obj = {
        "format": PROOF_FORMAT,
        "v": PROOF_VERSION,
        "params": {
            "seed": bytes(p.seed),
            "validator": bytes(p.validator),
            "executor": bytes(p.executor),
            "n": p.n,
            "T": p.T,
            "m": p.m,
            "k": pf.k,
        },
        "commitment": {"root": pf.root, "d_T": pf.d_T},
        "reveal": pf.reveal,
        "openings": _openings_obj(pf.openings),
    }
    return msgpack.packb(obj, use_bin_type=True)


# --- strict decoding ------------------------------------------------------------------------------


def _no_dup_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, val in pairs:
        if key in out:
            raise ProofFormatError(f"duplicate map key {key!r}")
        out[key] = val
    return out


def _unpack(raw: bytes, what: str) -> Any:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ProofFormatError(f"{what}: expected bytes, got {type(raw).__name__}")
    try:
        return msgpack.unpackb(
            bytes(raw),
            raw=False,
            use_list=True,
            strict_map_key=True,
            object_pairs_hook=_no_dup_pairs,
        )
    except ProofFormatError:
        raise
    except msgpack.ExtraData:
        raise ProofFormatError(f"{what}: trailing bytes after the msgpack object") from None
    except Exception as exc:  # msgpack raises several unrelated types on malformed input
        raise ProofFormatError(f"{what}: not valid msgpack ({type(exc).__name__}: {exc})") from None


def _map(obj: Any, keys: set[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ProofFormatError(f"{where}: expected a map, got {type(obj).__name__}")
    got = set(obj)
    if got != keys:
        missing, extra = sorted(keys - got), sorted(map(str, got - keys))
        raise ProofFormatError(f"{where}: wrong keys (missing {missing}, unexpected {extra})")
    return obj


def _list(obj: Any, where: str, length: int | None = None, max_len: int = _MAX_ENTRIES) -> list[Any]:
    if not isinstance(obj, list):
        raise ProofFormatError(f"{where}: expected an array, got {type(obj).__name__}")
    if length is not None and len(obj) != length:
        raise ProofFormatError(f"{where}: expected {length} elements, got {len(obj)}")
    if len(obj) > max_len:
        raise ProofFormatError(f"{where}: {len(obj)} elements, at most {max_len} allowed")
    return obj


def _uint(obj: Any, where: str, limit: int = _U32) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int):
        raise ProofFormatError(f"{where}: expected an unsigned integer, got {type(obj).__name__}")
    if not 0 <= obj < limit:
        raise ProofFormatError(f"{where}: {obj} out of range 0..{limit - 1}")
    return obj


def _bin(obj: Any, where: str, length: int | None = None, max_len: int | None = None) -> bytes:
    if not isinstance(obj, bytes):
        raise ProofFormatError(f"{where}: expected bin, got {type(obj).__name__}")
    if length is not None and len(obj) != length:
        raise ProofFormatError(f"{where}: expected {length} bytes, got {len(obj)}")
    if max_len is not None and len(obj) > max_len:
        raise ProofFormatError(f"{where}: {len(obj)} bytes, at most {max_len} allowed")
    return obj


def _hashes(obj: Any, where: str, max_len: int) -> tuple[bytes, ...]:
    lst = _list(obj, where, max_len=max_len)
    return tuple(_bin(h, f"{where}[{x}]", 32) for x, h in enumerate(lst))


def _openings_from_obj(obj: Any, where: str = "openings") -> Openings:
    o = _map(obj, {"v", "samples", "digests", "rows"}, where)
    if _uint(o["v"], f"{where}.v") != OPENINGS_VERSION:
        raise ProofFormatError(f"{where}.v: unsupported version {o['v']}")
    samples = []
    for x, pair in enumerate(_list(o["samples"], f"{where}.samples")):
        p = _list(pair, f"{where}.samples[{x}]", 2)
        samples.append((_uint(p[0], f"{where}.samples[{x}].t"), _uint(p[1], f"{where}.samples[{x}].i")))
    digests: dict[int, DigestOpening] = {}
    last = -1
    for x, ent in enumerate(_list(o["digests"], f"{where}.digests")):
        e = _list(ent, f"{where}.digests[{x}]", 3)
        s = _uint(e[0], f"{where}.digests[{x}].s")
        if s <= last:
            raise ProofFormatError(f"{where}.digests[{x}]: state {s} not strictly increasing")
        last = s
        digests[s] = DigestOpening(
            _bin(e[1], f"{where}.digests[{x}].digest", 32),
            _hashes(e[2], f"{where}.digests[{x}].proof", _MAX_TOP_PROOF),
        )
    rows: dict[tuple[int, int], RowOpening] = {}
    last_key = (-1, -1)
    for x, ent in enumerate(_list(o["rows"], f"{where}.rows")):
        e = _list(ent, f"{where}.rows[{x}]", 4)
        key = (_uint(e[0], f"{where}.rows[{x}].s"), _uint(e[1], f"{where}.rows[{x}].i"))
        if key <= last_key:
            raise ProofFormatError(f"{where}.rows[{x}]: key {key} not strictly increasing")
        last_key = key
        rows[key] = RowOpening(
            _bin(e[2], f"{where}.rows[{x}].row", max_len=_MAX_ROW),
            _hashes(e[3], f"{where}.rows[{x}].path", _MAX_PATH),
        )
    return Openings(samples=tuple(samples), digests=digests, rows=rows)


def decode_openings(raw: bytes) -> Openings:
    """Strict inverse of :func:`encode_openings`; raises :class:`ProofFormatError`."""
    return _openings_from_obj(_unpack(raw, "openings"))


def decode_proof_file(raw: bytes) -> ProofFile:
    """Strict inverse of :func:`encode_proof_file`; raises :class:`ProofFormatError`."""
    top = _map(_unpack(raw, "proof file"), {"format", "v", "params", "commitment", "reveal", "openings"}, "proof file")
    if top["format"] != PROOF_FORMAT:
        raise ProofFormatError(f"proof file: format is {top['format']!r}, expected {PROOF_FORMAT!r}")
    if _uint(top["v"], "v") != PROOF_VERSION:
        raise ProofFormatError(f"proof file: unsupported version {top['v']}")
    p = _map(top["params"], {"seed", "validator", "executor", "n", "T", "m", "k"}, "params")
    try:
        params = ChallengeParams(
            seed=_bin(p["seed"], "params.seed", 32),
            validator=_bin(p["validator"], "params.validator", 32),
            executor=_bin(p["executor"], "params.executor", 32),
            n=_uint(p["n"], "params.n"),
            T=_uint(p["T"], "params.T"),
            m=_uint(p["m"], "params.m"),
        )
    except ValueError as exc:
        if isinstance(exc, ProofFormatError):
            raise
        raise ProofFormatError(f"params: {exc}") from None
    k = _uint(p["k"], "params.k")
    if k < 1:
        raise ProofFormatError("params.k: must be >= 1")
    c = _map(top["commitment"], {"root", "d_T"}, "commitment")
    return ProofFile(
        params=params,
        k=k,
        root=_bin(c["root"], "commitment.root", 32),
        d_T=_bin(c["d_T"], "commitment.d_T", 32),
        reveal=_bin(top["reveal"], "reveal", 32),
        openings=_openings_from_obj(top["openings"]),
    )
