"""A message that a mailbox provider's API cannot carry as stored is refused at intake, by the
one submit path every intake uses: over the API's recipients per message, over its request
size, or with headers naming someone its envelope does not (the API would send to them).
Through the HTTP API (422 problem) and SMTP submission (554 5.6.0); nothing is stored."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailvia.domain.channel import TransportKind
from mailvia.ingress.smtp.server import SubmissionServer
from mailvia.outbox.records import MessageFilter
from support.api import Api, assert_problem, message, raw_message
from support.mailboxes import oauth_mailbox
from support.world import World, make_certs

RAW = (
    b"From: Jane <jane@acme.test>\r\nTo: bob@example.com, carol@example.com\r\n"
    b"Subject: hello\r\n\r\nhi\r\n"
)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    api = Api(World(tmp_path / "data", graph_api_max_size=3000))
    yield api
    await api.aclose()


def stored(api: Api) -> int:
    org = api.world.jane.organization_id
    return len(api.world.store.list_messages(MessageFilter(org))[0])


async def test_over_the_apis_recipients_per_message_is_refused(api: Api) -> None:
    oauth_mailbox(api.world, TransportKind.GMAIL_API)
    jane = api.client("jane")
    to = [f"r{i}@example.com" for i in range(101)]
    body = assert_problem(await jane.post("/v1/messages", json=message(to=to)), 422)
    assert "at most 100 recipients" in body["detail"] and "jane-gmail_api" in body["detail"]
    ok = await jane.post("/v1/messages", json=message(to=to[:100]))
    assert ok.status_code == 202, ok.text
    assert stored(api) == 1


async def test_over_the_apis_request_size_is_refused(api: Api) -> None:
    oauth_mailbox(api.world, TransportKind.GRAPH)
    jane = api.client("jane")
    big = await jane.post("/v1/messages", json=message(text="x" * 2500))
    assert_problem(big, 422, "3000 bytes", "in base64")
    small = await jane.post("/v1/messages", json=message(text="x" * 100))
    assert small.status_code == 202, small.text
    assert stored(api) == 1


async def test_headers_naming_someone_the_envelope_does_not_are_refused(api: Api) -> None:
    oauth_mailbox(api.world, TransportKind.GRAPH)
    jane = api.client("jane")
    only_bob = raw_message(
        RAW, envelope={"mail_from": "jane@acme.test", "rcpt_to": ["bob@example.com"]}
    )
    assert_problem(await jane.post("/v1/messages", json=only_bob), 422, "carol@example.com")
    # Bcc recipients (in the envelope, not in To/Cc) are carried: the API gets a Bcc field
    both = message(to=["bob@example.com"], bcc=["dan@example.com"])
    assert (await jane.post("/v1/messages", json=both)).status_code == 202
    assert stored(api) == 1


async def test_an_smtp_channel_takes_what_the_apis_refuse(api: Api) -> None:
    api.jane_channel()
    jane = api.client("jane")
    only_bob = raw_message(
        RAW, envelope={"mail_from": "jane@acme.test", "rcpt_to": ["bob@example.com"]}
    )
    assert (await jane.post("/v1/messages", json=only_bob)).status_code == 202


async def test_smtp_submission_refuses_it_with_554_and_the_reason(api: Api, tmp_path: Path) -> None:
    oauth_mailbox(api.world, TransportKind.GRAPH)
    certs = make_certs(tmp_path / "certs")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    server = SubmissionServer(api.world.services, tls_context=context, hostname="submit.test")
    listener = await server.start(host="127.0.0.1", port=0, implicit_tls=False)
    port = int(listener.sockets[0].getsockname()[1])
    token = api.world.services.tokens.create("jane@acme.test", "smtp", time.time())
    client_context = ssl.create_default_context()
    certs.ca.configure_trust(client_context)

    def submit() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.starttls(context=client_context)
            client.login("jane@acme.test", token)
            client.mail("jane@acme.test")
            client.rcpt("bob@example.com")
            return client.data(RAW)

    try:
        code, text = await asyncio.get_running_loop().run_in_executor(None, submit)
    finally:
        await server.stop()
    assert code == 554 and b"5.6.0" in text and b"carol@example.com" in text, text
    assert stored(api) == 0
