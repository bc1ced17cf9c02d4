"""Each attempt row keeps the stage its recipient's reply was given at: a recipient delivered
by the end-of-data reply reads `data-end` (SMTP) or `api` (a provider's API), one refused at
RCPT in the same transaction reads `rcpt`, whichever order they come in (GET
/v1/messages/{id} `attempts[].stage`, the store's rows on SQLite). A record once carried one
stage for all its recipients, the last one's, so a delivery read `rcpt` beside a refusal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailvia.domain.channel import Auth, Security, TransportKind
from mailvia.testserver import TestServer
from mailvia.testserver.fake import FakeOptions, FakeProviders
from support.api import Api
from support.fake_providers import CLIENT_ID, CLIENT_SECRET, connect, endpoint, running
from support.mailboxes import TokenEndpoint, oauth_mailbox
from support.world import World

BOB, NOBODY = "bob@example.com", "permfail@example.com"  # the test server refuses permfail@


async def _stages(api: Api, message_id: str) -> dict[str, tuple[str, int, str]]:
    shown = (await api.client("jane").get(f"/v1/messages/{message_id}")).json()
    return {a["recipient"]: (a["stage"], a["code"], a["outcome"]) for a in shown["attempts"]}


@pytest.mark.parametrize("to", [(BOB, NOBODY), (NOBODY, BOB)], ids=["refused-last", "first"])
async def test_a_delivered_recipient_reads_data_end_beside_one_refused_at_rcpt(
    tmp_path: Path, to: tuple[str, str]
) -> None:
    api = Api(World(tmp_path / "data"))
    try:
        async with TestServer() as smtp:
            api.world.channel(smtp.port, security=Security.NONE, auth=Auth.NONE)
            [sent] = api.world.send(to=to)
            await api.world.services.dispatcher.run_once(time.time)
        stages = await _stages(api, sent.id)
    finally:
        await api.aclose()
    assert stages == {
        BOB: ("data-end", 250, "delivered"),
        NOBODY: ("rcpt", 550, "bounce"),
    }, stages


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeProviders]:
    yield from running(tmp_path / "fake-maildir", options=FakeOptions())


@pytest.mark.parametrize("transport", [TransportKind.GMAIL_API, TransportKind.GRAPH])
async def test_a_recipient_delivered_by_a_providers_api_reads_api(
    tmp_path: Path, fake: FakeProviders, transport: TransportKind
) -> None:
    world = World(
        tmp_path / "data",
        gmail_api_url=fake.settings["MAILVIA_GMAIL_API_URL"],
        graph_api_url=fake.settings["MAILVIA_GRAPH_API_URL"],
    )
    api = Api(world)
    try:
        provider = "google" if transport is TransportKind.GMAIL_API else "microsoft"
        tokens = connect(fake, provider, "jane@acme.test")
        world.services.dispatcher.credentials = TokenEndpoint(
            endpoint(fake, provider, "token"),
            tokens["refresh_token"],
            client_id=CLIENT_ID,
            secret=CLIENT_SECRET,
        )
        oauth_mailbox(world, transport)
        [sent] = world.send(to=(BOB, "carol@example.com"))
        await world.services.dispatcher.run_once(time.time)
        stages = await _stages(api, sent.id)
    finally:
        await api.aclose()
    assert {r: (s, o) for r, (s, _, o) in stages.items()} == {
        BOB: ("api", "delivered"),
        "carol@example.com": ("api", "delivered"),
    }, stages
