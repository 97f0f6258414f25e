"""Files the package ships beside its code: the GPU profiles and the CUDA kernel sources.

They live at the top of the repository (``configs/``, ``kernels/``) and reach the package through
``node/_shipped/``, whose entries are links to those directories. ``pyproject.toml`` lists them as
package data, so a wheel carries copies at the same place inside the package; one lookup through
``importlib.resources`` then serves a checkout, an editable install and a wheel alike.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

_SHIPPED = "_shipped"


class ResourceError(Exception):
    """A shipped file is missing: the installation is incomplete (the message says which file)."""


def shipped(*parts: str) -> Traversable:
    """The shipped file ``parts`` (e.g. ``shipped("kernels", "pow.cu")``); raises if it is absent."""
    res = files("node").joinpath(_SHIPPED, *parts)
    if not res.is_file():
        raise ResourceError(
            f"{'/'.join(parts)} is missing from this gpow installation ({res}); "
            "reinstall the package (pip install --force-reinstall gpow-node)"
        )
    return res


def shipped_path(*parts: str) -> Path:
    """As ``shipped`` but a file system path, for readers that open files by path. Wheels installed
    by pip are unpacked on disk, so this is the file itself, never a temporary copy."""
    res = shipped(*parts)
    if not isinstance(res, Path):
        raise ResourceError(f"{'/'.join(parts)}: gpow must be installed unpacked (not run from a zip archive)")
    return res


def profiles_path() -> Path:
    """configs/gpu_profiles.toml: the expected step time per GPU model and matrix size."""
    return shipped_path("configs", "gpu_profiles.toml")


def kernel_source(name: str) -> str:
    """The text of kernels/<name> (``common.cuh``, ``pow.cu`` ...)."""
    return shipped("kernels", name).read_text()
