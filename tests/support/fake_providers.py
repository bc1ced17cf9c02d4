"""Fake Google and Microsoft for tests: `mailvia testserver --fake-providers` in a thread.

Fixtures (registered in tests/conftest.py, so any test may ask for them):
- `fake_providers`: the HTTP fake only; `fake_providers_smtp`: plus the SMTP test server
  (`fake.smtp_url`, `fake.smtp.port`) accepting AUTH XOAUTH2 with the fake's access tokens.
Both yield a running `mailvia.testserver.fake.FakeProviders` with a maildir under tmp_path:
    fake.settings        {"MAILVIA_OAUTH_GOOGLE_AUTHORIZE_URL": "http://127.0.0.1:PORT/...", ...}
    fake.origin          "http://127.0.0.1:PORT"
    fake.requests        every provider request: at, method, path, status, provider, stage,
                         account, consent, token (fingerprint(token)), fault
    fake.received        what reached the maildir: received_at, mail_from, rcpt_to, sha256,
                         file, via ("gmail_api" | "graph" | "smtp"), account, content (bytes)
    fake.revoke(account) / fake.expire(account) / fake.refresh_counts() / fake.consents()
    fake.set_faults(["graph_send*1=429 retry-after=5", "refresh=invalid_grant"])
Helpers for driving it without mailvia (plain HTTP, no browser): `connect(fake, provider,
account)` runs the whole code flow with PKCE and returns the token response; `consent`,
`exchange` and `refresh` are its steps; `wait_received` and `wait_requests` poll with a
deadline. For a separate process use `support.cli.Cli.start("testserver", "--fake-providers",
...)` and read the `MAILVIA_...=URL` lines it prints before `listening http://...`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from mailvia.testserver.fake import FakeOptions, FakeProviders, ThreadedFakeProviders

GOOGLE_SCOPE = "openid email https://www.googleapis.com/auth/gmail.send"
GOOGLE_SMTP_SCOPE = "openid email https://mail.google.com/"
MICROSOFT_SCOPE = "openid email profile offline_access Mail.Send"
MICROSOFT_SMTP_SCOPE = "openid email offline_access https://outlook.office.com/SMTP.Send"
CLIENT_ID = "mailvia-test-client"
CLIENT_SECRET = "mailvia-test-secret"
REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"
TIMEOUT = 10.0


@dataclass(frozen=True)
class Pkce:
    """An RFC 7636 verifier and its S256 challenge."""

    verifier: str
    challenge: str


def pkce() -> Pkce:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return Pkce(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode())


def endpoint(fake: FakeProviders, provider: str, kind: str, tenant: str = "common") -> str:
    """The URL of `kind` ("authorize", "token", "jwks") as mailvia's settings name it."""
    name = f"MAILVIA_OAUTH_{provider.upper()}_{kind.upper()}_URL"
    return fake.settings[name].replace("{tenant}", tenant)


def auth_params(
    provider: str,
    pair: Pkce,
    *,
    scope: str | None = None,
    client_id: str = CLIENT_ID,
    redirect_uri: str = REDIRECT_URI,
    state: str = "st-1",
    **extra: str,
) -> dict[str, str]:
    """An authorization request's parameters (Google's get access_type=offline)."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope or (GOOGLE_SCOPE if provider == "google" else MICROSOFT_SCOPE),
        "state": state,
        "code_challenge": pair.challenge,
        "code_challenge_method": "S256",
        "nonce": "n-0S6_WzA2Mj",
    }
    if provider == "google":
        params["access_type"] = "offline"
    return {**params, **extra}


def consent(
    fake: FakeProviders,
    provider: str,
    params: dict[str, str],
    *,
    account: str,
    decision: str = "allow",
    tenant: str = "common",
) -> httpx.Response:
    """The consent page's form, posted without a browser; returns the 302 (or an error)."""
    form = {**params, "account": account, "decision": decision}
    url = endpoint(fake, provider, "authorize", tenant)
    return httpx.post(url, data=form, follow_redirects=False, timeout=TIMEOUT)


def redirect_params(response: httpx.Response) -> dict[str, str]:
    """The query parameters of a redirect's Location."""
    assert response.status_code == 302, response.text
    return dict(parse_qsl(urlsplit(response.headers["location"]).query))


def exchange(
    fake: FakeProviders,
    provider: str,
    code: str,
    verifier: str,
    *,
    client_id: str = CLIENT_ID,
    client_secret: str = CLIENT_SECRET,
    redirect_uri: str = REDIRECT_URI,
    tenant: str = "common",
) -> httpx.Response:
    """POST the authorization_code grant to the token endpoint."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": redirect_uri,
        "client_id": client_id,
        "client_secret": client_secret,
    }
    return httpx.post(endpoint(fake, provider, "token", tenant), data=form, timeout=TIMEOUT)


def refresh(
    fake: FakeProviders,
    provider: str,
    refresh_token: str,
    *,
    client_id: str = CLIENT_ID,
    client_secret: str = CLIENT_SECRET,
    tenant: str = "common",
) -> httpx.Response:
    """POST the refresh_token grant to the token endpoint."""
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": client_id,
        "client_secret": client_secret,
    }
    return httpx.post(endpoint(fake, provider, "token", tenant), data=form, timeout=TIMEOUT)


def connect(
    fake: FakeProviders,
    provider: str,
    account: str,
    *,
    scope: str | None = None,
    tenant: str = "common",
    **extra: str,
) -> dict[str, Any]:
    """The whole code flow by plain HTTP: the token response (access, refresh, id tokens)."""
    pair = pkce()
    params = auth_params(provider, pair, scope=scope, **extra)
    code = redirect_params(consent(fake, provider, params, account=account, tenant=tenant))
    response = exchange(fake, provider, code["code"], pair.verifier, tenant=tenant)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def _poll(found: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := found()):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} after {timeout}s")
        time.sleep(0.01)
    return result


def wait_received(fake: FakeProviders, count: int, timeout: float = TIMEOUT) -> list[Any]:
    """Poll until at least `count` messages reached the maildir; returns them all."""
    received: list[Any] = _poll(
        lambda: r if len(r := fake.received) >= count else None,
        f"fewer than {count} messages",
        timeout,
    )
    return received


def wait_requests(
    fake: FakeProviders, match: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
) -> list[dict[str, Any]]:
    """Poll until a logged request matches (and is answered); returns the matching ones."""
    requests: list[dict[str, Any]] = _poll(
        lambda: [r for r in fake.requests if match(r)],
        "no matching request",
        timeout,
    )
    return requests


def running(maildir: Path, **kwargs: Any) -> Iterator[FakeProviders]:
    """A started fake in a thread (keyword arguments as `FakeProviders`), stopped afterwards."""
    threaded = ThreadedFakeProviders(maildir=maildir, **kwargs)
    fake = threaded.start()
    try:
        yield fake
    finally:
        threaded.stop()


@pytest.fixture
def fake_providers(tmp_path: Path) -> Iterator[FakeProviders]:
    """The fake providers (HTTP only), with a maildir in tmp_path."""
    yield from running(tmp_path / "fake-maildir", options=FakeOptions())


@pytest.fixture
def fake_providers_smtp(tmp_path: Path) -> Iterator[FakeProviders]:
    """The fake providers plus SMTP with XOAUTH2 (no TLS: `fake.smtp_url` is smtp://...)."""
    yield from running(tmp_path / "fake-maildir", smtp_port=0)
