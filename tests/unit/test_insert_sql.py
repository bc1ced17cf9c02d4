"""`rows.insert_sql` makes each INSERT once per dialect (every intake's commit sends three):
the same text as before, the same string object on every call after the first."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from mailvia.store.rows import insert_sql
from mailvia.store.tables import message_contents, messages


def test_an_insert_is_made_once_per_dialect_and_statement() -> None:
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        first = insert_sql(conn, messages, ["id", "seq"], "?")
        assert first == "INSERT INTO messages (id, seq) VALUES (?, ?)"
        assert insert_sql(conn, messages, ("id", "seq"), "?") is first
        other = insert_sql(conn, message_contents, ["message_seq"], "?")
        assert other == "INSERT INTO message_contents (message_seq) VALUES (?)"
        assert insert_sql(conn, messages, ["seq", "id"], "?") == (
            "INSERT INTO messages (seq, id) VALUES (?, ?)"
        )
    engine.dispose()


def test_postgresqls_insert_is_made_once_with_its_own_preparer() -> None:
    """Another dialect (PostgreSQL's, with psycopg's `%s`): its own entry, its own text."""
    conn = cast(sa.Connection, SimpleNamespace(dialect=postgresql.psycopg.dialect()))
    first = insert_sql(conn, messages, ["id", "seq"], "%s")
    assert first == "INSERT INTO messages (id, seq) VALUES (%s, %s)"
    assert insert_sql(conn, messages, ("id", "seq"), "%s") is first
    again = cast(sa.Connection, SimpleNamespace(dialect=conn.dialect))
    assert insert_sql(again, messages, ["id", "seq"], "%s") is first  # keyed by the dialect
