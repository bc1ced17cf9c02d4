"""A group of new messages into the outbox's three tables (messages, message_contents,
recipients), their seqs rising in the group's order (a claim takes mail in seq order), in a
write transaction (`insert_group`, inside the caller's: `add_messages`, `add_leased`).

On SQLite, driver SQL with the rows as tuples (no SQLAlchemy parameter processing per row):
one executemany per table and a read of the seqs, four statements for any group; three for a
group of one (the API's single POST), whose seq is the cursor's `lastrowid`.
SQLAlchemy's INSERT ... RETURNING in parameter order went one row per statement on SQLite.
On PostgreSQL, one statement over binary arrays per table (`message_inserts_pg`): three
statements, each planned once, where an executemany's every row was parsed, planned and
executed by the server (docs/benchmarks.md, "A group's INSERTs over binary arrays").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mailvia.domain.message import State
from mailvia.outbox.headers import subject_of
from mailvia.outbox.ports import NewMessage
from mailvia.store.message_inserts_pg import (
    CONTENT_COLUMNS,
    MESSAGE_COLUMNS,
    RECIPIENT_COLUMNS,
    insert_arrays,
)
from mailvia.store.pg_arrays import names
from mailvia.store.rows import chunks, insert_sql, marker
from mailvia.store.tables import message_contents, messages, recipients

# The columns are listed once, with their PostgreSQL types, where the PostgreSQL statements
# are (that module is the one this one dispatches to); SQLite's INSERTs take their names.

# The one wording of a 409 for a group (add_messages; add_leased has its own).
CONFLICT = "a message id or idempotency key is already in use"

# The messages' columns filled from the group (the contents go into message_contents), in
# `_message_values`' order, then next_attempt_at, failures and possible_duplicate; each
# table's names from its columns in message_inserts_pg.py, written once for both databases.
_MESSAGE_ROW = names(MESSAGE_COLUMNS)
_CONTENT_ROW = names(CONTENT_COLUMNS)
_RECIPIENT_ROW = names(RECIPIENT_COLUMNS)


def insert_group(conn: sa.Connection, msgs: Sequence[NewMessage]) -> list[int]:
    """Insert the messages, their contents and recipients inside the caller's write
    transaction: the rows go in in order, so their seqs rise in it (SQLite holds the write
    lock; PostgreSQL's sequence hands them out in order within the transaction). Their seqs,
    in order."""
    if not msgs:
        return []
    rows = [(*_message_values(msg), float(msg.created_at), 0, False) for msg in msgs]
    if conn.dialect.name == "postgresql":
        return insert_arrays(conn, msgs, rows, _recipient_rows)
    mark = marker(conn)
    insert = insert_sql(conn, messages, _MESSAGE_ROW, mark)
    if len(rows) == 1:  # its seq is the rowid SQLite gave it: no statement to read it back
        seqs = [_rowid(conn.exec_driver_sql(insert, rows[0]).lastrowid)]
    else:
        conn.exec_driver_sql(insert, rows)
        seqs = _seqs(conn, [msg.id for msg in msgs], mark)
    contents = [(seq, msg.content) for seq, msg in zip(seqs, msgs, strict=True)]
    conn.exec_driver_sql(insert_sql(conn, message_contents, _CONTENT_ROW, mark), contents)
    recipient_rows = _recipient_rows(seqs, msgs)
    if recipient_rows:
        insert = insert_sql(conn, recipients, _RECIPIENT_ROW, mark)
        conn.exec_driver_sql(insert, recipient_rows)
    return seqs


def _seqs(conn: sa.Connection, ids: list[str], mark: str) -> list[int]:
    """The seqs of the messages of these ids, in their order."""
    seq_of: dict[str, int] = {}
    for part in chunks(ids):
        found = conn.exec_driver_sql(
            f"SELECT id, seq FROM messages WHERE id IN ({', '.join([mark] * len(part))})",
            tuple(part),
        )
        seq_of.update({message_id: int(seq) for message_id, seq in found})
    return [seq_of[message_id] for message_id in ids]


def _rowid(found: int | None) -> int:
    """A row's seq from the cursor's `lastrowid` (`seq` is SQLite's rowid: INTEGER PRIMARY
    KEY)."""
    if not found:
        raise RuntimeError("SQLite gave no rowid for the message inserted")
    return int(found)


def _recipient_rows(seqs: Sequence[int], msgs: Sequence[NewMessage]) -> list[tuple[Any, ...]]:
    """The messages' recipients' rows, in `_RECIPIENT_ROW`' order."""
    return [
        (seq, position, address, State(msg.state).value, float(msg.created_at))
        for seq, msg in zip(seqs, msgs, strict=True)
        for position, address in enumerate(msg.envelope.rcpt_to)
    ]


def _message_values(msg: NewMessage) -> tuple[Any, ...]:
    """A message's values in `_MESSAGE_ROW`'s order, up to its subject (not its content).
    Times as floats: psycopg cannot dump an array of mixed ints and floats."""
    return (
        msg.id,
        msg.organization_id,
        msg.user_id,
        msg.channel_id,
        msg.envelope.mail_from,
        len(msg.content),
        State(msg.state).value,
        float(msg.created_at),
        float(msg.expires_at),
        msg.idempotency_key,
        msg.request_hash,
        msg.test,
        subject_of(msg.content),
    )
