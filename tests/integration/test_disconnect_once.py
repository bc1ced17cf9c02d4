"""A mailbox is disconnected once, by the party that met the refusal with the channel as it
still is (outbox/disconnects.py), on SQLite and PostgreSQL, through the real paths: a
channel run and Test connection against the fake providers, the one's refusal interleaved
with the other's whole disconnect at a fixed point (no timing). Of the two that meet a
revoked consent together, one disconnects: one `channel.disconnected` event, one notice. A
refusal met before the mailbox was reconnected disconnects nothing, and the mail the run held
goes out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailvia.domain.channel import Channel, ChannelState
from mailvia.domain.errors import CredentialsFailed
from mailvia.domain.message import State
from mailvia.outbox.ports import Credentials
from mailvia.outbox.records import MessageFilter
from mailvia.testserver import ThreadedTestServer
from mailvia.testserver.fake import FakeProviders
from support.fake_providers import running
from support.oauth import connect, oauth_world, pages, sign_in
from support.world import World

JANE = "jane@acme.test"
Source = Callable[..., Awaitable[Credentials | None]]


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeProviders]:
    yield from running(tmp_path / "fake-maildir")


@pytest.fixture
async def world(
    tmp_path: Path, fake: FakeProviders, migrated_store_url: str
) -> AsyncIterator[World]:
    with ThreadedTestServer(maildir=tmp_path / "pool") as pool:
        w = oauth_world(
            tmp_path / "data",
            fake,
            db_url=migrated_store_url,
            pool_relay=f"smtp://127.0.0.1:{pool.port}?security=none",
            notice_from="notices@mailvia.test",
        )
        yield w
        await w.close()


@pytest.fixture
async def jane(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with pages(world) as client:
        yield await sign_in(client, world, JANE)


def on_refusal(source: Source, meanwhile: Callable[[], Awaitable[object]]) -> Source:
    """`source`, but when it cannot give credentials (a refused consent), `meanwhile` runs
    before the refusal reaches its caller: what another party did between the two."""

    async def credentials(
        channel: Channel, *, rejected: Credentials | None = None, renew: bool = False
    ) -> Credentials | None:
        try:
            return await source(channel, rejected=rejected, renew=renew)
        except CredentialsFailed:
            await meanwhile()
            raise

    return credentials


def disconnects(world: World) -> tuple[list[object], int]:
    """The `channel.disconnected` events' held counts, and the owner's notices queued."""
    org = world.jane.organization_id
    events, _ = world.store.list_events(org, cursor=None, limit=100)
    notices, _ = world.store.list_messages(MessageFilter(org, search="is disconnected"))
    return [e.data["held"] for e in events if e.type == "channel.disconnected"], len(notices)


async def test_a_run_and_test_connection_meeting_a_revoked_consent_disconnect_once(
    world: World, jane: httpx.AsyncClient, fake: FakeProviders
) -> None:
    """The run meets the refusal; before it applies it, Test connection meets it too and
    disconnects the mailbox. The run then finds the channel changed and does nothing more:
    one event, one notice, its mail held. Every message held is accounted for in the
    events: Test connection held none (the run had them claimed), so the run records a
    `message.held` for each it held."""
    channel_id = await connect(jane, fake, "google", JANE)
    world.send(subject="before")
    await world.services.dispatcher.run_once(time.time)  # a token in the run's hands
    fake.revoke(JANE)
    held = [r.id for r in world.send(subject="held", count=8)]  # more than its connections
    dispatcher, tester = world.services.dispatcher, world.services.tester

    async def test_connection() -> None:
        report = await tester.test(world.jane, channel_id, now=time.time())
        assert not report.ok

    dispatcher.credentials = on_refusal(dispatcher.credentials, test_connection)
    await dispatcher.run_once(time.time)
    broken = world.store.get_channel(channel_id)
    assert broken.state is ChannelState.DISCONNECTED
    assert "reconnect with Google" in (broken.state_reason or "")
    events, notices = disconnects(world)
    assert (len(events), notices) == (1, 1)
    assert [world.store.get_message(i).state for i in held] == [State.HELD] * 8
    each, _ = world.store.list_events(world.jane.organization_id, cursor=None, limit=100)
    held_events = sorted(e.data["message_id"] for e in each if e.type == "message.held")
    assert (events, held_events) == ([0], sorted(held))


@pytest.mark.parametrize("party", ["run", "test connection"])
async def test_a_refusal_met_before_a_reconnect_leaves_the_mailbox_connected(
    world: World, jane: httpx.AsyncClient, fake: FakeProviders, party: str
) -> None:
    """The consent is revoked; a run (or Test connection) meets the refusal; before it
    applies it, the owner reconnects the mailbox (a new consent). The refusal was about the
    old consent: the mailbox stays active, nothing is recorded or told, and the mail the run
    held goes out with the new one."""
    channel_id = await connect(jane, fake, "google", JANE)
    fake.revoke(JANE)
    held = [r.id for r in world.send(subject="held", count=2)]
    dispatcher, tester = world.services.dispatcher, world.services.tester

    async def reconnect() -> None:
        assert await connect(jane, fake, "google", JANE, channel=channel_id) == channel_id

    if party == "run":
        source = dispatcher.credentials
        dispatcher.credentials = on_refusal(source, reconnect)
        await dispatcher.run_once(time.time)
        dispatcher.credentials = source
    else:
        tester.tokens = on_refusal(tester.tokens, reconnect)
        report = await tester.test(world.jane, channel_id, now=time.time())
        assert not report.ok
    assert world.store.get_channel(channel_id).state is ChannelState.ACTIVE
    assert disconnects(world) == ([], 0)
    await dispatcher.run_once(time.time)
    assert [world.store.get_message(i).state for i in held] == [State.DELIVERED] * 2


class ReadThenDisconnected:
    """The dispatcher's store, but once armed, another party disconnects the channel (and
    holds its mail) just after the run reads it: between that read and the run's release."""

    def __init__(self, real: Any) -> None:
        self.real, self.armed = real, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def get_channel(self, channel_id: str) -> Channel:
        seen = self.real.get_channel(channel_id)
        if self.armed:
            self.armed = False
            now = time.time()
            assert self.real.disconnect_channel(seen, "535 5.7.8 other party", now) is not None
            self.real.hold_channel(channel_id, now)
        return seen


async def test_a_disconnect_after_the_loser_read_the_channel_active_keeps_its_mail_held(
    world: World, jane: httpx.AsyncClient, fake: FakeProviders
) -> None:
    """The run met a refusal before a reconnect, so it does not disconnect; it reads the
    channel active to queue the mail it held again, and another party disconnects it just
    then. The mail stays held with the disconnected channel (the release is one conditional
    store call), not queued for a channel that cannot send it."""
    channel_id = await connect(jane, fake, "google", JANE)
    fake.revoke(JANE)
    held = [r.id for r in world.send(subject="held", count=2)]
    dispatcher = world.services.dispatcher
    between = ReadThenDisconnected(dispatcher.store)

    async def reconnect() -> None:
        assert await connect(jane, fake, "google", JANE, channel=channel_id) == channel_id
        between.armed = True

    dispatcher.credentials = on_refusal(dispatcher.credentials, reconnect)
    dispatcher.store = between
    await dispatcher.run_once(time.time)
    assert not between.armed
    assert world.store.get_channel(channel_id).state is ChannelState.DISCONNECTED
    assert [world.store.get_message(i).state for i in held] == [State.HELD] * 2
