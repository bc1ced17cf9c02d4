"""One own channel per sending address, in every door: a second own channel for an address
that has one is refused (409 on the API and the page, exit 4 on the CLI, the OAuth callback's
page) naming the channel it has, and nothing is stored; the route then has one channel to
choose. In process over the world's real SQLite store (the store's own check, on PostgreSQL
too, is in test_store_contract.py); the CLI as the real console script."""

from __future__ import annotations

import html
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mailvia.domain.channel import Channel, Provider
from mailvia.domain.errors import Conflict
from mailvia.outbox.channels import ChannelSpec
from mailvia.testserver.fake import FakeProviders
from support.api import Api, assert_problem, open_api
from support.cli import Cli, require_console_script
from support.oauth import allow, callback, csrf_of, oauth_world, pages, sign_in, start
from support.world import World

JANE = "jane@acme.test"
TAKEN = "jane@acme.test already has its own channel 'jane-box'"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with open_api(tmp_path / "data") as api:
        yield api


def texts(answer: httpx.Response) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", answer.text)).split())


async def test_the_api_refuses_a_second_own_channel_for_an_address(api: Api) -> None:
    first = api.jane_channel()
    jane, boss = api.client("jane"), api.client("boss")
    body = {"name": "box two", "host": "smtp.acme.test", "username": JANE, "password": "pw"}
    assert_problem(await jane.post("/v1/channels", json=body), 409, TAKEN, "remove it first")
    # Nor may an admin make one for her; a team channel for her domain is another matter.
    for_jane = body | {"owner": {"user": JANE}, "preset": "microsoft365"}
    assert_problem(await boss.post("/v1/channels", json=for_jane), 409, TAKEN)
    team = {
        "name": "relay",
        "host": "smtp.acme.test",
        "auth": "none",
        "domains": ["acme.test"],
        "owner": {"team": "sales"},
    }
    assert (await boss.post("/v1/channels", json=team)).status_code == 201
    names = [c.name for c in api.world.store.list_channels() if c.scope == "address"]
    assert names == [first.name]


async def test_the_page_says_the_address_has_a_channel(tmp_path: Path) -> None:
    world = World(tmp_path / "data")
    try:
        world.channel(2525)
        async with pages(world) as client:
            await sign_in(client, world, JANE)
            token = csrf_of((await client.get("/channels/new")).text)
            form = {
                "csrf": token,
                "action": "save",
                "name": "box two",
                "host": "smtp.acme.test",
                "auth": "none",
            }
            answer = await client.post("/channels/new", data=form | {"address": JANE})
        assert answer.status_code == 409, answer.text
        assert TAKEN in texts(answer) and 'value="box two"' in answer.text  # the form kept
        assert [c.name for c in world.store.list_channels()] == ["jane-box"]
    finally:
        await world.close()


async def test_the_cli_refuses_a_second_own_channel(tmp_path: Path) -> None:
    require_console_script()
    world = World(tmp_path / "data")
    try:
        world.channel(2525)
        refused = Cli(world.settings.data_dir).run(
            "channel", "add", "box two", "--org", "acme", "--user", JANE,
            "--host", "127.0.0.1", "--port", "2526", "--auth", "none",
        )  # fmt: skip
        assert refused.code == 4 and "Traceback" not in refused.stderr, str(refused)
        assert refused.stderr.startswith("mailvia: ") and TAKEN in refused.stderr, str(refused)
        assert [c.name for c in world.store.list_channels()] == ["jane-box"]
    finally:
        await world.close()


async def test_connecting_an_address_that_has_another_servers_channel_is_refused(
    tmp_path: Path, fake_providers: FakeProviders
) -> None:
    world = oauth_world(tmp_path / "data", fake_providers)
    try:
        world.channel(2525)  # jane's own relay channel for her address, not Google's
        relay_words = (
            "through 127.0.0.1: one address has one channel, so connecting Google would make "
            "a second. To send through Google instead, remove that channel first"
        )
        async with pages(world) as client:
            await sign_in(client, world, JANE)
            # Said before the round trip to Google, beside each Connect button.
            before = texts(await client.get("/channel"))
            assert f"Not for {JANE}: {TAKEN}, {relay_words}" in before
            for_microsoft = f"{TAKEN}, through 127.0.0.1: one address has one channel, so "
            assert f"{for_microsoft}connecting Microsoft 365 would make a second" in before
            auth = await start(client, "google")
            answer = await callback(client, "google", allow(fake_providers, auth, JANE))
        assert answer.status_code == 409, answer.text
        assert TAKEN in texts(answer) and "nothing was connected" in texts(answer)
        assert relay_words in texts(answer) and "reconnect it" not in texts(answer).lower()
        assert [c.name for c in world.store.list_channels()] == ["jane-box"]
        [grant] = fake_providers.consents()
        assert grant.revoked  # the consent let go, as for any refusal
    finally:
        await world.close()


