"""Loading the CUDA sources of kernels/ through cupy.RawModule (NVRTC), compiled once per device.

CuPy keeps its own on-disk cache of NVRTC output (~/.cupy/kernel_cache), so a second process
starts without recompiling; this module adds the in-process cache keyed by (file, device, arch).
The CUTLASS step is a host library, loaded by node/gpu/cutlass_step.py; the bench-only kernels
(step_mma.cu, step_wgmma.cu) are loaded by node/gpu/experimental.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cupy as cp

from node.resources import shipped_path

__all__ = ["KERNEL_DIR", "PowKernels", "arch", "load_module", "pow_kernels"]

KERNEL_DIR = shipped_path("kernels", "common.cuh").parent  # package data (node/resources.py): works from a wheel

_modules: dict[tuple[str, int, str], Any] = {}


def arch(device_id: int) -> str:
    return str(cp.cuda.Device(device_id).compute_capability)  # "90" on Hopper


def load_module(name: str, device_id: int, extra: tuple[str, ...] = ()) -> Any:
    """The RawModule of kernels/<name>.cu for ``device_id`` (compiled on first use)."""
    cc = arch(device_id)
    key = (name, device_id, cc + "|" + " ".join(extra))
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
    """Every RawKernel the production engine launches, for one device."""

    philox_stream: Any
    step_prep: Any
    epilogue: Any
    row_nodes: Any
    merkle_reduce: Any
    transpose_i8: Any


_kernels: dict[int, PowKernels] = {}


def pow_kernels(device_id: int) -> PowKernels:
    k = _kernels.get(device_id)
    if k is not None:
        return k
    mod = load_module("pow", device_id)
    k = PowKernels(
        philox_stream=mod.get_function("philox_stream"),
        step_prep=mod.get_function("step_prep"),
        epilogue=mod.get_function("epilogue"),
        row_nodes=mod.get_function("row_nodes"),
        merkle_reduce=mod.get_function("merkle_reduce"),
        transpose_i8=mod.get_function("transpose_i8"),
    )
    _kernels[device_id] = k
    return k
