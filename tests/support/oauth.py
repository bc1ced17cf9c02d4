"""OAuth mailboxes in process: a World whose settings point at the fake providers (their
endpoints, and operator-wide apps for both), the pages over it through httpx's ASGI
transport with a signed-in session per user, and the steps of a connection (start, the fake's
consent posted as its page's form, the callback), so that each step can be tampered with."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from mailvia.passwords import hash_password, verify_password
from mailvia.testserver.fake import FakeProviders
from mailvia.web import create_web
from support.fake_providers import CLIENT_ID, CLIENT_SECRET, consent
from support.world import World

PASSWORD = "a-long-password-of-my-own"


@functools.cache
def password_hash() -> str:
    """PASSWORD's argon2 hash, made once per process (any salt does: each is checked in full)."""
    return hash_password(PASSWORD)


def oauth_settings(fake: FakeProviders) -> dict[str, Any]:
    """The world's settings for the fake: its OAuth endpoints and send APIs, and an
    operator-wide app for each provider."""
    found: dict[str, Any] = {
        name.removeprefix("MAILVIA_").lower(): value
        for name, value in fake.settings.items()
        if name.startswith("MAILVIA_OAUTH_") or name.endswith("_API_URL")
    }
    return found | {
        "oauth_google_client_id": CLIENT_ID,
        "oauth_google_client_secret": CLIENT_SECRET,
        "oauth_microsoft_client_id": CLIENT_ID,
        "oauth_microsoft_client_secret": CLIENT_SECRET,
    }


def oauth_world(data_dir: Path, fake: FakeProviders, **settings: Any) -> World:
    return World(data_dir, **(oauth_settings(fake) | settings))


def pages(world: World) -> httpx.AsyncClient:
    app = create_web(
        world.services,
        secure_cookies=False,
        session_key=b"k" * 32,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pages")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, world: World, email: str) -> httpx.AsyncClient:
    """Sign `email` in on this client (a password set here; no forced change)."""
    user = world.services.tenancy.user(email)
    stored = world.store.password_hash(user.id)
    known = stored == password_hash() or bool(stored and verify_password(stored, PASSWORD))
    if not known:  # a change ends other sessions
        world.store.set_password(user.id, password_hash(), must_change_password=False)
    token = csrf_of((await client.get("/signin")).text)
    form = {"csrf": token, "email": email, "password": PASSWORD, "next": "/channel"}
    answer = await client.post("/signin", data=form)
    assert answer.status_code == 303, answer.text
    return client


@dataclass
class Authorization:
    """The provider's authorization request, as mailvia sent the browser to it."""

    url: str
    params: dict[str, str]

    @property
    def provider(self) -> str:
        return "google" if "/o/oauth2/" in self.url else "microsoft"

    @property
    def tenant(self) -> str:
        return "common" if self.provider == "google" else urlsplit(self.url).path.split("/")[1]


async def start(client: httpx.AsyncClient, provider: str, **query: str) -> Authorization:
    """Press "Connect ..." (or follow an API client's /oauth/go link when `go` is given)."""
    path = query.pop("go", None) or f"/oauth/{provider}/start"
    answer = await client.get(path, params=query)
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    return Authorization(location, dict(parse_qsl(urlsplit(location).query)))


def allow(fake: FakeProviders, auth: Authorization, account: str, **changes: str) -> dict[str, str]:
    """Allow on the fake's consent page; the callback's query (code and state)."""
    params = auth.params | changes
    answer = consent(fake, auth.provider, params, account=account, tenant=auth.tenant)
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["location"])
    assert location.path == f"/oauth/{auth.provider}/callback", location
    return dict(parse_qsl(location.query))


async def callback(
    client: httpx.AsyncClient, provider: str, query: dict[str, str]
) -> httpx.Response:
    return await client.get(f"/oauth/{provider}/callback", params=query)


async def connect(
    client: httpx.AsyncClient, fake: FakeProviders, provider: str, account: str, **query: str
) -> str:
    """The whole flow; returns the channel id the callback sent the browser to."""
    auth = await start(client, provider, **query)
    answer = await callback(client, provider, allow(fake, auth, account))
    assert answer.status_code == 303, answer.text
    found = re.match(r"^/channels/([^?]+)\?notice=", answer.headers["location"])
    assert found, answer.headers["location"]
    return found.group(1)
