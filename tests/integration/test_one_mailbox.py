"""One own channel per sending address, in every door: a second own channel for an address
that has one is refused (409 on the API and the page, exit 4 on the CLI, the OAuth callback's
page) naming the channel it has, and nothing is stored; the route then has one channel to
choose. In process over the world's real SQLite store (the store's own check, on PostgreSQL
too, is in test_store_contract.py); the CLI as the real console script."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

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
        async with pages(world) as client:
            await sign_in(client, world, JANE)
            auth = await start(client, "google")
            answer = await callback(client, "google", allow(fake_providers, auth, JANE))
        assert answer.status_code == 409, answer.text
        assert TAKEN in texts(answer) and "nothing was connected" in texts(answer)
        assert [c.name for c in world.store.list_channels()] == ["jane-box"]
        [grant] = fake_providers.consents()
        assert grant.revoked  # the consent let go, as for any refusal
    finally:
        await world.close()
