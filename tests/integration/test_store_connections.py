"""PostgreSQL's pooled connections: one the server hung up on (a restart, an idle timeout, an
operator's pg_terminate_backend) is replaced at checkout, so the next transaction works; a live
one is handed out without a round trip (no `SELECT 1` before each transaction)."""

from __future__ import annotations

import os
import time

import sqlalchemy as sa

from mailvia.store.engine import Database


def _terminate_others(url: str) -> int:
    """End every other session on the test database; returns how many."""
    name = sa.make_url(url).database
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            ended = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            ).scalar_one()
            # pg_terminate_backend only signals: wait until those backends have gone (and
            # closed their sockets), as a connection the server had ended would be.
            others = sa.text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = :name AND pid <> pg_backend_pid()"
            )
            deadline = time.monotonic() + 10
            while conn.execute(others, {"name": name}).scalar_one() and time.monotonic() < deadline:
                time.sleep(0.01)
        return int(ended)
    finally:
        admin.dispose()


def test_a_connection_the_server_ended_is_replaced_at_checkout(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        with db.write() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x integer)")
        with db.read() as conn:
            first = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        assert _terminate_others(pg_url) >= 1
        with db.write() as conn:  # no StoreUnavailable: the ended connection is not used
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        with db.read() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 1
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() != first
    finally:
        db.dispose()


def test_a_live_connection_is_checked_out_without_a_query(pg_url: str) -> None:
    db = Database(pg_url)
    sent: list[str] = []
    try:
        with db.read() as conn:  # the pool's first connection
            conn.execute(sa.text("SELECT 1"))
        raw = db.engine.raw_connection()
        cursor_class = raw.driver_connection.cursor_factory  # type: ignore[union-attr]
        raw.close()

        class Counting(cursor_class):  # type: ignore[misc, valid-type]
            def execute(self, query, *args, **kw):  # type: ignore[no-untyped-def]
                sent.append(str(query))
                return super().execute(query, *args, **kw)

        raw = db.engine.raw_connection()
        raw.driver_connection.cursor_factory = Counting  # type: ignore[union-attr]
        raw.close()
        for _ in range(3):
            with db.read() as conn:
                conn.execute(sa.text("SELECT 2"))
        assert [q for q in sent if "SELECT 2" not in q] == []  # no ping
        assert len(sent) == 3
    finally:
        db.dispose()


def test_a_connection_on_a_descriptor_above_1023_is_kept(pg_url: str) -> None:
    """A busy serve has many sockets open: the check must not refuse (and so replace at every
    checkout) a connection whose descriptor select() could not watch."""
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    db = Database(pg_url)
    try:
        with db.read() as conn:
            first = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            assert conn.connection.dbapi_connection.fileno() > 1023  # type: ignore[union-attr]
        with db.read() as conn:
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() == first
    finally:
        db.dispose()
        for fd in filler:
            os.close(fd)
