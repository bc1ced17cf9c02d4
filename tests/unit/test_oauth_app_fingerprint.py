"""An OAuth app's fingerprint is an HMAC under a secret key: an OAuthApps without one is
refused (the unkeyed hash of a client secret could be guessed offline)."""

from __future__ import annotations

from typing import Any

import pytest

from mailvia.domain.channel import Provider
from mailvia.domain.oauth import AppSource, OAuthApp
from mailvia.outbox.oauth.apps import OAuthApps

APP = OAuthApp(Provider.GOOGLE, "client", "secret", None, AppSource.OPERATOR)


def apps(**key: Any) -> OAuthApps:
    return OAuthApps(None, None, operator={}, **key)  # type: ignore[arg-type]


def test_the_fingerprint_key_is_required_and_not_empty() -> None:
    with pytest.raises(TypeError):
        apps()
    with pytest.raises(ValueError, match="secret key"):
        apps(fingerprint_key=b"")


def test_the_fingerprint_depends_on_the_key() -> None:
    one, two = apps(fingerprint_key=b"k1" * 16), apps(fingerprint_key=b"k2" * 16)
    assert one.fingerprint(APP) == one.fingerprint(APP) != two.fingerprint(APP)
