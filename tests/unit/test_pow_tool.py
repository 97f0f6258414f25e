"""`gpow pow prove` / `gpow pow verify`: the CLI agrees with the spec vectors, writes proof files that
verify, and reports every rejection with its exit code and named reason.

Most cases call the CLI's ``main`` in-process (fast); one test runs the real ``python -m node``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from node.app.pow_tool import EXIT_ENGINE, EXIT_INVALID, EXIT_OK, EXIT_USAGE, prove_main
from node.cli import main
from node.pow.cpu_engine import CpuEngine
from node.pow.openings import RowOpening, decode_proof_file, encode_proof_file

REPO = Path(__file__).resolve().parents[2]
VECTORS = json.loads((REPO / "tests" / "data" / "pow-v1-vectors.json").read_text())
# The n=2048 chain takes about a second to prove; the vector tests already reproduce it.
SMALL = [c for c in VECTORS["chains"] if c["n"] <= 256]


def _prove_argv(c: dict[str, Any], *extra: str) -> list[str]:
    return [
        "pow",
        "prove",
        "--seed",
        c["seed"],
        "--n",
        str(c["n"]),
        "--steps",
        str(c["T"]),
        "--b-matrices",
        str(c["m"]),
        "--validator",
        c["validator"],
        "--executor",
        c["executor"],
        *extra,
    ]


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _proof_argv(c: dict[str, Any], out: Path) -> list[str]:
    return _prove_argv(c, "--reveal", c["reveal"], "--samples", str(c["k"]), "--out", str(out), "--json")


@pytest.mark.parametrize("c", SMALL, ids=[f"n{c['n']}-T{c['T']}-m{c['m']}" for c in SMALL])
def test_prove_json_agrees_with_vectors(capsys: pytest.CaptureFixture[str], c: dict[str, Any]) -> None:
    rc, out, _ = _run(capsys, _prove_argv(c, "--json"))
    assert rc == EXIT_OK
    res = json.loads(out)
    assert res["root"] == c["root"]
    assert res["digests"] == c["digests"]
    assert res["d_T"] == c["digests"][-1]
    assert res["params"] == {
        "seed": c["seed"],
        "validator": c["validator"],
        "executor": c["executor"],
        "n": c["n"],
        "T": c["T"],
        "m": c["m"],
    }
    assert res["engine"] == "cpu" and res["seconds"] > 0
    assert "proof_file" not in res


def test_prove_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    c = SMALL[0]
    rc, out, _ = _run(capsys, _prove_argv(c))
    assert rc == EXIT_OK
    assert f"root R = {c['root']}" in out and f"d_T    = {c['digests'][-1]}" in out


@pytest.mark.parametrize("c", SMALL[:2], ids=[f"n{c['n']}" for c in SMALL[:2]])
def test_proof_file_agrees_with_vectors_and_verifies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, c: dict[str, Any]
) -> None:
    path = tmp_path / "proof.gpow"
    rc, out, _ = _run(capsys, _proof_argv(c, path))
    assert rc == EXIT_OK
    res = json.loads(out)
    assert res["samples"] == c["samples"]
    assert res["sample_commit"] == c["sample_commit"]
    assert res["k"] == c["k"] and res["reveal"] == c["reveal"]
    assert res["proof_file"] == str(path) and res["proof_bytes"] == path.stat().st_size
    pf = decode_proof_file(path.read_bytes())
    assert pf.root.hex() == c["root"] and pf.d_T.hex() == c["digests"][-1]
    assert pf.reveal.hex() == c["reveal"] and pf.k == c["k"]
    assert [list(s) for s in pf.openings.samples] == c["samples"]
    assert (pf.params.n, pf.params.T, pf.params.m) == (c["n"], c["T"], c["m"])

    rc, out, _ = _run(capsys, ["pow", "verify", str(path)])
    assert rc == EXIT_OK
    assert out.startswith(f"VALID {path}: n={c['n']} T={c['T']} m={c['m']} k={c['k']}")
    assert "rejected" not in out

    rc, out, _ = _run(capsys, ["pow", "verify", str(path), "--json"])
    assert rc == EXIT_OK
    v = json.loads(out)
    assert v["ok"] is True and v["failures"] == [] and v["root"] == c["root"] and v["k"] == c["k"]
    assert set(v["timings"]) >= {"philox", "products", "hashing", "total"}


@pytest.fixture(scope="module")
def proof_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A valid proof file of vector chain 0 (written through the CLI)."""
    path = tmp_path_factory.mktemp("proof") / "p.gpow"
    assert main(_proof_argv(SMALL[0], path)) == EXIT_OK
    return path.read_bytes()


