"""The Gmail API and Graph adapters through the real dispatcher against the fake providers
(`mailvia testserver --fake-providers` in a thread): delivered byte for byte, Bcc carried and
hidden, the provider's throttles pausing the channel (for exactly its Retry-After, as the
fake's own request log shows), per-message errors bouncing with the provider's words, 5xx
retried, a refused token renewed once. Access tokens come from the fake's token endpoint."""

from __future__ import annotations

import asyncio
import email
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mailvia.domain.channel import (
    Auth,
    Channel,
    ChannelState,
    Provider,
    Security,
    Timeouts,
    TransportKind,
)
from mailvia.domain.clock import SteppingClock
from mailvia.domain.message import State
from mailvia.domain.retry import RetryPolicy
from mailvia.outbox.channels import ChannelSpec
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.records import MessageView
from mailvia.outbox.submit import Submission
from mailvia.testserver import TestServer
from mailvia.testserver.fake import FakeOptions, FakeProviders
from support.api import Api, message
from support.fake_providers import CLIENT_ID, CLIENT_SECRET, connect, endpoint, running
from support.mailboxes import TokenEndpoint, oauth_mailbox
from support.world import World

JANE = "jane@acme.test"
GMAIL, GRAPH = TransportKind.GMAIL_API, TransportKind.GRAPH
PROVIDER = {GMAIL: "google", GRAPH: "microsoft"}
SEND_PATH = {GMAIL: "/gmail/v1/users/me/messages/send", GRAPH: "/v1.0/me/sendMail"}


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeProviders]:
    yield from running(tmp_path / "fake-maildir", options=FakeOptions())


@pytest.fixture
async def world(tmp_path: Path, fake: FakeProviders) -> AsyncIterator[World]:
    w = World(
        tmp_path / "data",
        gmail_api_url=fake.settings["MAILVIA_GMAIL_API_URL"],
        graph_api_url=fake.settings["MAILVIA_GRAPH_API_URL"],
    )
    yield w
    await w.close()


def mailbox(world: World, fake: FakeProviders, transport: TransportKind, **kw: Any) -> Channel:
    """Jane's mailbox, connected at the fake; the dispatcher gets tokens from its endpoint."""
    world.services.dispatcher.credentials = token_source(fake, transport)
    return oauth_mailbox(world, transport, **kw)


def token_source(fake: FakeProviders, transport: TransportKind) -> TokenEndpoint:
    """Jane's consent at the fake, and a credential source renewing at its token endpoint."""
    provider = PROVIDER[transport]
    tokens = connect(fake, provider, JANE)
    return TokenEndpoint(
        endpoint(fake, provider, "token"),
        tokens["refresh_token"],
        client_id=CLIENT_ID,
        secret=CLIENT_SECRET,
    )


def view(world: World, message_id: str) -> MessageView:
    return world.store.get_message(message_id)


def sends(fake: FakeProviders, transport: TransportKind) -> list[dict[str, Any]]:
    path = SEND_PATH[transport]
    return [r for r in fake.requests if r["path"].endswith(path) and r["status"] is not None]


async def deliver_all(world: World, ids: list[str], timeout: float = 30.0) -> None:
    """Run the dispatcher on the real clock until every message is terminal (a deadline,
    no sleeps for work)."""
    stop = asyncio.Event()
    task = asyncio.create_task(world.services.dispatcher.run_forever(time.time, stop))
    deadline = time.monotonic() + timeout
    try:
        while not all(view(world, i).state.terminal for i in ids):
            assert time.monotonic() < deadline, [view(world, i).state for i in ids]
            assert not task.done(), task
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


def submit(
    world: World,
    subject: str,
    *,
    to: tuple[str, ...] = ("bob@example.com",),
    bcc: tuple[str, ...] = (),
    text: str = "hi there",
) -> tuple[str, bytes]:
    """Submit one message from jane; (its id, the exact bytes stored)."""
    draft = Draft(from_=f"Jane <{JANE}>", to=to, bcc=bcc, subject=subject, text=text)
    composed = compose(draft, now=time.time(), max_size=world.services.max_message_size)
    [receipt] = world.services.submitter.submit(world.jane, [Submission(composed)], now=time.time())
    return receipt.id, composed.content


def subject_of(content: bytes) -> str:
    return str(email.message_from_bytes(content)["Subject"])


