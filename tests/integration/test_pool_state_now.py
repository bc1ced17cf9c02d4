"""Mail routed to the shared pool is held or queued as the pool's row reads now, not as it
read when the service was wired: the operator pauses the pool in another process (`mailvia
channel pause`) or the dispatcher disconnects it after serve started; the API's receipt
(202 `held`, its warning, no expected time), its route explanation and mailvia's own notices
say so. Resumed, mail is queued again. A route that lands elsewhere never reads the pool."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from mailvia.domain.channel import Auth, ChannelState, Security
from mailvia.domain.message import State
from mailvia.domain.tenancy import Fallback
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.notices import Notices
from mailvia.outbox.receipts import Receipt
from mailvia.outbox.submit import Submission, Submitter
from support.api import Api, message
from support.world import World

RELAY = "smtp://pool-login:pool-pass@relay.example.net:2525?security=starttls"


async def test_mail_for_a_pool_paused_or_disconnected_since_the_start_is_held(
    tmp_path: Path,
) -> None:
    """Jane has no channel of her own: her mail takes the pool. The pool is paused, then
    disconnected, then resumed in the store after the service was wired (and served)."""
    api = Api(World(tmp_path / "data", pool_relay=RELAY))
    try:
        store, jane = api.world.store, api.client("jane")
        first = await jane.post("/v1/messages", json=message())
        assert first.status_code == 202, first.text
        assert (first.json()["state"], first.json()["channel"]["id"]) == ("queued", "ch_pool")
        for state in (ChannelState.PAUSED, ChannelState.DISCONNECTED):
            store.set_channel_state("ch_pool", state, "421 4.7.0 acct-4711 over", time.time())
            answer = await jane.post("/v1/messages", json=message())
            assert answer.status_code == 202, answer.text
            got = answer.json()
            assert (got["state"], got["channel"]["id"]) == ("held", "ch_pool"), got
            assert [w["code"] for w in got["warnings"]] == [f"channel_{state}"], got
            assert got["forecast"]["expected_at"] is None, got
            assert store.get_message(got["id"]).state is State.HELD
            route = (await jane.get("/v1/route", params={"from": "jane@acme.test"})).json()
            assert route["held"] and route["channel"]["state"] == str(state), route
        store.set_channel_state("ch_pool", ChannelState.ACTIVE, None, time.time())
        answer = await jane.post("/v1/messages", json=message())
        assert answer.json()["state"] == "queued" and not answer.json()["warnings"], answer.text
        route = (await jane.get("/v1/route", params={"from": "jane@acme.test"})).json()
        assert not route["held"] and route["channel"]["state"] == "active", route
    finally:
        await api.aclose()


async def test_a_submitter_built_before_the_pause_holds_a_batch_with_one_read_of_the_pool(
    tmp_path: Path,
) -> None:
    """A batch of three routed to the pool reads its row once (`submit`, and `submit_each`
    as the API's batch and the submission port's group do); with fallback `next` a paused
    team channel skipped for the pool, paused too, holds the mail on the team channel."""
    world = World(tmp_path / "data", pool_relay=RELAY)
    try:
        store: Any = world.store
        wired = store.get_channel("ch_pool")
        submitter = Submitter(store, pool=lambda: wired)
        reads: Counter[str] = Counter()
        original = store.get_channel

        def counted(channel_id: str) -> Any:
            reads[channel_id] += 1
            return original(channel_id)

        store.get_channel = counted
        store.set_channel_state("ch_pool", ChannelState.PAUSED, "paused by ops", time.time())
        receipts = submitter.submit(world.jane, _drafts(3), now=time.time())
        assert [(r.state, r.channel.id) for r in receipts] == [(State.HELD, "ch_pool")] * 3
        assert reads == Counter(ch_pool=1)
        items = [(world.jane, item) for item in _drafts(3)]  # the API batch's, SMTP's group's
        each = submitter.submit_each(items, now=time.time())
        receipts = [r for r in each if isinstance(r, Receipt)]
        assert [(r.state, r.channel.id) for r in receipts] == [(State.HELD, "ch_pool")] * 3
        assert reads == Counter(ch_pool=2)
        team = world.team_channel(9)
        store.set_channel_state(team.id, ChannelState.PAUSED, "paused by boss", time.time())
        store.update_organization(
            world.jane.organization_id, default_channel_id=None, fallback=Fallback.NEXT
        )
        [held] = submitter.submit(world.jane, _drafts(1), now=time.time())
        assert (held.state, held.channel.id) == (State.HELD, team.id)
        store.set_channel_state("ch_pool", ChannelState.ACTIVE, None, time.time())
        [queued] = submitter.submit(world.jane, _drafts(1), now=time.time())
        assert (queued.state, queued.channel.id) == (State.QUEUED, "ch_pool")
    finally:
        await world.close()


async def test_a_post_routed_to_the_pool_reads_its_row_in_the_same_transaction(
    tmp_path: Path,
) -> None:
    """One more statement, inside the request's one read transaction, for mail that lands on
    the pool; none for mail that jane's own channel takes, a pool configured or not."""
    api = Api(World(tmp_path / "data", pool_relay=RELAY))
    try:
        store: Any = api.world.store
        jane = api.client("jane")
        pool_mail = await _counted(store, jane.post("/v1/messages", json=message()))
        api.world.channel(9, security=Security.NONE, auth=Auth.NONE)
        own_mail = await _counted(store, jane.post("/v1/messages", json=message()))
        assert pool_mail[0] == own_mail[0] == ["read", "write"]
        assert len(own_mail[1]) == 3, own_mail  # the token, the From's read, the backlog
        assert len(pool_mail[1]) == 4, pool_mail  # and the pool's row
        assert [s for s in pool_mail[1] if s.lstrip().upper().startswith("SELECT")] == pool_mail[1]
        assert sum("FROM channels" in s and "channels.id = " in s for s in pool_mail[1]) == 1
    finally:
        await api.aclose()


