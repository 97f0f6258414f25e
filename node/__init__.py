"""gpow: a peer-to-peer network that proves GPUs are real."""

__version__ = "0.1.0"
