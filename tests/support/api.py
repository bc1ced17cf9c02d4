"""The HTTP API in process for tests: the real app (create_app) over the world's real SQLite
store, reached through httpx's ASGI transport, with an API token for each user.

Tenants: organization acme (jane and joe, members of team sales; boss, an admin) and a second
organization globex (ann, an admin) to show that one organization never sees the other's.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from mailvia.domain.channel import Auth, Channel, Scope, Security
from mailvia.ingress.http import create_app
from mailvia.outbox.channels import ChannelSpec
from mailvia.outbox.tenancy import Tenancy
from support.world import World

PROBLEM_JSON = "application/problem+json"


class Api:
    """The app, its world, and clients acting as each user."""

    def __init__(
        self,
        world: World,
        *,
        max_message_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.world = world
        services = world.services
        if max_message_size is not None:
            services = replace(services, max_message_size=max_message_size)
        self.app = create_app(services, clock=clock)
        now = time.time()
        # The API signs in with tokens only: skip argon2 for the users made here.
        tokens = world.services.tokens
        t = Tenancy(world.store, hash_password=lambda password: "unused", tokens=tokens)
        self.joe = t.create_user(
            "joe@acme.test", org_name="acme", team_name="sales", admin=False, now=now
        )[0]
        t.create_org("globex", now)
        t.create_team("ops", "globex", now)
        t.add_domain("globex", "globex.test", now)
        self.ann = t.create_user(
            "ann@globex.test", org_name="globex", team_name="ops", admin=True, now=now
        )[0]
        self.tokens = {
            name: tokens.create(f"{name}@{domain}", "tests", now)
            for name, domain in (
                ("jane", "acme.test"),
                ("joe", "acme.test"),
                ("boss", "acme.test"),
                ("ann", "globex.test"),
            )
        }
        self._clients: list[httpx.AsyncClient] = []

    def client(self, user: str | None = None, **kw: Any) -> httpx.AsyncClient:
        """A client with `user`'s token (no token when None)."""
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        transport = httpx.ASGITransport(app=self.app, **kw)
        client = httpx.AsyncClient(transport=transport, base_url="http://api.test", headers=headers)
        self._clients.append(client)
        return client

    def jane_channel(self, port: int = 2525, **kw: Any) -> Channel:
        """Jane's own address-scoped channel (nothing needs to listen unless mail is sent)."""
        return self.world.channel(port, **kw)

    def team_channel(self, org: str = "acme", port: int = 2525) -> Channel:
        """A domain-scoped channel for the organization's domain, owned by its team."""
        admin, domain, team = (
            (self.world.admin, "acme.test", "sales")
            if org == "acme"
            else (self.ann, "globex.test", "ops")
        )
        spec = ChannelSpec(
            name=f"{org}-relay",
            host="127.0.0.1",
            port=port,
            security=Security.STARTTLS,
            auth=Auth.NONE,
            scope=Scope.DOMAIN,
            domains=(domain,),
            team_name=team,
        )
        return self.world.services.channels.add(admin, spec, time.time())[0]

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
        await self.world.close()


@asynccontextmanager
async def open_api(data_dir: Path, **kw: Any) -> AsyncIterator[Api]:
    api = Api(World(data_dir), **kw)
    try:
        yield api
    finally:
        await api.aclose()


def message(**fields: Any) -> dict[str, Any]:
    """A message body from jane to bob; `fields` override or add."""
    body: dict[str, Any] = {
        "from": "Jane <jane@acme.test>",
        "to": ["bob@example.com"],
        "subject": "hello",
        "text": "hi there",
    }
    body.update(fields)
    return body


def raw_message(content: bytes, **fields: Any) -> dict[str, Any]:
    return {"raw": base64.b64encode(content).decode(), **fields}


def assert_problem(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """The response is a problem with this status whose detail mentions each word."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    for word in words:
        assert word.lower() in body["detail"].lower(), body["detail"]
    return body


def answer_seen(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """What a client sees of an answer, but for the ids and times each store makes: two
    stacks' answers to one request compare equal (tests of the submit routes' paths)."""
    headers = {
        name: response.headers[name]
        for name in ("content-type", "www-authenticate", "retry-after", "allow")
        if name in response.headers
    }
    body = response.json() if response.content else None
    if response.status_code < 300:
        body = _without_ids(body)
    return response.status_code, headers, body


def _without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k not in ("id", "expected_at")}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value
