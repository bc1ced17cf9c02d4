"""Secrets at rest: envelope encryption of credentials under a master key kept outside the DB.

Each secret gets its own random data key; the secret is sealed with AES-256-GCM under that
key, and the data key is wrapped with AES-256-GCM under the master key. A sealed blob is
`b"mv1" | key_id(8) | nonce(12) | wrapped_dek(48) | nonce(12) | ciphertext+tag`. The key
id (a hash of the master key) lets a wrong master key fail closed with a clear error
instead of garbage. Rotation re-wraps only the data keys.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailvia.domain.errors import SecretsUnavailable

_MAGIC = b"mv1"
_KEY_ID = 8
_NONCE = 12
_WRAPPED = 32 + 16


class Vault:
    """Seals and opens secrets with one master key (32 bytes)."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise SecretsUnavailable("the master key must be 32 bytes (base64 in the key file)")
        self._kek = AESGCM(master_key)
        self.key_id = hashlib.sha256(b"mailvia key id" + master_key).digest()[:_KEY_ID]

    def seal(self, plaintext: bytes) -> bytes:
        dek = AESGCM.generate_key(bit_length=256)
        wrap_nonce, data_nonce = os.urandom(_NONCE), os.urandom(_NONCE)
        wrapped = self._kek.encrypt(wrap_nonce, dek, self.key_id)
        sealed = AESGCM(dek).encrypt(data_nonce, plaintext, None)
        return _MAGIC + self.key_id + wrap_nonce + wrapped + data_nonce + sealed

    def open(self, sealed: bytes) -> bytes:
        dek, rest = self._unwrap(sealed)
        try:
            return AESGCM(dek).decrypt(rest[:_NONCE], rest[_NONCE:], None)
        except InvalidTag as exc:
            raise SecretsUnavailable("a stored secret is damaged") from exc

    def rewrap(self, sealed: bytes, new: Vault) -> bytes:
        """The same secret under `new`'s master key (the ciphertext itself is unchanged)."""
        dek, rest = self._unwrap(sealed)
        wrap_nonce = os.urandom(_NONCE)
        wrapped = new._kek.encrypt(wrap_nonce, dek, new.key_id)
        return _MAGIC + new.key_id + wrap_nonce + wrapped + rest

    def owns(self, sealed: bytes) -> bool:
        """Whether this master key sealed the blob."""
        return sealed[len(_MAGIC) : len(_MAGIC) + _KEY_ID] == self.key_id

    def _unwrap(self, sealed: bytes) -> tuple[bytes, bytes]:
        if not sealed.startswith(_MAGIC) or not self.owns(sealed):
            raise SecretsUnavailable(
                "stored secrets were sealed with another master key: check "
                "MAILVIA_MASTER_KEY_FILE / MAILVIA_MASTER_KEY"
            )
        at = len(_MAGIC) + _KEY_ID
        nonce, wrapped = sealed[at : at + _NONCE], sealed[at + _NONCE : at + _NONCE + _WRAPPED]
        try:
            dek = self._kek.decrypt(nonce, wrapped, self.key_id)
        except InvalidTag as exc:
            raise SecretsUnavailable("a stored secret's key does not open") from exc
        return dek, sealed[at + _NONCE + _WRAPPED :]


def new_master_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise SecretsUnavailable("the master key is not valid base64") from exc


def load_master_key(*, key: str | None, key_file: Path, create: bool) -> bytes:
    """The master key from the setting, else the key file (created 0600 when `create`)."""
    if key:
        return decode_key(key)
    if key_file.exists():
        return decode_key(key_file.read_text())
    if not create:
        raise SecretsUnavailable(f"no master key: {key_file} does not exist")
    key_file.parent.mkdir(parents=True, exist_ok=True)
    material = new_master_key()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(encode_key(material) + "\n")
    return material
