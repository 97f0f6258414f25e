"""The one top-level handler of `gpow`: each error class gets its documented exit code and one line."""

from __future__ import annotations

import pytest

from node import cli
from node.app.config import ConfigError
from node.identity import IdentityError


def test_exit_codes_are_the_documented_ones():
    assert (cli.EXIT_OK, cli.EXIT_CHECK_FAILED, cli.EXIT_USAGE, cli.EXIT_NO_GPU, cli.EXIT_INTERNAL) == (0, 1, 2, 3, 70)
    readme = cli.__file__.rsplit("/node/", 1)[0] + "/README.md"
    text = open(readme).read()
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 70 |"):
        assert code in text, f"README's exit code table lacks {code}"


@pytest.mark.parametrize(
    "exc, code, text",
    [
        (ConfigError("c.toml: [node].log_level = 'x': expected one of"), 2, "expected one of"),
        (IdentityError("k.key is not a gpow key file"), 2, "not a gpow key file"),
        (FileNotFoundError(2, "No such file or directory", "/nope/x.toml"), 2, "No such file or directory: /nope/x.toml"),
        (ExceptionGroup("trio", [ExceptionGroup("inner", [ConfigError("deep")])]), 2, "deep"),
        (ModuleNotFoundError("No module named 'cupy'", name="cupy"), 3, "pip install 'gpow-node[gpu]'"),
        (RuntimeError("our own bug"), 70, "RuntimeError: our own bug"),
        (ModuleNotFoundError("No module named 'numpyy'", name="numpyy"), 70, "numpyy"),
    ],
)
def test_classify(exc: BaseException, code: int, text: str):
    got, message = cli.classify(exc)
    assert got == code and text in message and "\n" not in message


def test_an_internal_error_leaves_its_traceback_in_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        path = cli._report_internal("run", exc, "RuntimeError: boom")
    text = open(path).read()
    assert path.startswith(str(tmp_path)) and "Traceback" in text and "boom" in text
