"""`rows.insert_sql` makes each INSERT once per dialect (every intake's commit sends three):
the same text as before, the same string object on every call after the first."""

from __future__ import annotations

import sqlalchemy as sa

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