def _tampered(raw: bytes, how: str) -> bytes:
    pf = decode_proof_file(raw)
    if how == "row":  # one byte of the first sample's X_{t+1}[i]
        t, i = pf.openings.samples[0]
        rows = dict(pf.openings.rows)
        ent = rows[(t + 1, i)]
        rows[(t + 1, i)] = RowOpening(bytes([ent.row[0] ^ 1]) + ent.row[1:], ent.path)
        return encode_proof_file(dataclasses.replace(pf, openings=dataclasses.replace(pf.openings, rows=rows)))
    if how == "reveal":
        return encode_proof_file(dataclasses.replace(pf, reveal=bytes([pf.reveal[0] ^ 1]) + pf.reveal[1:]))
    if how == "k":
        return encode_proof_file(dataclasses.replace(pf, k=pf.k + 1))
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how, check, sample",
    [
        ("row", "row-path", 0),
        ("reveal", "sample-mismatch", 0),
        ("k", "sample-count", -1),
    ],
)
def test_verify_rejects_with_named_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, proof_bytes: bytes, how: str, check: str, sample: int
) -> None:
    path = tmp_path / f"{how}.gpow"
    path.write_bytes(_tampered(proof_bytes, how))
    rc, out, _ = _run(capsys, ["pow", "verify", str(path)])
    assert rc == EXIT_INVALID
    lines = out.splitlines()
    assert lines[0].startswith(f"INVALID {path}: ")
    where = f"sample {sample}" if sample >= 0 else "proof"
    assert lines[1].startswith(f"  rejected: {where}: {check}: "), lines
    assert len(lines) == 2  # the verifier stops at the first failure

    rc, out, _ = _run(capsys, ["pow", "verify", str(path), "--json"])
    assert rc == EXIT_INVALID
    v = json.loads(out)
    assert v["ok"] is False and [(f["sample"], f["check"]) for f in v["failures"]] == [(sample, check)]


@pytest.mark.parametrize("cut", ["truncated", "trailing", "garbage", "empty"])
def test_verify_malformed_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, proof_bytes: bytes, cut: str) -> None:
    bad = {"truncated": proof_bytes[:-7], "trailing": proof_bytes + b"\x00", "garbage": bytes(range(256)) * 4, "empty": b""}[cut]
    path = tmp_path / "bad.gpow"
    path.write_bytes(bad)
    rc, out, _ = _run(capsys, ["pow", "verify", str(path)])
    assert rc == EXIT_INVALID
    assert out.startswith(f"INVALID {path}: malformed proof file: ")
    rc, out, _ = _run(capsys, ["pow", "verify", str(path), "--json"])
    assert rc == EXIT_INVALID
    v = json.loads(out)
    assert v["ok"] is False and v["failures"][0]["check"] == "format"


def test_verify_unreadable_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = _run(capsys, ["pow", "verify", str(tmp_path / "absent.gpow")])
    assert rc == EXIT_USAGE and out == ""
    assert "cannot read" in err


