"""Facts about a local GPU, read through NVML (nvidia-ml-py) when importable, else the CUDA runtime.

Never by parsing nvidia-smi text. The CUDA device id is mapped to NVML by PCI bus id, so
CUDA_VISIBLE_DEVICES reordering cannot attach one GPU's UUID to another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["GpuFacts", "gpu_facts", "all_gpu_facts"]


@dataclass(frozen=True)
class GpuFacts:
    device_id: int
    model: str
    uuid: str  # "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
    pci_bus_id: str  # "00000000:19:00.0" (NVML's form, domain of 8 hex digits)
    memory_bytes: int
    driver_version: str
    cuda_version: str  # the driver's CUDA version, "13.0"
    sm_count: int
    compute_capability: str  # "90"
    source: str  # "nvml" or "cuda-runtime"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _uuid_from_bytes(raw: bytes) -> str:
    h = raw.hex()
    return f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _norm_bus_id(bus: str) -> str:
    """cudaDeviceGetPCIBusId gives "0000:19:00.0"; NVML "00000000:19:00.0": use NVML's form."""
    bus = bus.strip().upper()
    dom, _, rest = bus.partition(":")
    return f"{int(dom, 16):08X}:{rest}"


def _version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def gpu_facts(device_id: int) -> GpuFacts:
    import cupy as cp

    rt = cp.cuda.runtime
    props = rt.getDeviceProperties(device_id)
    bus = _norm_bus_id(rt.deviceGetPCIBusId(device_id))
    cc = f"{props['major']}{props['minor']}"
    cuda_version = _version(rt.driverGetVersion())
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        try:
            h = pynvml.nvmlDeviceGetHandleByPciBusId(bus.encode())
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            return GpuFacts(
                device_id=device_id,
                model=_s(pynvml.nvmlDeviceGetName(h)),
                uuid=_s(pynvml.nvmlDeviceGetUUID(h)),
                pci_bus_id=_s(pynvml.nvmlDeviceGetPciInfo(h).busId),
                memory_bytes=int(mem.total),
                driver_version=_s(pynvml.nvmlSystemGetDriverVersion()),
                cuda_version=_version(pynvml.nvmlSystemGetCudaDriverVersion()),
                sm_count=int(props["multiProcessorCount"]),
                compute_capability=cc,
                source="nvml",
            )
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no nvidia-ml-py, or NVML unusable here: the CUDA runtime knows enough
        pass
    raw_uuid = props.get("uuid", b"")
    uuid = _uuid_from_bytes(bytes(raw_uuid)) if raw_uuid else f"GPU-BUS-{bus}"
    return GpuFacts(
        device_id=device_id,
        model=_s(props["name"]),
        uuid=uuid,
        pci_bus_id=bus,
        memory_bytes=int(props["totalGlobalMem"]),
        driver_version=cuda_version,
        cuda_version=cuda_version,
        sm_count=int(props["multiProcessorCount"]),
        compute_capability=cc,
        source="cuda-runtime",
    )


def all_gpu_facts() -> list[GpuFacts]:
    import cupy as cp

    return [gpu_facts(d) for d in range(cp.cuda.runtime.getDeviceCount())]
