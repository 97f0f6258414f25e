"""Errors of the composition root that the runner turns into one line for the user."""


class NodeStartError(Exception):
    """The node cannot start as configured; the message says what to change."""


class GpuUnavailable(NodeStartError):
    """A GPU engine was asked for and no usable CUDA device is there (exit code 3, not 2)."""
