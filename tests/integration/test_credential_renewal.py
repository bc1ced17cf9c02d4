"""The dispatcher asks its credential source for every transaction of an OAuth mailbox and
renews a refused token once; a second refusal, or a source that cannot give credentials,
settles like a server's reply (through the real store). The transport here answers as a
server would to a token; the token side is covered against the fake providers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mailvia.domain.channel import (
    Auth,
    Channel,
    ChannelState,
    Kind,
    Owner,
    Provider,
    Scope,
    Security,
)
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.errors import CredentialsFailed
from mailvia.domain.message import Envelope, State
from mailvia.domain.presets import PRESETS
from mailvia.domain.replies import Reply, Stage
from mailvia.outbox.ports import Credentials
from support.transports import QuietTransport
from support.world import World

OK = Reply(250, "2.0.0", "OK")
REFUSED = Reply(535, "5.7.8", "Username and Password not accepted")


class TokenServer(QuietTransport):
    """Accepts only the token named `good`, as Gmail's XOAUTH2 would; notes what it saw."""

    def __init__(self, good: str) -> None:
        self.good = good
        self.seen: list[str] = []

    async def send(
        self, channel: Channel, credentials: Credentials | None, envelope: Envelope, content: bytes
    ) -> TransactionResult:
        token = credentials.password if credentials else ""
        self.seen.append(token)
        if token != self.good:
            return TransactionResult(Stage.AUTH, REFUSED)
        return TransactionResult(Stage.DATA_END, OK, dict.fromkeys(envelope.rcpt_to, OK))


class Source:
    """Hands out `tokens` in turn: the next one each time a token is reported refused."""

    def __init__(self, *tokens: str, fail: Reply | None = None) -> None:
        self.tokens = list(tokens)
        self.fail = fail
        self.renewals = 0
        self.calls = 0

    async def __call__(
        self, channel: Channel, *, rejected: Credentials | None = None, renew: bool = False
    ) -> Credentials | None:
        self.calls += 1
        if self.fail is not None:
            raise CredentialsFailed(self.fail)
        refused = renew or (rejected is not None and rejected.password == self.tokens[0])
        if refused and len(self.tokens) > 1:
            self.tokens.pop(0)
            self.renewals += 1
        return Credentials("jane@acme.test", self.tokens[0])


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    yield w
    await w.close()


def oauth_mailbox(world: World, **changes: Any) -> Channel:
    channel = Channel(
        id="ch_oauth",
        organization_id=world.jane.organization_id,
        name="jane-gmail",
        kind=Kind.SMTP,
        host="smtp.gmail.com",
        port=587,
        security=Security.STARTTLS,
        auth=Auth.XOAUTH2,
        scope=Scope.ADDRESS,
        owner=Owner(user_id=world.jane.id),
        preset="gmail",
        username="jane@acme.test",
        address="jane@acme.test",
        oauth=Provider.GOOGLE,
    )
    return world.store.add_channel(replace(channel, **changes), None, time.time())


async def run(world: World, server: TokenServer, source: Source) -> list[str]:
    dispatcher = world.services.dispatcher
    dispatcher.transport, dispatcher.credentials = server, source
    ids = [r.id for r in world.send(count=3)]
    await dispatcher.run_once(time.time)
    return [str(world.store.get_message(i).state) for i in ids]


async def test_a_refused_token_is_renewed_once_and_the_mail_delivered(world: World) -> None:
    oauth_mailbox(world)
    server, source = TokenServer("fresh"), Source("stale", "fresh")
    assert await run(world, server, source) == ["delivered"] * 3
    assert source.renewals == 1
    assert server.seen[:2] == ["stale", "fresh"]
    assert server.seen.count("stale") == 1


async def test_a_second_refusal_after_a_fresh_token_disconnects(world: World) -> None:
    channel = oauth_mailbox(world)
    server, source = TokenServer("never"), Source("stale", "fresh")
    states = await run(world, server, source)
    assert states == ["held"] * 3
    assert server.seen[:2] == ["stale", "fresh"]  # one renewal, then no more tries
    after = world.store.get_channel(channel.id)
    assert after.state is ChannelState.DISCONNECTED
    assert after.state_reason is not None and after.state_reason.startswith("535 5.7.8")
    assert "refused a freshly renewed token (535 5.7.8 Username" in after.state_reason
    assert after.state_reason.endswith("reconnect with Google")


async def test_a_password_channel_is_not_retried_after_a_refusal(world: World) -> None:
    channel = oauth_mailbox(world)
    world.store.update_channel(replace(channel, oauth=None, auth=Auth.PLAIN), None)
    server, source = TokenServer("fresh"), Source("stale", "fresh")
    assert await run(world, server, source) == ["held"] * 3
    assert server.seen == ["stale"]
    assert source.renewals == 0


