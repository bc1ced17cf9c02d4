"""What the delivery's hot store calls send to PostgreSQL: the started marks alone are one
statement in autocommit (no BEGIN, no COMMIT: one round trip), and a group of records is a
few statements over arrays whatever its size (no executemany, which the server runs one row
at a time), with its lease check in the messages' UPDATE."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from mailvia.domain.message import State
from mailvia.outbox.records import Event
from mailvia.store import SqlStore
from support.rows import T0, channel, new, record, seeded, sent

pytestmark = pytest.mark.postgres

Sent = list[tuple[str, bool, bool]]  # (statement, executemany, in autocommit)


@contextmanager
def statements(store: SqlStore) -> Iterator[Sent]:
    sent_: Sent = []

    def before(conn: sa.Connection, _cursor: Any, sql: str, _p: Any, _c: Any, many: bool) -> None:
        autocommit = bool(conn.connection.driver_connection.autocommit)  # type: ignore[union-attr]
        sent_.append((sql, many, autocommit))

    event.listen(store._db.engine, "before_cursor_execute", before)
    try:
        yield sent_
    finally:
        event.remove(store._db.engine, "before_cursor_execute", before)


def test_marks_alone_are_one_statement_in_autocommit_and_committed(pg_url: str) -> None:
    store = seeded(pg_url, channel("ch_a", "relay"))
    store.add_messages([new(f"m{i}") for i in range(3)])
    mine = store.claim(channel_id="ch_a", now=T0, limit=2, lease_until=T0 + 60, worker="w1")
    others = store.claim(channel_id="ch_a", now=T0, limit=1, lease_until=T0 + 60, worker="w2")
    with statements(store) as sent_:
        held = store.mark_started([c.seq for c in [*mine, *others]], "w1", T0 + 1)
    assert held == [True, True, False]
    assert [(many, autocommit) for _, many, autocommit in sent_] == [(False, True)]
    assert sent_[0][0].startswith("UPDATE messages SET started_at")
    other = sa.create_engine(pg_url)
    try:
        with other.connect() as conn:
            rows = conn.exec_driver_sql("SELECT id, started_at FROM messages ORDER BY id").all()
    finally:
        other.dispose()
    assert rows == [("m0", T0 + 1), ("m1", T0 + 1), ("m2", None)]


def test_records_are_a_few_statements_over_arrays_whatever_their_number(pg_url: str) -> None:
    store = seeded(pg_url, channel("ch_a", "relay"))
    store.add_messages([new(f"m{i:02}", "a@x.test", "b@x.test") for i in range(30)])
    claims = store.claim(channel_id="ch_a", now=T0, limit=30, lease_until=T0 + 60, worker="w1")
    lost = claims[5]
    store.unclaim([lost], state=State.QUEUED, now=T0)  # another worker's now: not recorded
    records = [
        record(
            claim,
            sent("a@x.test"),
            state=State.DEFERRED,
            next_at=T0 + 300,
            duplicate=i == 3,
            events=(Event(f"evt_{i:02}", "org_1", "message.deferred", T0 + 1, {"n": i}),),
        )
        for i, claim in enumerate(claims)
    ]
    with statements(store) as sent_:
        store.record_attempts(records)
    assert not any(many for _, many, _ in sent_)
    assert len(sent_) <= 6  # messages, recipients, untried recipients, attempts, lock, events
    # One transaction: none of them in autocommit (as `write_one` would send them).
    assert sent_ and not any(autocommit for _, _, autocommit in sent_)
    events, _ = store.list_events("org_1", cursor=None, limit=100)
    assert [e.id for e in events] == [f"evt_{i:02}" for i in range(30) if i != 5]  # in order
    view = store.get_message("m00")
    assert view.state is State.DEFERRED and len(view.attempts) == 1
    assert [r.state for r in view.recipients] == [State.DELIVERED, State.DEFERRED]
    assert store.get_message("m03").possible_duplicate
    assert not store.get_message("m04").possible_duplicate
    assert store.get_message("m05").state is State.QUEUED
    assert store.get_message("m05").attempts == ()


def test_a_claim_reads_its_contents_in_binary_as_the_stored_bytes(pg_url: str) -> None:
    store = seeded(pg_url, channel("ch_a", "relay"))
    raw = bytes(range(256)) * 30  # every byte value, 7.5 KB
    store.add_messages([new("m1", content=raw), new("m2")])
    formats: list[tuple[str, Any]] = []

    def before(_conn: Any, cursor: Any, sql: str, *_rest: Any) -> None:
        formats.append((sql, cursor.format))

    event.listen(store._db.engine, "before_cursor_execute", before)
    try:
        first, second = store.claim(
            channel_id="ch_a", now=T0, limit=2, lease_until=T0 + 60, worker="w1"
        )
    finally:
        event.remove(store._db.engine, "before_cursor_execute", before)
    assert (first.content, second.content) == (raw, b"Subject: hi\r\n\r\nhello\r\n")
    reads = [fmt for sql, fmt in formats if "message_contents" in sql]
    assert reads == [psycopg.pq.Format.BINARY]  # not hex text, encoded there, decoded here


def test_records_update_their_messages_in_seq_order_whatever_the_group_order(pg_url: str) -> None:
    """The messages' UPDATE gets its rows sorted by seq, so it locks them in that order (as
    the marks do): two workers' groups cannot deadlock on them."""
    store = seeded(pg_url, channel("ch_a", "relay"))
    store.add_messages([new(f"m{i}") for i in range(5)])
    claims = store.claim(channel_id="ch_a", now=T0, limit=5, lease_until=T0 + 60, worker="w1")
    records = [record(c, sent("bob@example.test"), state=State.DELIVERED) for c in claims[::-1]]
    updates: list[Any] = []

    def before(_conn: Any, _cursor: Any, sql: str, params: Any, *_rest: Any) -> None:
        if sql.startswith("UPDATE messages"):
            updates.append(params["b_seq"])

    event.listen(store._db.engine, "before_cursor_execute", before)
    try:
        store.record_attempts(records)
    finally:
        event.remove(store._db.engine, "before_cursor_execute", before)
    assert updates == [sorted(c.seq for c in claims)]
    assert all(store.get_message(f"m{i}").state is State.DELIVERED for i in range(5))


def test_a_connection_lost_during_a_binary_read_is_not_given_out_again(pg_url: str) -> None:
    """The server ends the connection (a restart, a failover) while a claim reads contents
    in binary: an outage, and the pool drops that connection, so the next call works on a
    new one instead of failing again on the dead one."""
    from mailvia.store.engine import binary_rows

    store = seeded(pg_url, channel("ch_a", "relay"))
    engine = store._db.engine
    with pytest.raises(sa.exc.DBAPIError), engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with engine.connect() as other:  # another pooled connection ends this one
            other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        binary_rows(conn, "SELECT content FROM message_contents")
    with engine.connect() as conn:  # the pool's next connection is a live one
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != pid
