"""The CUTLASS fused step (kernels/cutlass_step.cu): CUTLASS 3.x's Hopper int8 GEMM (TMA, warp-specialised
persistent mainloop) with the spec's step epilogue applied from the accumulators.

It is a host shared library, not a RawModule: CUTLASS makes the TMA descriptors of its operands in
host code (cuTensorMapEncodeTiled), which a CuPy RawKernel cannot run. ctypes calls its one entry
on CuPy's stream with CuPy's device pointers. Where it comes from, first that works:

1. ``GPOW_CUTLASS_LIB``: a library built elsewhere (path);
2. the library shipped beside the kernel sources (``kernels/libgpow_cutlass_sm90a.so``), if it was
   built from the current sources (it reports the SHA-256 of the sources it was built from);
3. a build with ``nvcc`` and the CUTLASS headers of the ``nvidia-cutlass`` wheel (or ``CUTLASS_PATH``)
   into ``~/.cache/gpow`` (about a minute, once per source version).

Only Hopper (sm_90) runs it. ``GPOW_NO_CUTLASS=1`` leaves it out. When it is unavailable the engine
uses cuBLAS + the epilogue kernel and says so in one log line.

    python -m node.gpu.cutlass_step --build      rebuild the shipped library (needs nvcc and CUTLASS)
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from node.resources import shipped_path

__all__ = [
    "SHIPPED_LIB",
    "VARIANT_NAMES",
    "CutlassStep",
    "CutlassUnavailable",
    "build_library",
    "load_cutlass",
    "source_hash",
]

log = logging.getLogger("gpow.gpu")

KERNEL_DIR = shipped_path("kernels", "common.cuh").parent  # package data (node/resources.py)
SOURCES = ("cutlass_step.cu", "common.cuh")
SHIPPED_LIB = KERNEL_DIR / "libgpow_cutlass_sm90a.so"
# Index -> (schedule, tile M x N x K, cluster): must match the switch in kernels/cutlass_step.cu.
VARIANT_NAMES = (
    "pp128x128c1-staged",
    "pp128x128c2x1-staged",
    "pp128x128c1x2-staged",
    "pp128x128c2x1-direct",
    "co128x256c1x2-direct",
    "pp128x128c1-staged1",
    "pp128x128c1-staged2",
)


class CutlassUnavailable(Exception):
    """No usable CUTLASS step library on this host (the message says why)."""


def source_hash() -> str:
    """SHA-256 over the sources the library is built from (kernels/cutlass_step.cu, common.cuh)."""
    h = hashlib.sha256()
    for name in SOURCES:
        h.update((KERNEL_DIR / name).read_bytes())
    return h.hexdigest()


def _cutlass_include() -> Path | None:
    env = os.environ.get("CUTLASS_PATH")
    if env:
        return Path(env) / "include"
    try:
        import cutlass_library  # the nvidia-cutlass wheel
    except ImportError:
        return None
    inc = Path(cutlass_library.__file__).parent / "source" / "include"
    return inc if inc.is_dir() else None


def build_library(out: Path, nvcc: str | None = None) -> Path:
    """Compile kernels/cutlass_step.cu into the shared library ``out`` (sm_90a)."""
    nvcc = nvcc or shutil.which("nvcc")
    inc = _cutlass_include()
    if nvcc is None or inc is None:
        raise CutlassUnavailable(
            f"cannot build: nvcc {'found' if nvcc else 'missing'}, CUTLASS headers "
            f"{'found' if inc else 'missing (pip install nvidia-cutlass, or set CUTLASS_PATH)'}"
        )
    util = inc.parent / "tools" / "util" / "include"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.so")
    cmd = [
        nvcc,
        "-std=c++17",
        "-O3",
        "-DNDEBUG",
        "-gencode",
        "arch=compute_90a,code=sm_90a",
        "--expt-relaxed-constexpr",
        "-Xcompiler",
        "-fPIC",
        "-shared",
        f'-DGPOW_SOURCE_HASH="{source_hash()}"',
        f"-I{inc}",
        f"-I{util}",
        f"-I{KERNEL_DIR}",
        "-o",
        str(tmp),
        str(KERNEL_DIR / "cutlass_step.cu"),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise CutlassUnavailable(f"nvcc failed ({res.returncode}): {res.stderr[-2000:]}")
    tmp.replace(out)
    return out


class CutlassStep:
    """The loaded library: ``step(...)`` enqueues one fused step (or the bare product) on a stream."""

    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self._lib = lib
        self.path = path
        f = lib.gpow_cutlass_step
        f.restype = ctypes.c_int
        f.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 7 + [ctypes.c_int] * 4 + [ctypes.c_void_p]
        self._step = f
        tm, tn = (ctypes.c_int * 8)(), (ctypes.c_int * 8)()
        count = lib.gpow_cutlass_variants(tm, tn, 8)
        self.tiles = [(tm[v], tn[v]) for v in range(count)]  # rows, columns of one cluster of tiles

    def fits(self, variant: int, n: int) -> bool:
        """Whether configuration ``variant`` runs at size ``n``: its clusters of tiles divide n."""
        tm, tn = self.tiles[variant]
        return n % tm == 0 and n % tn == 0

    def step(
        self,
        variant: int,
        X: Any,
        Bt: Any,
        pool: Any,
        refs: Any,
        salt: Any,
        out: Any,
        out32: Any | None,
        sm_count: int,
        stream: Any,
        swizzle: int = 1,
        raster: int = 0,
    ) -> None:
        """X_next = the step of spec section 2 into ``out`` (int8), or the bare product into ``out32``.
        The persistent grid takes ``sm_count`` SMs and visits tiles in the order ``swizzle`` (1, 2, 4,
        8) and ``raster`` (0 CUTLASS's heuristic, 1 along M, 2 along N) give."""
        n = X.shape[0]
        rc = self._step(
            variant,
            X.data.ptr,
            Bt.data.ptr,
            pool.data.ptr if pool is not None else 0,
            refs.data.ptr if refs is not None else 0,
            salt.data.ptr if salt is not None else 0,
            out.data.ptr if out is not None else 0,
            out32.data.ptr if out32 is not None else 0,
            n,
            sm_count,
            swizzle,
            raster,
            stream.ptr,
        )
        if rc != 0:
            raise RuntimeError(f"CUTLASS step variant {variant} failed to launch (code {rc}, n={n})")


def _open(path: Path) -> CutlassStep:
    lib = ctypes.CDLL(str(path))
    lib.gpow_cutlass_source_hash.restype = ctypes.c_char_p
    got = lib.gpow_cutlass_source_hash()
    want = source_hash()
    if got is None or got.decode() != want:
        raise CutlassUnavailable(f"{path} was built from other sources ({got!r}, these are {want[:16]}...)")
    return CutlassStep(lib, path)


def load_cutlass(arch: str) -> CutlassStep:
    """The CUTLASS step library for a device of compute capability ``arch`` ("90"), or raise
    CutlassUnavailable with the reason (the caller logs it once and falls back to cuBLAS)."""
    if os.environ.get("GPOW_NO_CUTLASS"):
        raise CutlassUnavailable("GPOW_NO_CUTLASS is set")
    if arch != "90":
        raise CutlassUnavailable(f"built for sm_90a only, this device is sm_{arch}")
    reasons = []
    env = os.environ.get("GPOW_CUTLASS_LIB")
    candidates = [Path(env)] if env else []
    candidates.append(SHIPPED_LIB)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gpow" / f"libgpow_cutlass_{source_hash()[:16]}.so"
    candidates.append(cache)
    for path in candidates:
        if not path.is_file():
            continue
        try:
            return _open(path)
        except (OSError, AttributeError, CutlassUnavailable) as exc:
            reasons.append(f"{path}: {exc}")
    try:
        return _open(build_library(cache))
    except (OSError, CutlassUnavailable) as exc:
        reasons.append(str(exc))
    raise CutlassUnavailable("; ".join(reasons))


if __name__ == "__main__":
    if "--build" in sys.argv:
        print(build_library(SHIPPED_LIB))
        print("source", source_hash())
    else:
        print(__doc__)
