"""The element mixer of spec pow-v1 section 2: a 32-bit integer hash whose low byte is the output.

``mix(v)``: take v as uint32, ``u ^= u >> 16; u *= 0x7FEB352D; u ^= u >> 15; u *= 0x846CA68B;
u ^= u >> 16`` (products mod 2^32); the result is the low byte of u read as int8.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIX_M1", "MIX_M2", "mix", "mix_scalar"]

MIX_M1 = 0x7FEB352D
MIX_M2 = 0x846CA68B
_MASK32 = 0xFFFFFFFF


def mix_scalar(v: int) -> int:
    """Reference scalar mix: any Python int (taken mod 2^32) -> int8 value in -128..127."""
    u = v & _MASK32
    u ^= u >> 16
    u = (u * MIX_M1) & _MASK32
    u ^= u >> 15
    u = (u * MIX_M2) & _MASK32
    u ^= u >> 16
    b = u & 0xFF
    return b - 256 if b >= 128 else b


def mix(v: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Vectorised mix over an integer array (int32/uint32 used as is, wider types reduced mod 2^32).

    Returns an int8 array of the same shape (written into ``out`` when given). uint32 numpy
    multiplication wraps mod 2^32, which is exactly the spec's arithmetic. The input is not modified.
    """
    a = np.asarray(v)
    if a.dtype == np.uint32:
        u = a.copy()
    elif a.dtype == np.int32:
        u = a.view(np.uint32).copy()
    else:
        u = (a.astype(np.int64) & _MASK32).astype(np.uint32)
    u ^= u >> np.uint32(16)
    u *= np.uint32(MIX_M1)
    u ^= u >> np.uint32(15)
    u *= np.uint32(MIX_M2)
    u ^= u >> np.uint32(16)
    low = u.astype(np.uint8).view(np.int8)
    if out is not None:
        out[...] = low
        return out
    return low
