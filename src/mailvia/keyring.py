"""The master key in use: opened and checked against the stored secrets (fail closed), and
rotated by re-wrapping every secret's data key under a new master key.

Rotation is crash-safe: the new key is written beside the old one (`master.key.new`, 0600)
before the database changes, and renamed over it after; a start that finds the secrets
sealed under the `.new` key finishes the rename.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from mailvia.domain.errors import InvalidInput, SecretsUnavailable
from mailvia.secrets import Vault, encode_key, load_master_key, new_master_key
from mailvia.settings import Settings
from mailvia.store import SqlStore


def pending_path(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + ".new")


def open_vault(store: SqlStore, settings: Settings, *, create: bool) -> Vault:
    """The vault for the configured master key; raises SecretsUnavailable when it does not
    open the stored secrets (mailvia refuses to start with a wrong key)."""
    vault = Vault(
        load_master_key(key=settings.master_key, key_file=settings.key_file, create=create)
    )
    sealed = [(f"channel {cid}", blob) for cid, blob in store.channel_secrets()]
    sealed += [(f"webhook {wid}", blob) for wid, blob in store.webhook_secrets()]
    sealed += [(f"OAuth {kind} {key}", blob) for kind, key, blob in store.oauth_secrets()]
    if all(vault.owns(blob) for _, blob in sealed):
        return vault
    pending = pending_path(settings.key_file)
    if settings.master_key is None and pending.exists():
        candidate = Vault(load_master_key(key=None, key_file=pending, create=False))
        if all(candidate.owns(blob) for _, blob in sealed):
            os.replace(pending, settings.key_file)  # finish an interrupted rotation
            return candidate
    owner = next(name for name, blob in sealed if not vault.owns(blob))
    raise SecretsUnavailable(
        f"the master key does not open the stored secrets ({owner}); "
        "mailvia will not start with a wrong key"
    )


def rotate(store: SqlStore, vault: Vault, settings: Settings) -> Path:
    """Re-wrap every stored secret under a new master key and install it in the key file.
    Returns the key file. Raises InvalidInput when the key comes from MAILVIA_MASTER_KEY."""
    if settings.master_key is not None:
        raise InvalidInput(
            "the master key is given by MAILVIA_MASTER_KEY: rotate with a key file "
            "(MAILVIA_MASTER_KEY_FILE), then move the new key to where you keep it"
        )
    new = new_master_key()
    pending = pending_path(settings.key_file)
    fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(encode_key(new) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    new_vault = Vault(new)
    store.replace_secrets(
        [(cid, vault.rewrap(blob, new_vault)) for cid, blob in store.channel_secrets()],
        [(wid, vault.rewrap(blob, new_vault)) for wid, blob in store.webhook_secrets()],
        [(kind, key, vault.rewrap(blob, new_vault)) for kind, key, blob in store.oauth_secrets()],
    )
    os.replace(pending, settings.key_file)
    return settings.key_file


def derived_key(settings: Settings, purpose: bytes) -> bytes:
    """A key for one purpose, derived from the master key (every process agrees on it;
    rotating the master key changes it)."""
    master = load_master_key(key=settings.master_key, key_file=settings.key_file, create=False)
    return hmac.new(master, purpose, hashlib.sha256).digest()
