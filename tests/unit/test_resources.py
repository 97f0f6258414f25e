"""Shipped files (GPU profiles, CUDA sources) are found through the package, and are the very files
of the top-level configs/ and kernels/ directories (node/_shipped links to them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.resources import ResourceError, kernel_source, profiles_path, shipped

REPO = Path(__file__).resolve().parents[2]
SOURCE_SUFFIXES = (".cu", ".cuh", ".h", ".hpp")  # kernel sources (built libraries are not sources)


def kernel_sources() -> list[Path]:
    return sorted(p for p in (REPO / "kernels").iterdir() if p.suffix in SOURCE_SUFFIXES)


def test_profiles_and_kernels_are_the_top_level_files():
    assert profiles_path().read_bytes() == (REPO / "configs" / "gpu_profiles.toml").read_bytes()
    for src in kernel_sources():
        assert kernel_source(src.name) == src.read_text(), src.name


def test_packaging_lists_every_shipped_kind_of_file():
    """pyproject's package-data globs must cover every file in kernels/ (a new suffix would be left out of the wheel)."""
    text = (REPO / "pyproject.toml").read_text()
    for src in kernel_sources():
        assert f'"_shipped/kernels/*{src.suffix}"' in text, src.name
    assert '"_shipped/configs/*.toml"' in text


def test_a_missing_file_names_itself():
    with pytest.raises(ResourceError, match="kernels/nope.cu is missing"):
        shipped("kernels", "nope.cu")