async def test_a_pair_made_before_the_rule_still_edits_and_reconnects(
    tmp_path: Path, fake_providers: FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jane's address has a relay channel and a Gmail password one, made before the rule:
    she may still rename the Gmail one, and "Connect Gmail" turns it (this provider's, not
    the relay that sorts first) into the OAuth mailbox, in place."""
    import mailvia.store.channels as store_channels

    world = oauth_world(tmp_path / "data", fake_providers)
    api = Api(world)
    try:
        world.channel(2525, name="a-relay")
        with monkeypatch.context() as before_the_rule:
            before_the_rule.setattr(store_channels, "own_mailbox", lambda channel: None)
            spec = ChannelSpec(
                name="jane-gmail", preset="gmail", username=JANE, password="pw", address=JANE
            )
            gmail, _ = world.services.channels.add(world.jane, spec, time.time())
        renamed = await api.client("jane").patch(
            f"/v1/channels/{gmail.id}", json={"name": "jane gmail", "test": False}
        )
        assert renamed.status_code == 200, renamed.text
        async with pages(world) as client:
            await sign_in(client, world, JANE)
            auth = await start(client, "google")
            answer = await callback(client, "google", allow(fake_providers, auth, JANE))
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"].startswith(f"/channels/{gmail.id}?")
        mailbox = world.store.get_channel(gmail.id)
        assert (mailbox.name, mailbox.oauth) == ("jane gmail", Provider.GOOGLE)
        assert sorted(c.name for c in world.store.list_channels()) == ["a-relay", "jane gmail"]
    finally:
        await api.aclose()


async def test_a_conflict_met_when_storing_the_mailbox_revokes_the_consent(
    tmp_path: Path, fake_providers: FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Conflict after the consent (here: another own channel for the address stored
    between the check and the write) lets the consent go, as every refusal does."""
    world = oauth_world(tmp_path / "data", fake_providers)
    try:

        def taken(*args: object) -> Channel:
            raise Conflict(TAKEN)

        monkeypatch.setattr(world.store, "add_oauth_mailbox", taken)
        async with pages(world) as client:
            await sign_in(client, world, JANE)
            auth = await start(client, "google")
            answer = await callback(client, "google", allow(fake_providers, auth, JANE))
        assert answer.status_code == 409, answer.text
        assert TAKEN in texts(answer)
        [grant] = fake_providers.consents()
        assert grant.revoked
    finally:
        await world.close()


async def test_connecting_an_address_that_is_the_other_providers_mailbox_says_so(
    tmp_path: Path, fake_providers: FakeProviders
) -> None:
    """Connect Gmail for an address whose own channel is a Microsoft 365 mailbox: refused,
    saying to reconnect it with Microsoft 365 (or remove it first); Connect Microsoft 365
    has no such warning (it converts that channel)."""
    world = oauth_world(tmp_path / "data", fake_providers)
    try:
        spec = ChannelSpec(
            name="jane-box", preset="microsoft365", username=JANE, password="pw", address=JANE
        )
        world.services.channels.add(world.jane, spec, time.time())
        async with pages(world) as client:
            await sign_in(client, world, JANE)
            before = texts(await client.get("/channel"))
            assert before.count(f"Not for {JANE}") == 1
            auth = await start(client, "google")
            answer = await callback(client, "google", allow(fake_providers, auth, JANE))
        assert answer.status_code == 409, answer.text
        words = (
            f"{TAKEN}, a Microsoft 365 mailbox: one address has one channel, so it cannot be "
            "connected with Google too. Reconnect it with Microsoft 365, or remove it first"
        )
        assert words in texts(answer) and words in before
    finally:
        await world.close()