@pytest.mark.parametrize("transport", [GMAIL, GRAPH])
async def test_delivered_byte_for_byte_with_bcc_carried_and_hidden(
    world: World, fake: FakeProviders, transport: TransportKind
) -> None:
    mailbox(world, fake, transport)
    plain = submit(world, "plain", to=("bob@example.com", "carol@example.com"))
    hidden = submit(world, "bcc", to=("carol@example.com",), bcc=("dan@example.com",))
    await world.services.dispatcher.run_once(time.time)
    ids = [plain[0], hidden[0]]
    assert [view(world, i).state for i in ids] == [State.DELIVERED] * 2
    got = {subject_of(r["content"]): r for r in fake.received}
    assert set(got) == {"plain", "bcc"} and {r["via"] for r in got.values()} == {str(transport)}
    # the fake's stored copy (what recipients get, Bcc removed) is the stored message
    assert got["plain"]["content"] == plain[1]
    assert got["bcc"]["content"] == hidden[1]
    # the Bcc recipient got it, and no other recipient's copy names them
    assert sorted(got["bcc"]["rcpt_to"]) == ["carol@example.com", "dan@example.com"]
    assert b"dan@example.com" not in got["bcc"]["content"]
    [attempt] = view(world, hidden[0]).attempts[:1]
    assert attempt.stage == "api" and attempt.outcome == "delivered"
    assert attempt.reply.text.startswith("HTTP 20")


@pytest.mark.parametrize("transport", [GMAIL, GRAPH])
async def test_an_idn_recipient_posted_to_the_api_arrives_with_its_domain_in_a_labels(
    world: World, fake: FakeProviders, transport: TransportKind
) -> None:
    """Not an encoded word inside the address (which the API refused as someone else)."""
    mailbox(world, fake, transport)
    jane = Api(world).client("jane")
    posted = await jane.post(
        "/v1/messages", json=message(to=["Jörg <user@bücher.example>"], bcc=["b@straße.de"])
    )
    await jane.aclose()
    assert posted.status_code == 202, posted.text
    await deliver_all(world, [posted.json()["id"]])
    [got] = fake.received
    assert sorted(got["rcpt_to"]) == ["b@xn--strae-oqa.de", "user@xn--bcher-kva.example"]
    received = email.message_from_bytes(got["content"])
    assert received["To"] == "=?utf-8?q?J=C3=B6rg?= <user@xn--bcher-kva.example>"
    assert view(world, posted.json()["id"]).state is State.DELIVERED


async def test_a_large_message_goes_to_gmails_media_upload(
    world: World, fake: FakeProviders
) -> None:
    mailbox(world, fake, GMAIL)
    big = submit(world, "big", text=("y" * 76 + "\n") * 60_000)
    assert len(big[1]) > 4 * 1024 * 1024
    await world.services.dispatcher.run_once(time.time)
    assert view(world, big[0]).state is State.DELIVERED
    [request] = sends(fake, GMAIL)
    assert request["path"] == "/upload" + SEND_PATH[GMAIL]
    assert fake.received[0]["content"] == big[1]


async def test_graph_429_retry_after_pauses_the_mailbox_for_exactly_that_long(
    world: World, fake: FakeProviders
) -> None:
    channel = mailbox(world, fake, GRAPH, max_connections=1)
    fake.set_faults(["graph_send*1=429 retry-after=5"])
    ids = [submit(world, f"m{i}")[0] for i in range(3)]
    await deliver_all(world, ids)
    assert [view(world, i).state for i in ids] == [State.DELIVERED] * 3
    log = sends(fake, GRAPH)
    assert [r["status"] for r in log] == [429, 202, 202, 202]
    # the fake's own clock: nothing reached the mailbox in the 5 s after the 429
    assert log[1]["at"] - log[0]["at"] >= 5.0
    first = view(world, ids[0])
    assert [a.outcome for a in first.attempts] == ["throttled", "delivered"]
    assert first.attempts[0].reply.text.startswith("HTTP 429 Too Many Requests: ")
    after = world.store.get_channel(channel.id)
    assert after.state is ChannelState.ACTIVE and after.throttle_level == 0


async def test_gmail_rate_limit_pauses_and_nothing_bounces(
    world: World, fake: FakeProviders
) -> None:
    mailbox(world, fake, GMAIL, max_connections=1)
    fake.set_faults(["gmail_send*1=403 rateLimitExceeded retry-after=2"])
    ids = [submit(world, f"m{i}")[0] for i in range(2)]
    await deliver_all(world, ids)
    assert [view(world, i).state for i in ids] == [State.DELIVERED] * 2
    log = sends(fake, GMAIL)
    assert [r["status"] for r in log] == [403, 200, 200]
    assert log[1]["at"] - log[0]["at"] >= 2.0
    throttled = view(world, ids[0]).attempts[0]
    assert throttled.outcome == "throttled" and "rateLimitExceeded" in throttled.reply.text