async def test_a_notice_on_a_pool_paused_since_the_start_is_held(tmp_path: Path) -> None:
    world = World(tmp_path / "data", pool_relay=RELAY)
    try:
        store = world.store
        wired = store.get_channel("ch_pool")
        notices = Notices(store, pool=lambda: wired, notice_from="mailvia@ops.test")
        store.set_channel_state("ch_pool", ChannelState.PAUSED, "paused by ops", time.time())
        held = notices.send(world.jane.organization_id, ["jane@acme.test"], "s", "t", time.time())
        assert held is not None and store.get_message(held).state is State.HELD
        store.set_channel_state("ch_pool", ChannelState.ACTIVE, None, time.time())
        sent = notices.send(world.jane.organization_id, ["jane@acme.test"], "s", "t", time.time())
        assert sent is not None and store.get_message(sent).state is State.QUEUED
    finally:
        await world.close()


def _drafts(count: int) -> list[Submission]:
    return [
        Submission(
            compose(
                Draft(from_="jane@acme.test", to=["bob@example.com"], subject="hi", text="hi"),
                now=time.time(),
                max_size=1_000_000,
            )
        )
        for _ in range(count)
    ]


async def _counted(store: Any, request: Any) -> tuple[list[str], list[str]]:
    """The transactions a request began (read or write) and the statements of its first."""
    begun: list[str] = []
    statements: list[str] = []

    def begin(conn: sa.Connection) -> None:
        begun.append("write" if conn.get_execution_options().get("mailvia_write") else "read")

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if begun == ["read"] and not sql.lstrip().upper().startswith(("BEGIN", "COMMIT")):
            statements.append(sql)

    engine = store._db.engine
    event.listen(engine, "begin", begin)
    event.listen(engine, "before_cursor_execute", statement)
    try:
        answer = await request
    finally:
        event.remove(engine, "begin", begin)
        event.remove(engine, "before_cursor_execute", statement)
    assert answer.status_code == 202, answer.text
    return begun, statements
