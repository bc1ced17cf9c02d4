"""Each message's bytes in `message_contents` (0013), on SQLite and PostgreSQL: the migration
moves the bytes of mail already stored there and back, byte for byte; a claim reads the
contents of what it leased only, after its commit, in one statement; a message and its content
are written in one transaction and go together."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from mailvia.domain.channel import Auth, Channel, Kind, Owner, Scope, Security
from mailvia.domain.errors import Conflict
from mailvia.domain.message import Envelope, State
from mailvia.domain.tenancy import Role, User
from mailvia.outbox.ports import NewMessage
from mailvia.store import SqlStore, migrate, open_store
from mailvia.store.engine import create_engine
from support.rows import rows_of

T0 = 1_700_000_000.0
# About the size of a real message, with every byte value (bytes, not text, both ways).
OLD = b"From: jane@acme.test\r\nSubject: old times\r\n\r\n" + bytes(range(256)) * 24
OTHER = b"From: jane@acme.test\r\nSubject: other\r\n\r\n" + bytes(reversed(range(256))) * 24


def _world(url: str) -> None:
    """acme, its sales team, Jane, and the channel ch_a, made at the head revision."""
    migrate(url)
    store = open_store(url)
    try:
        store.create_organization("org_1", "acme", T0)
        store.create_team("team_1", "org_1", "sales", T0)
        jane = User("usr_1", "org_1", "team_1", "jane@acme.test", Role.MEMBER)
        store.create_user(jane, password_hash="h", now=T0)
        relay = Channel(
            id="ch_a",
            organization_id="org_1",
            name="relay",
            kind=Kind.SMTP,
            host="smtp.acme.test",
            port=587,
            security=Security.STARTTLS,
            auth=Auth.PLAIN,
            scope=Scope.DOMAIN,
            owner=Owner(team_id="team_1"),
            domains=("acme.test",),
        )
        store.add_channel(relay, None, T0)
    finally:
        store.close()


def _stored_at_0012(url: str, *bodies: tuple[str, bytes]) -> None:
    """Queued messages as 0012 kept them, their bytes in messages.content; no subject (as
    before 0010), so a read takes it from the bytes."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for msg_id, content in bodies:
                seq = conn.execute(
                    sa.text(
                        "INSERT INTO messages (id, organization_id, user_id, channel_id, "
                        "mail_from, content, size, state, created_at, expires_at, "
                        "next_attempt_at, failures, possible_duplicate, test) VALUES (:id, "
                        "'org_1', 'usr_1', 'ch_a', 'jane@acme.test', :content, :size, 'queued', "
                        ":at, :at + 86400, :at, 0, false, false) RETURNING seq"
                    ),
                    {"id": msg_id, "content": content, "size": len(content), "at": T0},
                ).scalar_one()
                conn.execute(
                    sa.text(
                        "INSERT INTO recipients (message_seq, position, address, state, "
                        "updated_at) VALUES (:seq, 0, 'bob@example.test', 'queued', :at)"
                    ),
                    {"seq": seq, "at": T0},
                )
    finally:
        engine.dispose()


