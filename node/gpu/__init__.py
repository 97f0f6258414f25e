"""The CuPy GPU engine of spec pow-v1: kernels from kernels/*.cu, pool on the device, NVML facts.

engine.py is what a node runs (CUTLASS fused step on Hopper where measured faster, else cuBLAS +
epilogue); experimental.py holds the bench-only variants that bench.py and the tests time.
Imports only numpy, cupy, ctypes (the CUTLASS step library), node.resources and node.pow (the CLI
entry of ``attest`` also signs with node.identity).
"""