async def test_gmail_daily_limit_waits_for_the_window(world: World, fake: FakeProviders) -> None:
    channel = mailbox(world, fake, GMAIL)
    fake.set_faults(["gmail_send*1=403 dailyLimitExceeded"])
    [one] = [submit(world, "m")[0]]
    now = time.time()
    await world.services.dispatcher.run_once(SteppingClock(now))
    assert view(world, one).state is State.DEFERRED
    paused = world.store.get_channel(channel.id).throttled_until
    # until the oldest send of the last 24 h ages out of the daily window
    assert paused is not None and paused - now >= 86_400 - 60


async def test_gmail_invalid_argument_bounces_with_the_providers_words(
    world: World, fake: FakeProviders
) -> None:
    mailbox(world, fake, GMAIL, max_connections=1)  # one at a time: the fault is the first's
    fake.set_faults(["gmail_send*1=400 invalidArgument"])
    bad, good = submit(world, "bad")[0], submit(world, "good")[0]
    await world.services.dispatcher.run_once(time.time)
    bounced = view(world, bad)
    assert bounced.state is State.BOUNCED
    reply = bounced.recipients[0].reply
    assert reply is not None and reply.code == 400
    assert reply.text == "HTTP 400 Bad Request: invalidArgument: Invalid argument"
    assert view(world, good).state is State.DELIVERED


async def test_a_5xx_is_retried(world: World, fake: FakeProviders) -> None:
    mailbox(world, fake, GRAPH, retry=RetryPolicy(first_delay=60, jitter=0))
    fake.set_faults(["graph_send*1=500"])
    [one] = [submit(world, "m")[0]]
    now = time.time()
    await world.services.dispatcher.run_once(SteppingClock(now))
    deferred = view(world, one)
    assert deferred.state is State.DEFERRED and deferred.next_attempt_at == pytest.approx(now + 60)
    assert deferred.attempts[0].outcome == "retry"
    await world.services.dispatcher.run_once(SteppingClock(now + 61))
    assert view(world, one).state is State.DELIVERED
    assert [r["status"] for r in sends(fake, GRAPH)] == [500, 202]


@pytest.mark.parametrize("fault", ["stall", "drop"])
async def test_no_answer_after_the_request_is_retried_as_a_possible_duplicate(
    world: World, fake: FakeProviders, fault: str
) -> None:
    quick = Timeouts(connect=5, greeting=5, command=5, data_init=5, data_block=5, data_end=0.5)
    mailbox(world, fake, GRAPH, timeouts=quick, retry=RetryPolicy(first_delay=60, jitter=0))
    fake.set_faults([f"graph_send*1={fault}"])
    [one] = [submit(world, "m")[0]]
    now = time.time()
    await world.services.dispatcher.run_once(SteppingClock(now))
    deferred = view(world, one)
    assert deferred.state is State.DEFERRED and deferred.possible_duplicate
    assert deferred.attempts[0].outcome == "retry"
    assert "may have been delivered" in deferred.attempts[0].reply.text
    await world.services.dispatcher.run_once(SteppingClock(now + 61))
    assert view(world, one).state is State.DELIVERED and len(fake.received) == 1


@pytest.mark.parametrize("transport", [GMAIL, GRAPH])
async def test_a_refused_token_is_renewed_once_then_delivered(
    world: World, fake: FakeProviders, transport: TransportKind
) -> None:
    mailbox(world, fake, transport)
    source = world.services.dispatcher.credentials
    assert isinstance(source, TokenEndpoint)
    [first] = [submit(world, "first")[0]]
    await world.services.dispatcher.run_once(time.time)
    assert fake.expire(JANE) >= 1  # the token the source holds is now refused
    [second] = [submit(world, "second")[0]]
    await world.services.dispatcher.run_once(time.time)
    assert [view(world, i).state for i in (first, second)] == [State.DELIVERED] * 2
    assert source.renewals == 1
    assert [r["status"] for r in sends(fake, transport)][-2:] == [
        401,
        200 if transport is GMAIL else 202,
    ]


