"""The way off password sign-in: a Microsoft 365 channel that the server refuses because
basic authentication is off (535 5.7.139) shows why on its page and in the banner, with one
link, "Reconnect with Microsoft 365 (OAuth)", that turns the same channel into an OAuth
mailbox (against the fake providers) and releases its held mail in order."""

from __future__ import annotations

import html
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailvia.domain.channel import Auth, ChannelState, Provider, TransportKind
from mailvia.domain.message import State
from mailvia.domain.presets import PRESETS
from mailvia.outbox.channels import ChannelSpec
from mailvia.testserver import ThreadedTestServer
from mailvia.testserver.fake import FakeProviders
from support.oauth import connect, oauth_world, pages, sign_in
from support.world import World, make_certs

JANE = "jane@acme.test"
BASIC_OFF = "auth=535 5.7.139 Authentication unsuccessful, basic authentication is disabled."


@pytest.fixture
async def world(tmp_path: Path, fake_providers: FakeProviders) -> AsyncIterator[World]:
    w = oauth_world(tmp_path / "data", fake_providers)
    yield w
    await w.close()


async def test_a_password_mailbox_refused_for_basic_auth_becomes_an_oauth_one(
    world: World, fake_providers: FakeProviders, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path / "certs")
    store = world.store
    with ThreadedTestServer(
        tls_cert=certs.cert, tls_key=certs.key, auth={JANE: "pw"}, faults=[BASIC_OFF]
    ) as server:
        spec = ChannelSpec(
            name="jane-o365",
            preset="microsoft365",
            host="127.0.0.1",
            port=server.port,
            username=JANE,
            password="pw",
            ca_pem=certs.ca_pem,
        )
        channel, _ = world.services.channels.add(world.jane, spec, time.time())
        held = [r.id for r in world.send(subject="held", count=3)]
        await world.services.dispatcher.run_once(time.time)
    broken = store.get_channel(channel.id)
    assert broken.state is ChannelState.DISCONNECTED
    assert (broken.state_reason or "").startswith("535 5.7.139")
    assert [store.get_message(i).state for i in held] == [State.HELD] * 3
    link = f'href="/oauth/microsoft/start?channel={channel.id}"'
    async with pages(world) as boss:  # only the mailbox's owner can give its consent
        await sign_in(boss, world, world.admin.email)
        seen = " ".join(html.unescape((await boss.get(f"/channels/{channel.id}")).text).split())
    assert link not in seen and "Reconnect with Microsoft 365 (OAuth)</a>" not in seen
    assert f"Only {JANE} can reconnect this mailbox by OAuth" in seen
    async with pages(world) as jane:
        await sign_in(jane, world, JANE)
        page = html.unescape((await jane.get(f"/channels/{channel.id}")).text)
        assert "Password sign-in is off for this mailbox." in page
        assert "127.0.0.1 is not one of Microsoft 365's hosts" in page  # it dials that host
        assert f"{link}>Reconnect with Microsoft 365 (OAuth)</a>" in page
        banner = html.unescape((await jane.get("/channel")).text)
        assert "Password sign-in is off for this mailbox: reconnect it by OAuth" in banner
        assert f"{link}>Reconnect with Microsoft 365 (OAuth)</a>" in banner
        assert await connect(jane, fake_providers, "microsoft", JANE, channel=channel.id) == (
            channel.id
        )
        after = (await jane.get(f"/channels/{channel.id}?notice=oauth_reconnected")).text
    assert "Reconnected: the held mail is released" in after
    assert "is not one of Microsoft 365's hosts" not in html.unescape(after)  # Graph: no host
    mailbox = store.get_channel(channel.id)
    assert (mailbox.oauth, mailbox.transport, mailbox.auth) == (
        Provider.MICROSOFT,
        TransportKind.GRAPH,
        Auth.XOAUTH2,
    )
    assert mailbox.name == "jane-o365" and mailbox.state is ChannelState.ACTIVE
    assert not mailbox.has_password and store.channel_secret(channel.id) is None
    assert [store.get_message(i).state for i in held] == [State.QUEUED] * 3
    events, _ = store.list_events(world.jane.organization_id, cursor=None, limit=100)
    assert [e.data["released"] for e in events if e.type == "channel.reconnected"] == [3]


async def test_without_the_app_the_password_way_says_microsoft_turns_it_off(
    tmp_path: Path,
) -> None:
    """With no Microsoft app set up, My delivery channel offers the password form meanwhile;
    it says that Microsoft turns password SMTP AUTH off by default from the end of December
    2026, as the link beside "Connect Microsoft 365" does when the app is set up."""
    world = World(tmp_path / "plain")
    try:
        async with pages(world) as jane:
            await sign_in(jane, world, JANE)
            page = " ".join(html.unescape((await jane.get("/channel")).text).split())
    finally:
        await world.close()
    assert "Connecting by OAuth needs the organization's Microsoft 365 app" in page
    assert (
        "off by default from the end of December 2026, and its mail is then held until an " in page
    )
    assert "admin sets up the app and you reconnect by OAuth." in page
    assert "at the end of December" not in page and "waits for the app" not in page


@pytest.mark.parametrize("door", ["banner", "connect"])
async def test_a_microsoft_365_mailbox_added_by_hand_moves_to_oauth_with_its_held_mail(
    world: World, fake_providers: FakeProviders, door: str
) -> None:
    """A password channel added by hand (`--host smtp.office365.com`, no preset) is a
    Microsoft 365 mailbox too: refused for basic auth, its page and the banner offer the
    OAuth reconnect, and that (or "Connect Microsoft 365") turns it into the OAuth mailbox in
    place; its held mail is released and delivered through the provider."""
    store = world.store
    spec = ChannelSpec(
        name="jane-o365", host="smtp.office365.com", port=587, username=JANE, password="pw"
    )
    channel, _ = world.services.channels.add(world.jane, spec, time.time())
    assert channel.preset is None
    store.set_channel_state(
        channel.id, ChannelState.DISCONNECTED, BASIC_OFF.removeprefix("auth="), time.time()
    )
    held = [r.id for r in world.send(subject="held", count=2)]
    assert [store.get_message(i).state for i in held] == [State.HELD] * 2
    link = f'href="/oauth/microsoft/start?channel={channel.id}"'
    async with pages(world) as jane:
        await sign_in(jane, world, JANE)
        page = html.unescape((await jane.get(f"/channels/{channel.id}")).text)
        assert f"{link}>Reconnect with Microsoft 365 (OAuth)</a>" in page
        banner = html.unescape((await jane.get("/channel")).text)
        assert f"{link}>Reconnect with Microsoft 365 (OAuth)</a>" in banner
        query = {"channel": channel.id} if door == "banner" else {}
        assert await connect(jane, fake_providers, "microsoft", JANE, **query) == channel.id
    mailbox = store.get_channel(channel.id)
    assert (mailbox.oauth, mailbox.preset, mailbox.state) == (
        Provider.MICROSOFT,
        "microsoft365",
        ChannelState.ACTIVE,
    )
    assert mailbox.budgets == PRESETS["microsoft365"].budgets  # it had none: Microsoft's
    assert [c.id for c in store.list_channels(world.jane.organization_id)] == [channel.id]
    await world.services.dispatcher.run_once(time.time)
    assert [store.get_message(i).state for i in held] == [State.DELIVERED] * 2