ZERO_HEX = "00" * 32


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--reveal", ZERO_HEX], "needs all of --reveal, --samples and --out"),
        (["--samples", "3", "--out", "x.gpow"], "needs all of --reveal, --samples and --out"),
        (["--reveal", "zz" * 32, "--samples", "3", "--out", "x.gpow"], "--reveal: not a hex string"),
        (["--reveal", "00" * 31, "--samples", "3", "--out", "x.gpow"], "--reveal: must be 32 bytes"),
        (["--reveal", ZERO_HEX, "--samples", "0", "--out", "x.gpow"], "--samples must be >= 1"),
        (["--validator", "00" * 33], "--validator: must be 32 bytes"),
    ],
)
def test_prove_usage_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, extra: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)  # a stray --out would land here, and the test checks nothing was written
    rc, out, err = _run(capsys, ["pow", "prove", "--seed", ZERO_HEX, "--n", "64", "--steps", "2", *extra])
    assert rc == EXIT_USAGE and out == ""
    assert err.startswith("gpow pow prove: ") and message in err
    assert not (tmp_path / "x.gpow").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seed", "0x" + "11" * 31, "--n", "64", "--steps", "2"], "--seed: must be 32 bytes"),
        (["--seed", ZERO_HEX, "--n", "96", "--steps", "2"], "n must be a power of two"),
        (["--seed", ZERO_HEX, "--n", "64", "--steps", "0"], "T (steps) must be >= 1"),
        (["--seed", ZERO_HEX, "--n", "64", "--steps", "2", "--b-matrices", "65"], "m (B matrices) must be in 1..64"),
    ],
)
def test_prove_bad_params(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    rc, out, err = _run(capsys, ["pow", "prove", *argv])
    assert rc == EXIT_USAGE and out == "" and message in err


def test_prove_refuses_what_does_not_fit(capsys: pytest.CaptureFixture[str]) -> None:
    """The real CPU engine with a 1 MiB budget: refused up front with exit 3, nothing printed."""
    args = argparse.Namespace(
        seed=ZERO_HEX,
        n=256,
        steps=100,
        b_matrices=1,
        engine="cpu",
        json=True,
        validator=None,
        executor=None,
        reveal=None,
        samples=None,
        out=None,
    )
    rc = prove_main(args, engine_factory=lambda kind: CpuEngine(memory_budget_bytes=1 << 20))
    out, err = capsys.readouterr()
    assert rc == EXIT_ENGINE and out == ""
    assert "refused: pool does not fit" in err and "the largest T that would fit is" in err


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="cupy is installed: the GPU engine may work")
def test_prove_gpu_engine_unavailable(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, ["pow", "prove", "--seed", ZERO_HEX, "--n", "64", "--steps", "1", "--engine", "gpu"])
    assert rc == EXIT_ENGINE and out == ""
    assert "the GPU engine is unavailable" in err


def test_real_process_prove_then_verify(tmp_path: Path) -> None:
    """`python -m node pow prove ... --out` then `python -m node pow verify` as real processes."""
    c = SMALL[0]
    path = tmp_path / "proof.gpow"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "node", *argv], cwd=REPO, env=env, text=True, capture_output=True, timeout=120
        )

    p = run(*_proof_argv(c, path))
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["root"] == c["root"] and res["samples"] == c["samples"]
    p = run("pow", "verify", str(path))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"VALID {path}")
    path.write_bytes(_tampered(path.read_bytes(), "row"))
    p = run("pow", "verify", str(path))
    assert p.returncode == 1
    assert p.stdout.startswith(f"INVALID {path}") and "rejected: sample 0: row-path: " in p.stdout


def test_docs_worked_example_matches_the_encoder(capsys: pytest.CaptureFixture[str], proof_bytes: bytes) -> None:
    """docs/proof-format.md's annotated hex is the start of vector chain 0's proof file, byte for byte."""
    doc = (REPO / "docs" / "proof-format.md").read_text()
    block = doc.split("```hex\n", 1)[1].split("```", 1)[0]
    prefix = bytes.fromhex("".join(line.split("#", 1)[0].replace(" ", "") for line in block.splitlines()))
    assert len(prefix) > 400
    assert proof_bytes.startswith(prefix)
    assert f"the file is {len(proof_bytes):,} bytes" in doc
    rows_at = proof_bytes.index(b"\xa4rows")
    assert proof_bytes[rows_at : rows_at + 10].hex() == "a4726f7773dc00269400"
