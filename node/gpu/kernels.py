"""Loading the CUDA sources of kernels/ through cupy.RawModule (NVRTC), compiled once per device.

CuPy keeps its own on-disk cache of NVRTC output (~/.cupy/kernel_cache), so a second process
starts without recompiling; this module adds the in-process cache keyed by (file, device, arch).
GPOW_NO_WGMMA=1 in the environment leaves the Hopper-only kernel unbuilt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import cupy as cp

from node.resources import shipped_path

__all__ = ["KERNEL_DIR", "PowKernels", "load_module", "pow_kernels", "FUSED_SMEM_BYTES", "FUSED_TILE",
           "WGMMA_TILE_M", "WGMMA_TILE_N", "WGMMA_SMEM_BYTES", "WGMMA_LBO", "WGMMA_SBO"]

KERNEL_DIR = shipped_path("kernels", "common.cuh").parent  # package data (node/resources.py): works from a wheel

# Must match kernels/step_mma.cu: STAGES * (BM + BN) * PITCH bytes of dynamic shared memory.
FUSED_TILE = 128
FUSED_SMEM_BYTES = 4 * (128 + 128) * 80
# kernels/step_wgmma.cu: 128 x 256 tiles, STAGES * (BM + BN) * BK bytes; its core-matrix strides.
WGMMA_TILE_M, WGMMA_TILE_N, WGMMA_BK = 128, 256, 128
WGMMA_SMEM_BYTES = 4 * (128 + 256) * 128
WGMMA_LBO, WGMMA_SBO = 128, (128 // 16) * 128

_modules: dict[tuple[str, int, str], Any] = {}


def _arch(device_id: int) -> str:
    return str(cp.cuda.Device(device_id).compute_capability)  # "90" on Hopper


def load_module(name: str, device_id: int, extra: tuple[str, ...] = ()) -> Any:
    """The RawModule of kernels/<name>.cu for ``device_id`` (compiled on first use)."""
    arch = _arch(device_id)
    key = (name, device_id, arch + "|" + " ".join(extra))
    mod = _modules.get(key)
    if mod is None:
        src = (KERNEL_DIR / "common.cuh").read_text() + "\n" + (KERNEL_DIR / f"{name}.cu").read_text()
        with cp.cuda.Device(device_id):
            mod = cp.RawModule(code=src, options=("-std=c++17",) + extra)
            mod.compile()
        _modules[key] = mod
    return mod


@dataclass
class PowKernels:
    """Every kernel the engine launches, for one device."""

    philox_stream: Any
    step_prep: Any
    epilogue: Any
    epilogue_rows: Any
    row_nodes: Any
    merkle_reduce: Any
    transpose_i8: Any
    step_mma: Any | None  # None where the device has no int8 mma.sync (before sm_80)
    step_wgmma: Any | None  # None except on sm_90 (Hopper), built for sm_90a


_kernels: dict[int, PowKernels] = {}


def pow_kernels(device_id: int) -> PowKernels:
    k = _kernels.get(device_id)
    if k is not None:
        return k
    mod = load_module("pow", device_id)
    fused = None
    if int(_arch(device_id)) >= 80:
        fm = load_module("step_mma", device_id)
        fused = fm.get_function("step_mma")
        fused.max_dynamic_shared_size_bytes = FUSED_SMEM_BYTES
    wg = None
    if _arch(device_id) == "90" and not os.environ.get("GPOW_NO_WGMMA"):
        try:
            wm = load_module("step_wgmma", device_id, ("-arch=sm_90a",))
            wg = wm.get_function("step_wgmma")
            wg.max_dynamic_shared_size_bytes = WGMMA_SMEM_BYTES
        except Exception:  # an NVRTC without sm_90a: the other variants remain
            wg = None
    k = PowKernels(
        philox_stream=mod.get_function("philox_stream"),
        step_prep=mod.get_function("step_prep"),
        epilogue=mod.get_function("epilogue"),
        epilogue_rows=mod.get_function("epilogue_rows"),
        row_nodes=mod.get_function("row_nodes"),
        merkle_reduce=mod.get_function("merkle_reduce"),
        transpose_i8=mod.get_function("transpose_i8"),
        step_mma=fused,
        step_wgmma=wg,
    )
    _kernels[device_id] = k
    return k
