"""Envelope encryption of secrets: round trip, wrong key fails closed, rotation re-wraps."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from mailvia.domain.errors import SecretsUnavailable
from mailvia.secrets import Vault, encode_key, load_master_key, new_master_key


def test_round_trip_and_no_plaintext_in_the_blob() -> None:
    vault = Vault(new_master_key())
    sealed = vault.seal(b"hunter2-password")
    assert b"hunter2" not in sealed and base64.b64encode(b"hunter2-password") not in sealed
    assert vault.open(sealed) == b"hunter2-password"
    assert vault.seal(b"same") != vault.seal(b"same")  # a fresh data key and nonce each time


def test_wrong_master_key_fails_closed() -> None:
    sealed = Vault(new_master_key()).seal(b"secret")
    with pytest.raises(SecretsUnavailable, match="another master key"):
        Vault(new_master_key()).open(sealed)


def test_tampering_is_detected() -> None:
    vault = Vault(new_master_key())
    sealed = bytearray(vault.seal(b"secret"))
    sealed[-1] ^= 1
    with pytest.raises(SecretsUnavailable):
        vault.open(bytes(sealed))


def test_rotation_rewraps_under_the_new_key() -> None:
    old, new = Vault(new_master_key()), Vault(new_master_key())
    rewrapped = old.rewrap(old.seal(b"secret"), new)
    assert new.owns(rewrapped) and not old.owns(rewrapped)
    assert new.open(rewrapped) == b"secret"


def test_key_file_created_0600_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    first = load_master_key(key=None, key_file=path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_key(key=None, key_file=path, create=True) == first
    assert load_master_key(key=encode_key(first), key_file=tmp_path / "nope", create=False) == first
    with pytest.raises(SecretsUnavailable):
        load_master_key(key=None, key_file=tmp_path / "missing", create=False)
