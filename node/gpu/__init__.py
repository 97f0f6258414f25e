"""The CuPy GPU engine of spec pow-v1: kernels from kernels/*.cu, pool on the device, NVML facts.

Imports only numpy, cupy and node.pow (the CLI entry of ``attest`` also signs with node.identity).
"""
