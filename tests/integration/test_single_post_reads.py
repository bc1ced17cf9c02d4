"""A single `POST /v1/messages` reads in one transaction, its token's read included: the
token, then the envelope sender's and the From's rights with the route's inputs in one
statement when they share a domain (`FromChecks`: the domain's owner, the sender's
identities, the organization and its channels), and the forecast; then the commit, in its
own transaction. On SQLite each read transaction is a pool checkout, a BEGIN and a COMMIT per
request. The token is still read on every request: a revoked one is refused at once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from mailvia.domain.channel import Auth, Security
from support.api import Api, assert_problem, raw_message
from support.world import World

RAW = (
    b"From: Jane <jane@acme.test>\r\nTo: bob@example.com\r\nSubject: hi\r\n"
    b"Message-ID: <m@acme.test>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n\r\nhello\r\n"
)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    api = Api(World(tmp_path / "data"))
    api.world.channel(9, security=Security.NONE, auth=Auth.NONE)
    api.world.store.grant_identity(api.world.jane.id, "@acme.test", time.time())
    yield api
    await api.aclose()


async def test_a_single_post_reads_once_with_its_token_then_commits(api: Api) -> None:
    store: Any = api.world.store
    begun: list[str] = []
    selects: list[str] = []
    reads: Counter[str] = Counter()

    def begin(conn: sa.Connection) -> None:
        begun.append("write" if conn.get_execution_options().get("mailvia_write") else "read")

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if sql.lstrip().upper().startswith("SELECT") and begun == ["read"]:
            selects.append(sql)

    names = ("domain_organization", "identities", "get_organization", "list_channels")
    for name in (*names, "user_from"):
        original = getattr(store, name)

        def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
            reads[_name] += 1
            return _original(*args)

        setattr(store, name, counted)
    jane = api.client("jane")
    body = raw_message(
        RAW, envelope={"mail_from": "bounces@acme.test", "rcpt_to": ["bob@example.com"]}
    )
    engine = store._db.engine
    event.listen(engine, "begin", begin)
    event.listen(engine, "before_cursor_execute", statement)
    try:
        answer = await jane.post("/v1/messages", json=body)
    finally:
        event.remove(engine, "begin", begin)
        event.remove(engine, "before_cursor_execute", statement)
    assert answer.status_code == 202, answer.text
    assert answer.json()["forecast"]["queued_ahead"] == 0
    assert begun == ["read", "write"]  # the token and the rest; the commit
    # The envelope sender and the From share acme.test: one read of the rights and the
    # route's inputs between them (main read the owner, the identities, the organization and
    # its channels: four statements).
    assert reads == Counter(user_from=1)
    assert len(selects) == 3, selects  # the token, the From's read, the channel's backlog


async def test_a_single_posts_senders_of_two_domains_are_read_each_with_its_answers(
    api: Api,
) -> None:
    """An envelope sender of another domain is read on its own, and refused as every
    intake refuses it; the From's read answers for the From and the route."""
    store: Any = api.world.store
    reads: Counter[str] = Counter()
    original = store.user_from

    def counted(*args: Any) -> Any:
        reads["user_from"] += 1
        return original(*args)

    store.user_from = counted
    jane = api.client("jane")
    body = raw_message(
        RAW, envelope={"mail_from": "bounces@elsewhere.test", "rcpt_to": ["bob@example.com"]}
    )
    assert_problem(
        await jane.post("/v1/messages", json=body),
        403,
        "envelope mail_from: bounces@elsewhere.test: the domain elsewhere.test is not assigned",
    )
    assert reads["user_from"] == 1
    body = raw_message(
        RAW.replace(b"jane@acme.test", b"jane@elsewhere.test"),
        envelope={"mail_from": "jane@acme.test", "rcpt_to": ["bob@example.com"]},
    )
    assert_problem(
        await jane.post("/v1/messages", json=body),
        403,
        "jane@elsewhere.test: the domain elsewhere.test is not assigned",
    )
    assert reads["user_from"] == 3  # the envelope sender's domain, then the From's
    body = raw_message(
        RAW.replace(b"jane@acme.test", b"JANE@Acme.test"),
        envelope={"mail_from": "nobody@acme.test", "rcpt_to": ["bob@example.com"]},
    )
    answer = await jane.post("/v1/messages", json=body)
    assert answer.status_code == 202, answer.text  # @acme.test covers them both


async def test_a_revoked_token_is_refused_on_its_next_post(api: Api) -> None:
    """The token is looked up on every request, inside the request's read transaction (its
    statement built once, nothing cached)."""
    jane = api.client("jane")
    body = raw_message(
        RAW, envelope={"mail_from": "jane@acme.test", "rcpt_to": ["bob@example.com"]}
    )
    assert (await jane.post("/v1/messages", json=body)).status_code == 202
    tokens = api.world.services.tokens
    [view] = tokens.of(api.world.jane)
    tokens.revoke(api.world.jane, view.id, time.time())
    assert_problem(await jane.post("/v1/messages", json=body), 401, "revoked")
