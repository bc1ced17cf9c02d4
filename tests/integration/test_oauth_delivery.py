"""OAuth mailboxes delivering, in process, against the fake providers: connected through the
pages, sending by SMTP XOAUTH2 to the fake's SMTP side (STARTTLS with a test CA, standing in
for smtp.gmail.com), the fake's token endpoint renewing their tokens. An access token that
expires between messages is renewed exactly once; a consent revoked at the provider
disconnects the channel, holds its mail and tells its owner (notice, event, the page's
banner); reconnecting releases the held mail in order, none twice."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailvia.domain.channel import Channel, ChannelState, Provider
from mailvia.domain.clock import SteppingClock
from mailvia.domain.message import State
from mailvia.domain.oauth import AppSource
from mailvia.domain.probe import fix_for_reason
from mailvia.testserver import ThreadedTestServer
from mailvia.testserver.fake import FakeProviders
from support.fake_providers import running
from support.oauth import connect, oauth_world, pages, sign_in
from support.world import Certs, World, make_certs

JANE = "jane@acme.test"


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def fake(tmp_path: Path, certs: Certs) -> Iterator[FakeProviders]:
    """The fake providers with their SMTP side (XOAUTH2 with their tokens) over STARTTLS."""
    tls = {"tls_cert": certs.cert, "tls_key": certs.key}
    yield from running(tmp_path / "fake-maildir", smtp_port=0, smtp_options=tls)


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[ThreadedTestServer]:
    with ThreadedTestServer(maildir=tmp_path / "pool") as server:
        yield server


@pytest.fixture
async def world(
    tmp_path: Path, fake: FakeProviders, pool: ThreadedTestServer
) -> AsyncIterator[World]:
    w = oauth_world(
        tmp_path / "data",
        fake,
        pool_relay=f"smtp://127.0.0.1:{pool.port}?security=none",
        notice_from="notices@mailvia.test",
    )
    yield w
    await w.close()


@pytest.fixture
async def jane(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with pages(world) as client:
        yield await sign_in(client, world, JANE)


async def gmail_by_smtp(
    world: World, jane: httpx.AsyncClient, fake: FakeProviders, certs: Certs
) -> Channel:
    """Connect Gmail (transport smtp) and point it at the fake's SMTP side (one connection:
    the order mail arrives in is the order it left in)."""
    channel_id = await connect(jane, fake, "google", JANE, transport="smtp")
    store = world.store
    channel = store.get_channel(channel_id)
    assert fake.smtp is not None
    here = replace(
        channel, host="127.0.0.1", port=fake.smtp.port, ca_pem=certs.ca_pem, max_connections=1
    )
    return store.update_channel(here)  # type: ignore[call-arg]


def subjects(fake: FakeProviders) -> list[str]:
    return [str(message_from_bytes(r["content"])["Subject"]) for r in fake.received]


def refreshes(fake: FakeProviders) -> int:
    return sum(fake.refresh_counts().values())


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)


async def deliver(world: World) -> None:
    await world.services.dispatcher.run_once(time.time)


async def test_a_token_that_expires_between_messages_is_renewed_once(
    world: World, jane: httpx.AsyncClient, fake: FakeProviders, certs: Certs
) -> None:
    channel = await gmail_by_smtp(world, jane, fake, certs)
    world.send(subject="first")
    await deliver(world)
    assert subjects(fake) == ["first 0"] and refreshes(fake) == 0
    assert fake.expire(JANE) >= 1  # the provider's clock says the token is over
    await world.transport.forget(channel.id)  # the next message signs in again
    world.send(subject="second", count=3)
    await deliver(world)
    assert subjects(fake) == ["first 0", "second 0", "second 1", "second 2"]
    assert refreshes(fake) == 1
    via = {(r["via"], r["account"]) for r in fake.received}
    assert via == {("smtp", JANE)}


async def test_a_revoked_consent_disconnects_holds_tells_and_reconnect_releases_in_order(
    world: World,
    jane: httpx.AsyncClient,
    fake: FakeProviders,
    certs: Certs,
    pool: ThreadedTestServer,
) -> None:
    channel = await gmail_by_smtp(world, jane, fake, certs)
    store = world.store
    world.send(subject="before")
    await deliver(world)
    fake.revoke(JANE)
    # An SMTP session already signed in is not asked again: the next sign-in is refused.
    await world.transport.forget(channel.id)
    held = [r.id for r in world.send(subject="held", count=3)]
    await deliver(world)
    broken = store.get_channel(channel.id)
    assert broken.state is ChannelState.DISCONNECTED
    assert "invalid_grant" in (broken.state_reason or "")
    assert "reconnect with Google" in (broken.state_reason or "")
    assert [store.get_message(i).state for i in held] == [State.HELD] * 3
    assert refreshes(fake) == 0 and subjects(fake) == ["before 0"]
    events, _ = store.list_events(world.jane.organization_id, cursor=None, limit=100)
    assert [e.data["held"] for e in events if e.type == "channel.disconnected"] == [3]
    # The owner hears of it: a notice through the shared pool, and a banner on every page.
    await world.services.dispatcher.run_once(SteppingClock(time.time() + 3600))
    [notice] = pool.wait_for(1)
    assert notice["rcpt_to"] == [JANE]
    body = message_from_bytes(notice["content"]).get_payload(decode=True)
    assert isinstance(body, bytes) and b'"Reconnect with Google"' in body
    page = (await jane.get("/channel")).text
    assert f"{broken.name} is disconnected" in page
    assert "3 messages are held" in page
    assert f'href="/oauth/google/start?channel={channel.id}">Reconnect with Google' in page
    # Reconnect: a new consent for the same address; the held mail leaves in its order.
    link = re.search(r'href="(/oauth/google/start\?channel=[^"]+)"', page)
    assert link is not None
    again = await connect(jane, fake, "google", JANE, channel=channel.id)
    assert again == channel.id
    back = store.get_channel(channel.id)
    assert back.state is ChannelState.ACTIVE and back.transport == channel.transport
    assert (back.host, back.port) == (channel.host, channel.port)  # its settings are kept
    await deliver(world)
    assert subjects(fake) == ["before 0", "held 0", "held 1", "held 2"]
    assert [store.get_message(i).state for i in held] == [State.DELIVERED] * 3
    events, _ = store.list_events(world.jane.organization_id, cursor=None, limit=100)
    assert [e.data["released"] for e in events if e.type == "channel.reconnected"] == [3]


@pytest.mark.parametrize(("provider", "via"), [("google", "gmail_api"), ("microsoft", "graph")])
async def test_a_revoked_consent_at_the_api_disconnects_and_reconnect_releases(
    world: World, jane: httpx.AsyncClient, fake: FakeProviders, provider: str, via: str
) -> None:
    """Each API call carries the token, so revocation is noticed at the very next message."""
    channel_id = await connect(jane, fake, provider, JANE)
    store = world.store
    one = replace(store.get_channel(channel_id), max_connections=1)  # arrival order = order
    store.update_channel(one)  # type: ignore[call-arg]
    world.send(subject="before")
    await deliver(world)
    assert [(r["via"], r["account"]) for r in fake.received] == [(via, JANE)]
    fake.revoke(JANE)
    held = [r.id for r in world.send(subject="held", count=2)]
    await deliver(world)
    broken = store.get_channel(channel_id)
    assert broken.state is ChannelState.DISCONNECTED
    assert "invalid_grant" in (broken.state_reason or "")
    assert [store.get_message(i).state for i in held] == [State.HELD] * 2
    await connect(jane, fake, provider, JANE, channel=channel_id)
    await deliver(world)
    assert subjects(fake) == ["before 0", "held 0", "held 1"]


async def test_test_connection_asks_the_provider_so_a_revoked_consent_fails_and_disconnects(
    world: World, jane: httpx.AsyncClient, fake: FakeProviders, pool: ThreadedTestServer
) -> None:
    """Test connection renews the token rather than trusting the one in hand: a valid grant
    gets a fresh token (stored sealed), a revoked one fails with the reconnect hint and
    disconnects the mailbox as a message would (mail held, event, the owner told)."""
    channel_id = await connect(jane, fake, "google", JANE)
    store, tester = world.store, world.services.tester
    world.send(subject="before")
    await deliver(world)  # the dispatcher's source now holds a good access token
    before = store.oauth_tokens(channel_id)
    passed = await tester.test(world.jane, channel_id, now=time.time())
    assert passed.ok and refreshes(fake) == 1  # asked the provider, not the token in hand
    after = store.oauth_tokens(channel_id)
    assert before is not None and after is not None and after.access != before.access
    fresh = world.services.channels.vault.open(after.access)
    assert fresh not in after.access and fresh.decode() not in repr(passed)  # sealed, unsaid
    fake.revoke(JANE)
    held = world.send(subject="held")[0].id
    failed = await tester.test(world.jane, channel_id, now=time.time())
    [token] = failed.steps
    assert not failed.ok and token.name == "token" and not token.ok
    assert token.hint is not None and "Connect the mailbox again" in token.hint
    broken = store.get_channel(channel_id)
    assert broken.state is ChannelState.DISCONNECTED
    assert "reconnect with Google" in (broken.state_reason or "")
    assert store.get_message(held).state is State.HELD
    events, _ = store.list_events(world.jane.organization_id, cursor=None, limit=100)
    assert [e.data["held"] for e in events if e.type == "channel.disconnected"] == [1]
    await world.services.dispatcher.run_once(SteppingClock(time.time() + 3600))
    [notice] = pool.wait_for(1)  # the owner's notice, through the shared pool
    assert notice["rcpt_to"] == [JANE]


async def test_test_connection_with_the_provider_down_disconnects_nothing(
    world: World, jane: httpx.AsyncClient, fake: FakeProviders
) -> None:
    """A renewal the provider could not answer (503 at its token endpoint) says nothing about
    the grant: the test fails, the mailbox stays active and its mail queued (only a refused
    consent disconnects)."""
    channel_id = await connect(jane, fake, "google", JANE)
    store, tester = world.store, world.services.tester
    fake.set_faults(["refresh*2=503"])
    queued = world.send(subject="queued")[0].id
    failed = await tester.test(world.jane, channel_id, now=time.time())
    [token] = failed.steps
    assert not failed.ok and token.name == "token" and not token.ok
    assert store.get_channel(channel_id).state is ChannelState.ACTIVE
    assert store.get_message(queued).state is State.QUEUED


@pytest.mark.parametrize("due", [False, True], ids=["token-good", "token-due"])
async def test_test_connection_asks_the_token_endpoint_once(
    world: World, jane: httpx.AsyncClient, fake: FakeProviders, due: bool
) -> None:
    """Test connection renews the token once, whether the one stored is still good or
    already due (a source that first renews a due token, then renews that one again as
    refused, asked the provider twice)."""
    channel_id = await connect(jane, fake, "google", JANE)
    store = world.store
    if due:  # the stored token is past its time (as when no mail went for an hour)
        stored = store.oauth_tokens(channel_id)
        assert stored is not None
        now = time.time()
        assert store.lease_tokens(channel_id, "test", now, now + 30)
        assert store.save_refreshed(replace(stored, expires_at=now - 1), "test") is not None
    before = refreshes(fake)
    report = await world.services.tester.test(world.jane, channel_id, now=time.time())
    assert report.ok, report
    assert refreshes(fake) - before == 1


async def test_a_renewal_asked_for_takes_a_token_renewed_meanwhile(
    tmp_path: Path, fake_providers: FakeProviders, migrated_store_url: str
) -> None:
    """With `renew`, a token another caller renewed meanwhile does as well (ports.py): while
    another process holds the lease, Test connection's source waits; that process saves a
    renewed token, and the source hands it out, asking the token endpoint nothing (a source
    that took each token it read as the one to renew past waited on for its own)."""
    fake = fake_providers
    world = oauth_world(tmp_path / "data", fake, db_url=migrated_store_url, worker_id="one")
    try:
        async with pages(world) as jane:
            await sign_in(jane, world, JANE)
            channel_id = await connect(jane, fake, "google", JANE)
        store, channel = world.store, world.store.get_channel(channel_id)
        now = time.time()
        assert store.lease_tokens(channel_id, "two", now, now + 30)  # "two" is renewing
        reads = 0
        read_tokens = store.oauth_tokens

        def counted(channel_id: str) -> Any:
            nonlocal reads
            reads += 1
            return read_tokens(channel_id)

        store.oauth_tokens = counted  # type: ignore[method-assign]
        before = refreshes(fake)
        asked = asyncio.create_task(world.services.dispatcher.credentials(channel, renew=True))
        await until(lambda: reads >= 2)  # it read the token to renew past, and waits on
        assert not asked.done()
        stored = read_tokens(channel_id)
        assert stored is not None
        renewed = replace(stored, access=world.vault.seal(b"renewed-by-two"), expires_at=now + 3600)
        assert store.save_refreshed(renewed, "two") is not None
        got = await asyncio.wait_for(asked, 10)
        assert got is not None and got.password == "renewed-by-two"
        assert refreshes(fake) == before
    finally:
        await world.close()


async def test_an_app_whose_secret_the_provider_refuses_sends_the_rep_to_an_admin(
    world: World, jane: httpx.AsyncClient, fake: FakeProviders, pool: ThreadedTestServer
) -> None:
    """The token endpoint refusing the organization's app itself (invalid_client: its secret
    wrong or expired, as Entra client secrets do) is not the rep's consent:
    the channel disconnects (its mail held) with a reason and hints that name the app and the
    admin's page, never a revoked consent or a changed password, which reconnecting alone
    would not mend."""
    own_app(world)
    channel_id = await connect(jane, fake, "google", JANE)
    fake.set_faults(["refresh=401 invalid_client"])
    failed = await world.services.tester.test(world.jane, channel_id, now=time.time())
    [token] = failed.steps
    assert not failed.ok and token.hint is not None
    assert "organization's OAuth app" in token.hint and "Team channels page" in token.hint
    assert "no reconnect needed" in token.hint and "then reconnect" not in token.hint
    broken = world.store.get_channel(channel_id)
    assert broken.state is ChannelState.DISCONNECTED
    reason = broken.state_reason or ""
    assert "refused the organization's OAuth app (invalid_client)" in reason
    assert "no longer honours the consent" not in reason
    api_hint = fix_for_reason(reason)  # the API's state_hint, `message show`, send --wait
    assert api_hint is not None and "Team channels page" in api_hint
    page = (await jane.get(f"/channels/{channel_id}")).text
    assert "Team channels page" in page and "password changed" not in page
    # the Access line says the tokens were refused, not that they are renewed
    assert "Google refused to renew them" in page and "is renewed before" not in page
    # the owner's notice names where the mailbox sends (the API, not the preset's SMTP host)
    await world.services.dispatcher.run_once(SteppingClock(time.time() + 3600))
    [notice] = [n for n in pool.wait_for(2) if n["rcpt_to"] == [JANE]]  # the admin's beside
    body = Path(notice["file"]).read_text().replace("=\n", "")
    assert "(the Gmail API)" in body and "smtp.gmail.com" not in body
    assert "ask an admin" in body and "Team channels page" in body


@pytest.mark.parametrize("error", ["deleted_client", "disabled_client", "unauthorized_client"])
async def test_a_deleted_or_disabled_app_is_not_told_as_the_reps_revoked_consent(
    world: World, jane: httpx.AsyncClient, fake: FakeProviders, error: str
) -> None:
    """Google answers a refresh for a deleted OAuth client with 401 `deleted_client` (and a
    disabled one with `disabled_client`); `unauthorized_client` is the client's too (RFC 6749
    §5.2): the app's fault, which reconnecting alone does not mend, never the rep's revoked
    consent or changed password."""
    channel_id = await connect(jane, fake, "google", JANE)
    fake.set_faults([f"refresh=401 {error}"])
    failed = await world.services.tester.test(world.jane, channel_id, now=time.time())
    [token] = failed.steps
    reason = world.store.get_channel(channel_id).state_reason or ""
    assert f"refused the operator's OAuth app ({error})" in reason, reason
    assert "no longer honours the consent" not in reason
    assert token.hint is not None and "password changed" not in token.hint
    # the operator's app (the settings) is not the admin's to mend on the Team channels page:
    # the hints name whoever runs mailvia, or the organization's own app set up instead
    for hint in (token.hint, fix_for_reason(reason) or ""):
        assert "organization's OAuth app" not in hint and "enters the app's current" not in hint
        assert "whoever runs mailvia" in hint and "OAUTH_GOOGLE_CLIENT_ID" in hint
        assert "sets up the organization's own app on the Team channels page" in hint


def own_app(world: World) -> None:
    """The organization's own Google app (the operator's client, entered by an admin)."""
    apps = world.services.oauth_apps
    assert apps is not None
    operator = apps.operator[Provider.GOOGLE]
    apps.put(
        world.admin,
        Provider.GOOGLE,
        client_id=operator.client_id,
        client_secret=operator.client_secret,
        tenant=None,
        now=time.time(),
    )
    assert apps.view(world.admin, Provider.GOOGLE).source is AppSource.ORGANIZATION


async def test_the_operators_app_refused_sends_the_rep_to_the_operator_not_the_team_page(
    world: World, jane: httpx.AsyncClient, fake: FakeProviders, pool: ThreadedTestServer
) -> None:
    """With no app of its own, the organization's mailboxes use the operator's (the
    settings): refused, the reason, the page and the owner's notice name that app and who
    mends it, never an admin entering its secret on the Team channels page."""
    apps = world.services.oauth_apps
    assert apps is not None
    assert apps.view(world.admin, Provider.GOOGLE).source is AppSource.OPERATOR
    channel_id = await connect(jane, fake, "google", JANE)
    fake.set_faults(["refresh=401 invalid_client"])
    await world.services.tester.test(world.jane, channel_id, now=time.time())
    reason = world.store.get_channel(channel_id).state_reason or ""
    assert "refused the operator's OAuth app (invalid_client)" in reason, reason
    page = html.unescape((await jane.get(f"/channels/{channel_id}")).text)
    assert "whoever runs mailvia" in page and "enters the app's current" not in page
    await world.services.dispatcher.run_once(SteppingClock(time.time() + 3600))
    [notice] = [n for n in pool.wait_for(2) if n["rcpt_to"] == [JANE]]  # the admin's beside
    body = " ".join(Path(notice["file"]).read_text().replace("=\n", "").split())
    assert "refused the operator's OAuth app, not your mailbox" in body
    assert "whoever runs mailvia" in body and "enter its current client secret" not in body


async def test_the_access_line_says_the_provider_refused_only_when_it_was_asked(
    world: World, jane: httpx.AsyncClient, fake: FakeProviders
) -> None:
    """The mailbox's app is no longer set up: mailvia writes the failure without asking the
    provider, so the Access line says the tokens can no longer be renewed, not that Google
    refused to renew them."""
    channel_id = await connect(jane, fake, "google", JANE)
    apps = world.services.oauth_apps
    assert apps is not None
    apps.operator.clear()  # the app this mailbox was connected with is gone
    await world.services.tester.test(world.jane, channel_id, now=time.time())
    channel = world.store.get_channel(channel_id)
    assert channel.state is ChannelState.DISCONNECTED
    assert "no longer set up" in (channel.state_reason or "")
    page = (await jane.get(f"/channels/{channel_id}")).text
    assert "Google refused to renew them" not in page
    assert "they can no longer be renewed: reconnect to send again" in page


async def test_a_graph_mailboxs_notice_names_microsoft_graph_not_an_smtp_host(
    world: World, jane: httpx.AsyncClient, fake: FakeProviders, pool: ThreadedTestServer
) -> None:
    """A Microsoft 365 mailbox sending through Graph never dials smtp.office365.com: its
    owner's notice says it sends through Microsoft Graph."""
    channel_id = await connect(jane, fake, "microsoft", JANE)
    channel = world.store.get_channel(channel_id)
    assert channel.transport == "graph" and channel.host == "smtp.office365.com"
    fake.set_faults(["refresh=400 invalid_grant"])
    await world.services.tester.test(world.jane, channel_id, now=time.time())
    await world.services.dispatcher.run_once(SteppingClock(time.time() + 3600))
    [notice] = pool.wait_for(1)
    body = Path(notice["file"]).read_text().replace("=\n", "")
    assert "(Microsoft Graph)" in body and "smtp.office365.com" not in body