async def test_a_message_partly_delivered_before_the_switch_to_an_api_is_never_resent(
    world: World, fake: FakeProviders, tmp_path: Path
) -> None:
    """bob got it over SMTP, tempfail@ was deferred; then the mailbox moved to Graph. Graph
    would send to every address in To (bob again), so the rest bounces with the reason."""
    async with TestServer(maildir=tmp_path / "smtp") as smtp:
        channel = world.channel(smtp.port, security=Security.NONE, auth=Auth.NONE)
        rest = "tempfail@example.com"
        mid, _ = submit(world, "both", to=("bob@example.com", rest))
        await world.services.dispatcher.run_once(time.time)
        assert [r.state for r in view(world, mid).recipients] == [State.DELIVERED, State.DEFERRED]
    moved = replace(
        world.store.get_channel(channel.id),
        transport=GRAPH, oauth=Provider.MICROSOFT, auth=Auth.XOAUTH2,
    )  # fmt: skip
    world.store.update_channel(moved, None)
    world.services.dispatcher.credentials = token_source(fake, GRAPH)  # connected at the fake
    await world.services.dispatcher.run_once(SteppingClock(time.time() + 3600))
    after = view(world, mid)
    assert [r.state for r in after.recipients] == [State.DELIVERED, State.BOUNCED]
    reply = after.recipients[1].reply
    assert reply is not None and (reply.code, reply.enhanced) == (554, "5.6.0")
    assert "bob@example.com would get this message though not among its recipients" in reply.text
    assert fake.received == [] and sends(fake, GRAPH) == []


async def test_an_oauth_channel_made_from_a_preset_gets_its_transports_limits(
    world: World,
) -> None:
    spec = ChannelSpec(
        name="jane-365", preset="microsoft365", auth=Auth.XOAUTH2, username=JANE,
        address=JANE, transport=GRAPH, oauth=Provider.MICROSOFT,
    )  # fmt: skip
    channel, _ = world.services.channels.build(world.jane, spec, time.time())
    assert channel.transport is GRAPH and channel.max_connections == 4
    assert channel.max_recipients_per_message == 500
    assert [str(b) for b in channel.budgets] == ["30/60:messages", "10000/86400:recipients"]
    smtp, _ = world.services.channels.build(
        world.jane, replace(spec, transport=TransportKind.SMTP), time.time()
    )
    assert smtp.max_connections == 3  # Microsoft 365's SMTP limit


# -- Test connection of an API mailbox ------------------------------------------------------


def with_tokens(world: World) -> Any:
    tester = world.services.tester
    assert tester is not None
    tester.tokens = world.services.dispatcher.credentials
    return tester


@pytest.mark.parametrize("transport", [GMAIL, GRAPH])
async def test_probe_of_an_api_mailbox_shows_the_token_then_the_test_message(
    world: World, fake: FakeProviders, transport: TransportKind
) -> None:
    channel = mailbox(world, fake, transport)
    tester = with_tokens(world)
    bare = await tester.test(world.jane, channel.name, now=time.time())
    assert bare.ok and [s.name for s in bare.steps] == ["token"]
    assert f"an access token for {JANE}" in bare.steps[0].detail
    assert "does not allow reading the mailbox's profile" in bare.steps[0].detail
    assert fake.received == []

    sent = await tester.test(world.jane, channel.name, to="bob@example.com", now=time.time())
    assert sent.ok, sent
    assert [s.name for s in sent.steps] == ["token", "message"]
    message = sent.steps[-1]
    assert message.detail == f"test message from {JANE} to bob@example.com accepted"
    assert message.reply is not None and message.reply.startswith("HTTP 20")
    [got] = fake.received
    assert got["rcpt_to"] == ["bob@example.com"]
    [recorded] = [m for m in world.store.list_messages(_filter(world))[0] if m.test]
    assert recorded.state is State.DELIVERED
    assert all(tok not in repr(sent) for tok in _tokens(world))


async def test_probe_of_an_api_mailbox_with_a_revoked_grant_fails_at_the_token(
    world: World, fake: FakeProviders
) -> None:
    channel = mailbox(world, fake, GRAPH)
    tester = with_tokens(world)
    fake.revoke(JANE)
    report = await tester.test(world.jane, channel.name, now=time.time())
    [token] = report.steps
    assert not report.ok and token.name == "token" and not token.ok
    assert token.hint is not None and "Connect the mailbox again" in token.hint


async def test_probe_shows_the_apis_refusal_with_its_hint(
    world: World, fake: FakeProviders
) -> None:
    channel = mailbox(world, fake, GMAIL)
    tester = with_tokens(world)
    fake.set_faults(["gmail_send*1=403 insufficientPermissions"])
    report = await tester.test(world.jane, channel.name, to="bob@example.com", now=time.time())
    failed = report.failed
    assert failed is not None and failed.name == "message"
    assert failed.reply is not None and failed.reply.startswith(
        "HTTP 403 Forbidden: insufficientPermissions"
    )
    assert failed.hint is not None and "send scope" in failed.hint
    assert world.store.get_channel(channel.id).state is ChannelState.ACTIVE


def _filter(world: World) -> Any:
    from mailvia.outbox.records import MessageFilter

    return MessageFilter(world.jane.organization_id)


def _tokens(world: World) -> list[str]:
    source = world.services.dispatcher.credentials
    return [source.token] if isinstance(source, TokenEndpoint) and source.token else []
