"""An OAuth mailbox's tokens against the fake providers' token endpoint, on SQLite and
PostgreSQL: one refresh per channel however many callers ask at once across two builds (two
processes' worth of services on one database); a token due soon is renewed ahead of expiry;
a rotated refresh token is kept (the old one stops working); a refused consent is written down
so nobody asks the provider again; a token endpoint that is down is a retry, not a
disconnect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from mailvia.app import build
from mailvia.domain.channel import Channel
from mailvia.domain.errors import CredentialsFailed
from mailvia.outbox.oauth.apps import OAuthApps
from mailvia.outbox.oauth.credentials import TokenSource
from mailvia.testserver.fake import FakeOptions, FakeProviders
from support.fake_providers import running
from support.oauth import connect, oauth_world, pages, sign_in
from support.world import World

JANE = "jane@acme.test"


@pytest.fixture
async def world(
    tmp_path: Path, fake_providers: FakeProviders, migrated_store_url: str
) -> AsyncIterator[World]:
    w = oauth_world(tmp_path / "data", fake_providers, db_url=migrated_store_url, worker_id="one")
    yield w
    await w.close()


async def mailbox(world: World, fake: FakeProviders, provider: str = "google") -> Channel:
    async with pages(world) as jane:
        await sign_in(jane, world, JANE)
        channel_id = await connect(jane, fake, provider, JANE)
    return world.store.get_channel(channel_id)


def refreshes(fake: FakeProviders) -> int:
    return sum(fake.refresh_counts().values())


def works(fake: FakeProviders, token: str) -> bool:
    url = fake.settings["MAILVIA_OAUTH_GOOGLE_USERINFO_URL"]
    return httpx.get(url, headers={"authorization": f"Bearer {token}"}).status_code == 200


def source(world: World, clock: list[float]) -> TokenSource:
    """The world's token source parts, with a clock the test moves."""
    services = world.services
    apps = services.oauth_apps
    assert isinstance(apps, OAuthApps) and services.oauth is not None
    return TokenSource(
        world.store,
        world.vault,
        apps,
        services.oauth.client,
        owner="clocked",
        clock=lambda: clock[0],
    )


async def test_twenty_callers_over_two_builds_cause_one_refresh(
    world: World, fake_providers: FakeProviders
) -> None:
    channel = await mailbox(world, fake_providers)
    other = build(replace(world.settings, worker_id="two"))
    try:
        first = await world.services.dispatcher.credentials(channel)
        assert first is not None
        fake_providers.expire(JANE)  # the server refuses it now: every caller reports it
        callers = [
            services.dispatcher.credentials(channel, rejected=first)
            for _ in range(10)
            for services in (world.services, other)
        ]
        got = await asyncio.gather(*callers)
    finally:
        await other.aclose()
    assert refreshes(fake_providers) == 1
    tokens = {c.password for c in got if c is not None}
    assert len(tokens) == 1 and first.password not in tokens
    assert works(fake_providers, tokens.pop())


async def test_a_token_due_soon_is_renewed_ahead_once(
    world: World, fake_providers: FakeProviders
) -> None:
    channel = await mailbox(world, fake_providers)
    stored = world.store.oauth_tokens(channel.id)  # type: ignore[attr-defined]
    clock = [time.time()]
    tokens = source(world, clock)
    before = await tokens(channel)
    assert before is not None and refreshes(fake_providers) == 0
    clock[0] = stored.expires_at - 60  # inside the five minutes before expiry
    got = await asyncio.gather(*(tokens(channel) for _ in range(10)))
    assert refreshes(fake_providers) == 1
    assert {c.password for c in got if c} != {before.password}
    assert world.store.oauth_tokens(channel.id).expires_at > stored.expires_at  # type: ignore[attr-defined]


async def test_a_rotated_refresh_token_replaces_the_old_one(tmp_path: Path) -> None:
    options = FakeOptions(retire_rotated_refresh_tokens=True)  # Microsoft rotates
    with contextmanager(running)(tmp_path / "maildir", options=options) as fake:
        world = oauth_world(tmp_path / "data", fake)
        try:
            channel = await mailbox(world, fake, "microsoft")
            store = world.store
            clock = [time.time()]
            tokens = source(world, clock)
            sealed = store.oauth_tokens(channel.id).refresh  # type: ignore[attr-defined]
            for step in (1, 2):  # the second refresh needs the first one's new refresh token
                clock[0] = store.oauth_tokens(channel.id).expires_at - 1  # type: ignore[attr-defined]
                assert await tokens(channel) is not None
                assert refreshes(fake) == step
            assert store.oauth_tokens(channel.id).refresh != sealed  # type: ignore[attr-defined]
        finally:
            await world.close()


async def test_a_refused_grant_is_written_down_and_not_asked_again(
    world: World, fake_providers: FakeProviders
) -> None:
    channel = await mailbox(world, fake_providers)
    first = await world.services.dispatcher.credentials(channel)
    fake_providers.set_faults(["refresh=invalid_grant"])
    for _ in range(2):
        with pytest.raises(CredentialsFailed) as failed:
            await world.services.dispatcher.credentials(channel, rejected=first)
        reply = failed.value.reply
        assert (reply.code, reply.enhanced) == (535, "5.7.8")
        assert "invalid_grant" in reply.text and "reconnect with Google" in reply.text
    asked = [r for r in fake_providers.requests if r["stage"] == "refresh"]
    assert len(asked) == 1


async def test_a_token_endpoint_that_is_down_is_a_retry(
    world: World, fake_providers: FakeProviders
) -> None:
    channel = await mailbox(world, fake_providers)
    first = await world.services.dispatcher.credentials(channel)
    fake_providers.set_faults(["refresh*1=503"])
    with pytest.raises(CredentialsFailed) as failed:
        await world.services.dispatcher.credentials(channel, rejected=first)
    assert (failed.value.reply.code, failed.value.reply.enhanced) == (451, "4.4.2")
    assert "could not renew the access token" in failed.value.reply.text
    again = await world.services.dispatcher.credentials(channel, rejected=first)  # lease freed
    assert again is not None and again.password != first.password  # type: ignore[union-attr]
    assert refreshes(fake_providers) == 1
