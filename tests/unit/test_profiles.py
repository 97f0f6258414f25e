"""GPU profiles: parsing, errors that name the file and entry, expected times, performance factor."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.app.node import default_profiles_path
from node.roles.profiles import Profile, ProfileBook, ProfileError, performance_factor

ENTRY = 'model = "{model}"\nmemory_bytes = 1000\nn = {n}\nstep_seconds = {step}\nmeasured = {measured}\nsource = "{source}"\n'


def write(tmp_path: Path, *entries: str, head: str = "") -> Path:
    p = tmp_path / "profiles.toml"
    p.write_text(head + "".join("[[profile]]\n" + e + "\n" for e in entries))
    return p


def entry(model: str = "GPU X", n: int = 4096, step: float = 0.001, measured: str = "true", source: str = "test") -> str:
    return ENTRY.format(model=model, n=n, step=step, measured=measured, source=source)


# ---- the shipped file ------------------------------------------------------------------------


def test_shipped_profiles_load_and_cover_the_required_models():
    book = ProfileBook.load(default_profiles_path())
    for model in ("NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 4090"):
        for n in (4096, 8192):
            p = book.get(model, n)
            assert p is not None, (model, n)
            assert p.memory_bytes > 16 * 2**30
    for p in book.profiles():
        # an estimate must say so; a measurement must say where it was taken
        assert p.measured or p.source.startswith("ESTIMATE"), p
        assert len(p.source) > 20
    # n^3 work: doubling n costs several times as much per step (less than 8x: the n^2 parts)
    for model in {p.model for p in book.profiles()}:
        small, big = book.get(model, 4096), book.get(model, 8192)
        if small and big:
            assert 2 < big.step_seconds / small.step_seconds < 8, model


# ---- parsing ---------------------------------------------------------------------------------


def test_load_reads_every_field(tmp_path):
    book = ProfileBook.load(write(tmp_path, entry("GPU X", 4096, 0.00025, "false", "estimate"), entry("GPU X", 8192, 0.0013)))
    assert len(book) == 2
    assert book.get("GPU X", 4096) == Profile("GPU X", 1000, 4096, 0.00025, False, "estimate")
    assert book.get("GPU X", 8192).measured is True
    assert book.get("GPU X", 2048) is None
    assert book.get("GPU Y", 4096) is None


def test_integer_step_seconds_is_accepted_as_float(tmp_path):
    book = ProfileBook.load(write(tmp_path, entry(step=1)))
    assert book.get("GPU X", 4096).step_seconds == 1.0


def test_empty_file_is_an_empty_book(tmp_path):
    book = ProfileBook.load(write(tmp_path))
    assert len(book) == 0
    assert book.expected_seconds("anything", 4096, 10) is None


@pytest.mark.parametrize(
    "text, match",
    [
        ("[[profile]]\n" + entry().replace('source = "test"\n', ""), r"profile #1 \('GPU X'\): missing key\(s\) source"),
        ("[[profile]]\n" + entry() + "colour = 1\n", r"profile #1 \('GPU X'\): unknown key\(s\) colour"),
        ("[[profile]]\n" + entry().replace("n = 4096", 'n = "4096"'), r"'GPU X'\)\.n: expected an integer"),
        ("[[profile]]\n" + entry().replace("memory_bytes = 1000", "memory_bytes = true"), r"memory_bytes: expected an integer"),
        ("[[profile]]\n" + entry(measured='"yes"'), r"measured: expected true or false"),
        ("[[profile]]\n" + entry(n=1000), r"n must be a power of two"),
        ("[[profile]]\n" + entry(n=32), r"n must be a power of two"),
        ("[[profile]]\n" + entry(step=0), r"step_seconds must be a positive number"),
        ("[[profile]]\n" + entry(step=-0.5), r"step_seconds must be a positive number"),
        ("[[profile]]\n" + entry(step="nan"), r"step_seconds must be a positive number"),
        ("[[profile]]\n" + entry(source=" "), r"source must say where"),
        ("[[profile]]\n" + entry(model=""), r"model must not be empty"),
        ("[[profile]]\n" + entry().replace("memory_bytes = 1000", "memory_bytes = -1"), r"memory_bytes must be >= 0"),
        ("[[profile]]\n" + entry() + "\n[[profile]]\n" + entry(model="gpu  x"), r"two profiles for model 'gpu  x' at n = 4096"),
        ("[profile]\nmodel = 1\n", r"'profile' must be an array of tables"),
        ("[gpu]\nx = 1\n", r"unknown top-level keys \['gpu'\]"),
        ("[[profile]\n", r"not valid TOML"),
    ],
)
def test_errors_name_the_file_and_the_entry(tmp_path, text, match):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ProfileError, match=match) as info:
        ProfileBook.load(p)
    assert str(p) in str(info.value)


def test_second_entry_error_names_its_index(tmp_path):
    p = write(tmp_path, entry("A"), entry("B", step=0))
    with pytest.raises(ProfileError, match=r"profile #2 \('B'\)"):
        ProfileBook.load(p)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ProfileError, match=r"nowhere\.toml: GPU profile file not found"):
        ProfileBook.load(tmp_path / "nowhere.toml")


# ---- expected times --------------------------------------------------------------------------


def test_expected_seconds_exact_size(tmp_path):
    book = ProfileBook.load(write(tmp_path, entry("GPU X", 4096, 0.00025), entry("GPU X", 8192, 0.0013)))
    assert book.expected_seconds("GPU X", 8192, 1000) == pytest.approx(1.3)
    assert book.expected_seconds("GPU X", 4096, 400) == pytest.approx(0.1)
    assert book.expected_seconds("GPU X", 4096, 0) == 0.0


def test_model_names_match_ignoring_case_and_spacing(tmp_path):
    book = ProfileBook.load(write(tmp_path, entry("NVIDIA H100 80GB HBM3", 8192, 0.001)))
    assert book.expected_seconds("nvidia  h100 80gb hbm3 ", 8192, 10) == pytest.approx(0.01)
    assert book.knows("NVIDIA H100 80GB HBM3")
    assert not book.knows("NVIDIA H100")


def test_unknown_model_has_no_expected_time(tmp_path):
    book = ProfileBook.load(write(tmp_path, entry("GPU X", 4096)))
    assert book.expected_seconds("GPU Y", 4096, 100) is None


def test_no_expected_time_at_an_unprofiled_size(tmp_path):
    """A profile is never scaled to another n (epilogue, hashing and launches do not grow as n^3):
    a validator gives credit only at a size the model was measured at."""
    book = ProfileBook.load(write(tmp_path, entry("GPU X", 1024, 0.001), entry("GPU X", 8192, 0.4)))
    assert book.expected_seconds("GPU X", 2048, 10) is None
    assert book.expected_seconds("GPU X", 16384, 1) is None
    assert book.expected_seconds("GPU X", 8192, 2) == pytest.approx(0.8)


def test_expected_seconds_rejects_nonsense(tmp_path):
    book = ProfileBook.load(write(tmp_path, entry()))
    with pytest.raises(ValueError):
        book.expected_seconds("GPU X", 0, 10)
    with pytest.raises(ValueError):
        book.expected_seconds("GPU X", 4096, -1)


# ---- performance factor ----------------------------------------------------------------------


def test_full_credit_up_to_the_tolerance():
    assert performance_factor(1.0, 0.0, 1.5) == 1.0
    assert performance_factor(1.0, 0.3, 1.5) == 1.0
    assert performance_factor(1.0, 1.5, 1.5) == 1.0


def test_beyond_the_limit_credit_is_relative_speed():
    assert performance_factor(1.0, 3.0, 1.5) == pytest.approx(0.5)
    assert performance_factor(2.0, 30.0, 1.5) == pytest.approx(0.1)
    assert performance_factor(1.0, math.inf, 1.5) == 0.0


@given(
    expected=st.floats(1e-6, 1e4),
    tolerance=st.floats(1.0, 10.0),
    a=st.floats(0, 1e7),
    b=st.floats(0, 1e7),
)
def test_factor_is_in_unit_range_and_never_rises_with_time(expected, tolerance, a, b):
    fa, fb = performance_factor(expected, a, tolerance), performance_factor(expected, b, tolerance)
    assert 0.0 <= fa <= 1.0
    if a <= b:
        assert fa >= fb


def test_factor_is_continuous_at_the_limit():
    limit = 1.0 * 1.5
    assert performance_factor(1.0, limit * (1 + 1e-9), 1.5) == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize(
    "expected, measured, tolerance", [(0, 1, 1.5), (-1, 1, 1.5), (1, 1, 0), (1, math.nan, 1.5), (math.inf, 1, 1.5)]
)
def test_factor_rejects_invalid_inputs(expected, measured, tolerance):
    with pytest.raises(ValueError):
        performance_factor(expected, measured, tolerance)
