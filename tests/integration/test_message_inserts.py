"""A group of new messages goes into messages, message_contents and recipients
(store/message_inserts.py) in one write transaction, in a fixed number of statements whatever
the group's size (four on SQLite; three over binary arrays on PostgreSQL, more only for a
group whose contents pass `PART_BYTES`), on SQLite and PostgreSQL: the group's order kept
(seqs rise with it: claims come back in submission order), each message's own content (any
bytes, any size) and recipients, and all or nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from mailvia.domain.errors import Conflict, NotFound
from mailvia.domain.message import Envelope, State
from mailvia.domain.tenancy import Role, User
from mailvia.outbox.headers import subject_of
from mailvia.outbox.ports import NewMessage
from mailvia.store import SqlStore, message_inserts, message_inserts_pg, migrate, open_store
from support.databases import migrated_sqlite_file
from support.rows import channel

pytestmark = pytest.mark.timeout(60)
T0 = 1_700_000_000.0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{migrated_sqlite_file(tmp_path / 'mailvia.db')}"
    else:
        url = str(request.getfixturevalue("migrated_pg_url"))
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


@pytest.fixture
def autocommit(store: SqlStore) -> Iterator[list[bool]]:
    """Per statement sent, whether the driver ran it in autocommit. psycopg's own BEGIN and
    COMMIT never reach `before_cursor_execute`: its autocommit state tells whether it sent
    them. (pysqlite runs with transaction control taken away: the BEGIN shows as a statement.)"""
    states: list[bool] = []

    def look(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        dbapi = conn.connection.dbapi_connection
        states.append(bool(dbapi.autocommit) if store._db.dialect == "postgresql" else False)

    event.listen(store._db.engine, "before_cursor_execute", look)
    yield states
    event.remove(store._db.engine, "before_cursor_execute", look)


def test_a_group_keeps_its_order_contents_and_recipients(
    store: SqlStore, statements: list[str], autocommit: list[bool]
) -> None:
    group = [
        message(1, "a@x.test"),
        message(2, "b@x.test", "c@x.test", "d@x.test"),
        message(3, "e@x.test", state=State.HELD),
        message(4, "f@x.test", "g@x.test"),
    ]
    statements.clear()
    autocommit.clear()
    assert store.add_messages(group) == [(m.id, True) for m in group]
    # the messages, their seqs, contents, recipients: not one statement per row, and in a
    # transaction (SQLite's BEGIN IMMEDIATE shows as a statement; psycopg's BEGIN does not)
    assert autocommit and not any(autocommit)
    if store._db.dialect == "postgresql":
        assert len(statements) == 3 and all("unnest(" in sql for sql in statements)
    else:
        assert len(statements) == 5 and statements[0] == "BEGIN IMMEDIATE"
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


def test_a_group_of_one_reads_no_seq_back(store: SqlStore, statements: list[str]) -> None:
    """A single message (the API's single POST) takes its seq from the insert itself on
    SQLite (the cursor's rowid): no SELECT of its seq; the rows are a group's."""
    store.add_messages([message(1, "a@x.test")])  # a row before it: seqs do not start at 1
    statements.clear()
    assert store.add_messages([message(2, "b@x.test", "c@x.test")]) == [("msg_2", True)]
    assert not any(sql.lstrip().upper().startswith("SELECT") for sql in statements)
    if store._db.dialect == "sqlite":
        assert len(statements) == 4 and statements[0] == "BEGIN IMMEDIATE"
    claims = store.claim(channel_id="ch_a", now=T0 + 10, limit=10, lease_until=T0 + 99, worker="w")
    assert [c.message_id for c in claims] == ["msg_1", "msg_2"]
    assert claims[1].seq > claims[0].seq
    assert claims[1].content == message(2).content
    assert claims[1].pending == ("b@x.test", "c@x.test")
    with store._db.engine.connect() as conn:
        seq = conn.execute(sa.text("SELECT seq FROM messages WHERE id = 'msg_2'")).scalar()
        rows = conn.execute(
            sa.text("SELECT count(*) FROM recipients WHERE message_seq = :s"), {"s": seq}
        ).scalar()
        content = conn.execute(
            sa.text("SELECT count(*) FROM message_contents WHERE message_seq = :s"), {"s": seq}
        ).scalar()
    assert seq == claims[1].seq and rows == 2 and content == 1


def test_a_group_with_an_idempotency_key_runs_in_a_transaction(
    store: SqlStore, statements: list[str], autocommit: list[bool]
) -> None:
    keyed = replace(message(2, "b@x.test"), idempotency_key="k1", request_hash="h1")
    group = [message(1, "a@x.test"), keyed]
    statements.clear()
    autocommit.clear()
    assert store.add_messages(group) == [("msg_1", True), ("msg_2", True)]
    assert autocommit and not any(autocommit)  # the key's look-up and the inserts: one BEGIN
    if store._db.dialect == "sqlite":
        assert statements[0] == "BEGIN IMMEDIATE"
    again = replace(keyed, id="msg_3")
    assert store.add_messages([again]) == [("msg_2", False)]


def test_large_contents_arrive_byte_exact(store: SqlStore, autocommit: list[bool]) -> None:
    size = 4 * 1024 * 1024 + 1  # each content its own binary parameter, whatever its size
    group = [
        replace(message(n, f"r{n}@x.test"), content=b"Subject: s\r\n\r\n" + os.urandom(size))
        for n in (1, 2)
    ]
    autocommit.clear()
    assert store.add_messages(group) == [(m.id, True) for m in group]
    assert not any(autocommit)
    claims = store.claim(channel_id="ch_a", now=T0 + 10, limit=10, lease_until=T0 + 99, worker="w")
    assert [c.content for c in claims] == [m.content for m in group]


def test_an_empty_idempotency_key_is_still_a_key(store: SqlStore) -> None:
    first = replace(message(1, "a@x.test"), idempotency_key="", request_hash="h1")
    assert store.add_messages([first]) == [("msg_1", True)]
    assert store.add_messages([replace(first, id="msg_2")]) == [("msg_1", False)]
    with pytest.raises(NotFound):
        store.get_message("msg_2")


def test_times_may_mix_ints_and_floats(store: SqlStore) -> None:
    whole = replace(message(1, "a@x.test"), created_at=1_700_000_001, expires_at=1_700_086_401)
    group = [whole, message(2, "b@x.test")]
    assert store.add_messages(group) == [("msg_1", True), ("msg_2", True)]
    assert store.get_message("msg_1").next_attempt_at == 1_700_000_001.0


def test_a_group_with_a_taken_id_commits_nothing(store: SqlStore) -> None:
    store.add_messages([message(1, "a@x.test")])
    with pytest.raises(Conflict) as taken:
        store.add_messages([message(2, "b@x.test"), message(1, "c@x.test")])
    assert (
        str(taken.value)
        == message_inserts.CONFLICT
        == "a message id or idempotency key is already in use"
    )
    with pytest.raises(NotFound):
        store.get_message("msg_2")
    with store._db.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM message_contents")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM recipients")).scalar() == 1


def _rows(store: SqlStore) -> list[list[tuple[object, ...]]]:
    """Every row the intake writes, seqs replaced by message ids (contents as bytes)."""
    queries = [
        "SELECT id, organization_id, user_id, channel_id, mail_from, size, state, created_at,"
        " expires_at, next_attempt_at, failures, possible_duplicate, lease_owner,"
        " lease_expires_at, idempotency_key, request_hash, test, started_at, subject"
        " FROM messages ORDER BY seq",
        "SELECT m.id, c.content FROM message_contents c JOIN messages m ON m.seq = c.message_seq"
        " ORDER BY m.seq",
        "SELECT m.id, r.position, r.address, r.state, r.last_code, r.last_enhanced,"
        " r.last_text, r.updated_at FROM recipients r JOIN messages m ON m.seq = r.message_seq"
        " ORDER BY m.seq, r.position",
    ]
    with store._db.read() as conn:
        return [
            [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]
            for rows in (conn.execute(sa.text(q)).all() for q in queries)
        ]


def test_a_group_in_parts_writes_the_same_rows_in_order(
    store: SqlStore, statements: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every column of every row as sent, byte for byte, on either database; on PostgreSQL
    a group whose contents pass PART_BYTES goes in parts of three statements each, its seqs
    still rising in the group's order."""
    monkeypatch.setattr(message_inserts_pg, "PART_BYTES", 70)
    group = [
        replace(message(1, "a@x.test"), idempotency_key="k1", request_hash="h1"),
        replace(message(2, "b@x.test", "c@x.test"), content=bytes(range(256)) * 3, test=True),
        message(3, "d@x.test", state=State.HELD),
        replace(message(4, "e@x.test"), created_at=1_700_000_004, expires_at=1_700_086_404),
        message(5, "f@x.test", "g@x.test", "h@x.test"),
    ]
    statements.clear()
    assert store.add_messages(group) == [(m.id, True) for m in group]
    if store._db.dialect == "postgresql":
        # parts (contents of 31 bytes but msg_2's 768): [1], [2], [3, 4], [5]
        inserts = [sql for sql in statements if sql.startswith("INSERT")]
        assert len(inserts) == 3 * 4 and all("unnest(" in sql for sql in inserts)
    messages, contents, recipients = _rows(store)
    assert messages == [
        (
            m.id, "org_1", "usr_1", "ch_a", m.envelope.mail_from, len(m.content),
            State(m.state).value, m.created_at, m.expires_at, m.created_at, 0, 0,
            None, None, m.idempotency_key, m.request_hash, int(m.test), None,
            subject_of(m.content),
        )
        for m in group
    ]  # fmt: skip
    assert contents == [(m.id, m.content) for m in group]
    assert recipients == [
        (m.id, i, address, State(m.state).value, None, None, None, m.created_at)
        for m in group
        for i, address in enumerate(m.envelope.rcpt_to)
    ]


def test_a_taken_id_in_a_later_part_commits_none_of_the_earlier_parts(
    store: SqlStore, statements: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """All or nothing across parts: the parts are one transaction, so a conflict in the
    last part leaves no row of the first ones (on SQLite the group is one part)."""
    store.add_messages([message(9, "z@x.test")])
    monkeypatch.setattr(message_inserts_pg, "PART_BYTES", 70)
    group = [message(1, "a@x.test"), message(2, "b@x.test"), message(3, "c@x.test")]
    group.append(replace(message(9, "d@x.test"), content=bytes(100)))  # its own part, taken
    statements.clear()
    with pytest.raises(Conflict):
        store.add_messages(group)
    if store._db.dialect == "postgresql":
        assert sum(sql.startswith("INSERT") for sql in statements) >= 4  # parts were written
    for m in group[:3]:
        with pytest.raises(NotFound):
            store.get_message(m.id)
    with store._db.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM messages")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM message_contents")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM recipients")).scalar() == 1
