"""A single `POST /v1/messages` reads in one transaction, its token's read included: the
token, the envelope sender's and the From's rights (one domain's owner and the sender's
identities read once between them), the route and the forecast; then the commit, in its own
transaction. On SQLite each read transaction is a pool checkout, a BEGIN and a COMMIT per
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
    reads: Counter[str] = Counter()

    def begin(conn: sa.Connection) -> None:
        begun.append("write" if conn.get_execution_options().get("mailvia_write") else "read")

    for name in ("domain_organization", "identities"):
        original = getattr(store, name)

        def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
            reads[_name] += 1
            return _original(*args)

        setattr(store, name, counted)
    jane = api.client("jane")
    body = raw_message(
        RAW, envelope={"mail_from": "bounces@acme.test", "rcpt_to": ["bob@example.com"]}
    )
    event.listen(store._db.engine, "begin", begin)
    try:
        answer = await jane.post("/v1/messages", json=body)
    finally:
        event.remove(store._db.engine, "begin", begin)
    assert answer.status_code == 202, answer.text
    assert answer.json()["forecast"]["queued_ahead"] == 0
    assert begun == ["read", "write"]  # the token and the rest; the commit
    assert reads == Counter(domain_organization=1, identities=1)


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
