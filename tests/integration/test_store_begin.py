"""`Database` sends each SQLite transaction's BEGIN itself (store/engine.py `_begun`), with no
listener on its engine: a write's BEGIN IMMEDIATE (the write lock from its start), a read's
BEGIN (one snapshot for all its statements), each first in its transaction, inside a
`snapshot()` too; and SQLAlchemy dispatches no connection events on its statements."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from mailvia.store.engine import Database
from support.databases import migrated_sqlite_file

pytestmark = pytest.mark.timeout(60)
COUNT = sa.text("SELECT count(*) FROM organizations")
ADD = "INSERT INTO organizations (id, name, fallback, created_at) VALUES ('{0}', '{0}', 'hold', 0)"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{migrated_sqlite_file(tmp_path / 'mailvia.db')}"


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    database = Database(url)
    yield database
    database.dispose()


def test_no_listener_makes_sqlalchemy_dispatch_events(db: Database) -> None:
    with db.write() as conn:
        conn.execute(COUNT)
    with db.read() as conn:
        conn.execute(COUNT)
    assert not db.engine._has_events  # every statement would dispatch before/after events


def test_each_transaction_begins_first_and_in_the_driver(db: Database) -> None:
    sent: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        sent.append(statement)

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        with db.write() as conn:
            assert conn.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
            conn.execute(COUNT)
        with db.read() as conn:
            assert conn.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
            conn.execute(COUNT)
        with db.snapshot():
            with db.read() as conn:
                conn.execute(COUNT)
            with db.read() as conn:
                conn.execute(COUNT)
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    assert sent == [
        "BEGIN IMMEDIATE",
        str(COUNT),
        "BEGIN",
        str(COUNT),
        "BEGIN",
        str(COUNT),
        str(COUNT),
    ]


def test_a_read_is_one_snapshot_and_a_failed_write_commits_nothing(db: Database, url: str) -> None:
    other = Database(url)
    try:
        with db.read() as conn:
            before = conn.execute(COUNT).scalar()
            with other.write() as writing:
                writing.exec_driver_sql(ADD.format("org_x"))
            assert conn.execute(COUNT).scalar() == before  # its snapshot, not the new row
        with db.read() as conn:
            assert conn.execute(COUNT).scalar() == before + 1
        with pytest.raises(RuntimeError), db.write() as conn:
            conn.exec_driver_sql(ADD.format("org_y"))
            raise RuntimeError("rolled back")
        with db.read() as conn:
            assert conn.execute(COUNT).scalar() == before + 1
    finally:
        other.dispose()