@pytest.mark.parametrize(
    ("reply", "state", "channel_state"),
    [
        (
            Reply(535, "5.7.8", "mailvia: Google refused the grant (invalid_grant)"),
            "held",
            ChannelState.DISCONNECTED,
        ),
        (
            Reply(451, "4.4.2", "mailvia: could not renew the access token"),
            "deferred",
            ChannelState.ACTIVE,
        ),
    ],
)
async def test_credentials_that_cannot_be_had_settle_like_a_reply(
    world: World, reply: Reply, state: str, channel_state: ChannelState
) -> None:
    """A refusal holds the mail and disconnects; a temporary failure defers the message tried
    and ends the run (the rest is left queued, untried: the channel waits)."""
    channel = oauth_mailbox(world, max_connections=1)
    server = TokenServer("fresh")
    dispatcher = world.services.dispatcher
    dispatcher.transport, dispatcher.credentials = server, Source("x", fail=reply)
    ids = [r.id for r in world.send(count=3)]
    await dispatcher.run_once(time.time)
    store = world.store
    rest = State.HELD if state == "held" else State.QUEUED
    assert [store.get_message(i).state for i in ids] == [State(state), rest, rest]
    assert server.seen == []  # nothing reached the server without credentials
    assert store.get_channel(channel.id).state is channel_state
    first = store.get_message(ids[0])
    assert first.attempts and first.attempts[0].reply == reply


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_an_attempt_refused_at_the_tokens_renewal_uses_none_of_the_budgets(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Microsoft 365's 30 messages a minute and 10,000 recipients a day count what reaches
    it: mail that never left for want of a token is given back to the ledger."""
    url = request.getfixturevalue("migrated_pg_url") if backend == "postgresql" else None
    world = World(tmp_path / "data", db_url=url)
    try:
        budgets = PRESETS["microsoft365"].budgets
        channel = oauth_mailbox(world, preset="microsoft365", budgets=budgets)
        dispatcher = world.services.dispatcher
        refused = Reply(451, "4.4.2", "mailvia: could not renew the access token")
        dispatcher.transport, dispatcher.credentials = TokenServer("t"), Source("t", fail=refused)
        ids = [r.id for r in world.send(count=3, to=("a@example.com", "b@example.com"))]
        await dispatcher.run_once(time.time)
        states = [world.store.get_message(i).state for i in ids]
        assert State.DEFERRED in states and set(states) <= {State.DEFERRED, State.QUEUED}
        now = time.time()
        ledger = world.store.budget_ledger(channel.id, budgets)
        assert ledger.allowance(now) == 30 and len(ledger.log(now)) == 0
        # Mail that does reach it counts, as before (once the channel's wait is over).
        world.store.set_channel_throttle(channel.id, None, 0)
        dispatcher.credentials = Source("t")
        sent = [r.id for r in world.send(count=2)]
        await dispatcher.run_once(time.time)
        assert {world.store.get_message(i).state for i in sent} == {State.DELIVERED}
        left = states.count(State.QUEUED)  # the first run's untried mail goes now too
        assert ledger.allowance(time.time()) == 28 - left
    finally:
        await world.close()


async def test_the_token_endpoint_down_is_asked_a_few_times_per_run_not_per_message(
    world: World,
) -> None:
    """With the token endpoint down (451 4.4.2), a run ends at its first attempts, as for a
    server that cannot be reached: the rest of the queue is left untried (queued), the
    channel waits (throttled), and the endpoint is asked at most once per connection, not
    once per queued message."""
    channel = oauth_mailbox(world, max_connections=3)
    down = Reply(451, "4.4.2", "mailvia: could not renew the access token (HTTP 503)")
    source = Source("t", fail=down)
    dispatcher = world.services.dispatcher
    dispatcher.transport, dispatcher.credentials = TokenServer("t"), source
    ids = [r.id for r in world.send(count=60)]
    await dispatcher.run_once(time.time)
    assert 1 <= source.calls <= channel.max_connections
    states = [world.store.get_message(i).state for i in ids]
    assert states.count(State.DEFERRED) == source.calls
    assert states.count(State.QUEUED) == len(ids) - source.calls
    after = world.store.get_channel(channel.id)
    assert after.state is ChannelState.ACTIVE
    assert after.throttled_until is not None and after.throttled_until > time.time()
    await dispatcher.run_once(time.time)  # waiting: the endpoint is not asked again
    assert source.calls <= channel.max_connections