def _columns(url: str, table: str) -> dict[str, bool]:
    """The table's columns and whether each may be NULL."""
    engine = sa.create_engine(url)
    try:
        return {c["name"]: c["nullable"] for c in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def _scalars(url: str, sql: str) -> list[Any]:
    return [row[0] for row in rows_of(url, sql)]


def test_0013_moves_each_messages_bytes_to_their_own_table_and_back(store_url: str) -> None:
    _world(store_url)
    migrate(store_url, revision="0012", downgrade=True)
    _stored_at_0012(store_url, ("msg_old", OLD), ("msg_other", OTHER))
    migrate(store_url)

    assert "content" not in _columns(store_url, "messages")
    assert _scalars(store_url, "SELECT count(*) FROM message_contents") == [2]
    store = open_store(store_url)
    try:
        assert store.get_message("msg_old").subject == "old times"  # from the moved bytes
        heads = [(w.id, w.head) for w in store.waiting_mail("ch_a")]
        assert heads == [
            ("msg_old", OLD.partition(b"\r\n\r\n")[0]),
            ("msg_other", OTHER.partition(b"\r\n\r\n")[0]),
        ]
        claims = store.claim(channel_id="ch_a", now=T0, limit=10, lease_until=T0 + 300, worker="w1")
        assert [(c.message_id, c.content) for c in claims] == [
            ("msg_old", OLD),
            ("msg_other", OTHER),
        ]
    finally:
        store.close()

    migrate(store_url, revision="0012", downgrade=True)
    assert _columns(store_url, "messages")["content"] is False  # NOT NULL again
    assert _scalars(store_url, "SELECT content FROM messages ORDER BY seq") == [OLD, OTHER]
    engine = sa.create_engine(store_url)
    try:
        inspector = sa.inspect(engine)
        assert not inspector.has_table("message_contents")
        indexes = {i["name"] for i in inspector.get_indexes("messages")}
        assert "ix_messages_sending_lease_owner" in indexes  # kept through SQLite's rebuild
    finally:
        engine.dispose()
    if store_url.startswith("sqlite"):
        [index] = _scalars(
            store_url,
            "SELECT sql FROM sqlite_master WHERE name = 'ix_messages_sending_lease_owner'",
        )
        assert "WHERE state = 'sending'" in index  # still partial
    migrate(store_url)  # and forward again
    assert _scalars(store_url, "SELECT content FROM message_contents ORDER BY message_seq") == [
        OLD,
        OTHER,
    ]


@pytest.fixture
def store(migrated_store_url: str) -> Iterator[SqlStore]:
    _world(migrated_store_url)
    s = open_store(migrated_store_url)
    yield s
    s.close()


def _new(msg_id: str, content: bytes, key: str | None = None, digest: str | None = None) -> Any:
    return NewMessage(
        id=msg_id,
        organization_id="org_1",
        user_id="usr_1",
        channel_id="ch_a",
        envelope=Envelope("jane@acme.test", ("bob@example.test",)),
        content=content,
        state=State.QUEUED,
        created_at=T0,
        expires_at=T0 + 86400,
        idempotency_key=key,
        request_hash=digest,
    )


def test_a_claim_reads_the_contents_it_leased_after_its_commit(store: SqlStore) -> None:
    """On SQLite after the lease's commit (its write lock is not held while they are read);
    on PostgreSQL, where other claims skip the locked rows, in the claim's one statement."""
    store.add_messages([_new(f"msg_{i}", b"Subject: %d\r\n\r\nbody\r\n" % i) for i in range(5)])
    seen: list[str] = []

    def statement(_c: Any, _cur: Any, sql: str, *_rest: Any) -> None:
        seen.append(sql)

    def commit(_conn: Any) -> None:
        seen.append("COMMIT")

    event.listen(sa.engine.Engine, "before_cursor_execute", statement)
    event.listen(sa.engine.Engine, "commit", commit)
    try:
        claims = store.claim(channel_id="ch_a", now=T0, limit=2, lease_until=T0 + 300, worker="w1")
    finally:
        event.remove(sa.engine.Engine, "before_cursor_execute", statement)
        event.remove(sa.engine.Engine, "commit", commit)
    assert [c.content for c in claims] == [
        b"Subject: 0\r\n\r\nbody\r\n",
        b"Subject: 1\r\n\r\nbody\r\n",
    ]
    reads = [i for i, sql in enumerate(seen) if "message_contents" in sql]
    assert len(reads) == 1, seen  # one statement for the claim's contents
    if store._db.dialect == "postgresql":  # the claim is that one statement, in autocommit
        assert seen == [seen[reads[0]]]
        return
    assert seen.index("COMMIT") < reads[0]  # not while the lease holds the writer
    seqs = {c.seq for c in claims}
    assert all(str(seq) in seen[reads[0]] for seq in seqs)
    assert not any("content" in sql for sql in seen if sql.lstrip().startswith("UPDATE"))


def test_a_message_and_its_content_are_written_and_removed_together(
    store: SqlStore, migrated_store_url: str
) -> None:
    store.add_messages([_new("msg_1", OLD, key="k", digest="h1")])
    with pytest.raises(Conflict):  # the whole transaction is refused: no content stays behind
        store.add_messages([_new("msg_2", OTHER), _new("msg_3", OTHER, key="k", digest="h2")])
    assert store.add_messages([_new("msg_4", OTHER, key="k", digest="h1")]) == [("msg_1", False)]
    assert _scalars(migrated_store_url, "SELECT content FROM message_contents") == [OLD]

    engine = create_engine(migrated_store_url)  # the store's own settings: SQLite's foreign keys on
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM recipients")
            conn.exec_driver_sql("DELETE FROM messages")
    finally:
        engine.dispose()
    assert _scalars(migrated_store_url, "SELECT count(*) FROM message_contents") == [0]
