"""A group of new messages goes into messages, message_contents and recipients: on PostgreSQL
in one statement (store/message_inserts.py), on SQLite in four whatever the group's size.
Both keep the group's order (seqs rise with it: claims come back in submission order), each
message's own content and recipients, and all or nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from mailvia.domain.channel import Auth, Channel, Kind, Owner, Scope, Security
from mailvia.domain.errors import Conflict, NotFound
from mailvia.domain.message import Envelope, State
from mailvia.domain.tenancy import Role, User
from mailvia.outbox.ports import NewMessage
from mailvia.store import SqlStore, migrate, open_store

pytestmark = pytest.mark.timeout(60)
T0 = 1_700_000_000.0


def channel(channel_id: str, name: str) -> Channel:
    return Channel(
        id=channel_id,
        organization_id="org_1",
        name=name,
        kind=Kind.SMTP,
        host="smtp.acme.test",
        port=587,
        security=Security.STARTTLS,
        auth=Auth.PLAIN,
        scope=Scope.DOMAIN,
        owner=Owner(team_id="team_1"),
        username="relay",
        has_password=True,
        domains=("acme.test",),
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'mailvia.db'}"
    else:
        url = str(request.getfixturevalue("pg_url"))
    migrate(url)
    s = open_store(url)
    s.create_organization("org_1", "acme", T0)
    s.create_team("team_1", "org_1", "sales", T0)
    s.create_user(
        User("usr_1", "org_1", "team_1", "jane@acme.test", Role.ADMIN), password_hash="h", now=T0
    )
    s.add_channel(channel("ch_a", "relay"), b"sealed-a", T0)
    yield s
    s.close()


def message(n: int, *rcpts: str, state: State = State.QUEUED) -> NewMessage:
    return NewMessage(
        id=f"msg_{n}",
        organization_id="org_1",
        user_id="usr_1",
        channel_id="ch_a",
        envelope=Envelope(f"jane+{n}@acme.test", rcpts),
        content=f"Subject: number {n}\r\n\r\nbody {n}\r\n".encode() + bytes([0, 255]),
        state=state,
        created_at=T0 + n,
        expires_at=T0 + 86400 + n,
    )


@pytest.fixture
def statements(store: SqlStore) -> Iterator[list[str]]:
    sent: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        sent.append(statement)

    event.listen(store._db.engine, "before_cursor_execute", count)
    yield sent
    event.remove(store._db.engine, "before_cursor_execute", count)


def test_a_group_keeps_its_order_contents_and_recipients(
    store: SqlStore, statements: list[str]
) -> None:
    group = [
        message(1, "a@x.test"),
        message(2, "b@x.test", "c@x.test", "d@x.test"),
        message(3, "e@x.test", state=State.HELD),
        message(4, "f@x.test", "g@x.test"),
    ]
    statements.clear()
    assert store.add_messages(group) == [(m.id, True) for m in group]
    if store._db.dialect == "postgresql":
        assert statements == [statements[0]]  # messages, contents, recipients: one statement
    else:  # BEGIN IMMEDIATE; the messages, their seqs, contents, recipients: not one per row
        assert len(statements) == 5
    held = store.get_message("msg_3")
    assert held.state is State.HELD and held.envelope.rcpt_to == ("e@x.test",)
    assert held.subject == "number 3" and held.next_attempt_at == T0 + 3
    claims = store.claim(channel_id="ch_a", now=T0 + 10, limit=10, lease_until=T0 + 99, worker="w")
    assert [c.message_id for c in claims] == ["msg_1", "msg_2", "msg_4"]
    assert [c.seq for c in claims] == sorted(c.seq for c in claims)
    for claim, sent in zip(claims, [group[0], group[1], group[3]], strict=True):
        assert claim.content == sent.content and claim.pending == sent.envelope.rcpt_to
        assert claim.mail_from == sent.envelope.mail_from
        assert claim.created_at == sent.created_at and claim.expires_at == sent.expires_at
    view = store.get_message("msg_2")
    assert view.size == len(group[1].content) and not view.possible_duplicate
    assert [r.state for r in view.recipients] == [State.SENDING] * 3


def test_a_group_with_a_taken_id_commits_nothing(store: SqlStore) -> None:
    store.add_messages([message(1, "a@x.test")])
    with pytest.raises(Conflict):
        store.add_messages([message(2, "b@x.test"), message(1, "c@x.test")])
    with pytest.raises(NotFound):
        store.get_message("msg_2")
    with store._db.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM message_contents")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM recipients")).scalar() == 1
