"""A group of new messages into the outbox's three tables (messages, message_contents,
recipients), their seqs rising in the group's order (a claim takes mail in seq order).
`write_group` is the one place that picks how: the dialect, the group's size in bytes and
whether it has idempotency keys decide it (`_one_statement`).

PostgreSQL, a group under `ONE_STATEMENT_BYTES`: one statement, one round trip instead of
three. It inserts the messages from arrays (unnest, in the group's order, so their seqs rise
in that order as with a multi-row INSERT), and its data-modifying CTEs insert each one's
content and recipients with the seq the first INSERT gave it; it returns the seqs in the
group's order. Its text never changes, so psycopg prepares it once. Without idempotency keys
it is the whole transaction, run in autocommit: no BEGIN and COMMIT round trips either.

SQLite, and a larger group on PostgreSQL: driver SQL with the rows as tuples (no SQLAlchemy
parameter processing per row; each content its own binary parameter), one executemany per
table and a read of the seqs, four statements for any group, in a write transaction.
SQLAlchemy's INSERT ... RETURNING in parameter order went one row per statement on SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from mailvia.domain.message import State
from mailvia.outbox.headers import subject_of
from mailvia.outbox.ports import NewMessage
from mailvia.store.engine import Database, map_error
from mailvia.store.rows import chunks, insert_sql, marker
from mailvia.store.tables import message_contents, messages, recipients

# A group's contents go into the one statement as a single bytea[] parameter, which psycopg
# sends as text (hex: twice the bytes, and the CPU to make and parse them), and PostgreSQL
# refuses any bind value over 1 GB: twenty 25 MB messages in one group would fail the whole
# group. Above this total the rows go one per parameter set, each content in binary, in a
# transaction. 8 MB keeps every group of ordinary mail (MAX_GROUP 100 of ~50 KB) on the one
# statement, where the saved round trips matter; for larger contents the bytes cost more.
ONE_STATEMENT_BYTES = 8 * 1024 * 1024

# The one wording of a 409 for a group, whatever path wrote it.
CONFLICT = "a message id or idempotency key is already in use"

# The messages' columns filled from the group: (column, PostgreSQL type); the contents go
# into message_contents (the one statement takes them as one more array, `content`).
_MESSAGE_COLUMNS = (
    ("id", "text"),
    ("organization_id", "text"),
    ("user_id", "text"),
    ("channel_id", "text"),
    ("mail_from", "text"),
    ("size", "integer"),
    ("state", "text"),
    ("created_at", "double precision"),
    ("expires_at", "double precision"),
    ("idempotency_key", "text"),
    ("request_hash", "text"),
    ("test", "boolean"),
    ("subject", "text"),
)
_ARRAY_COLUMNS = (*_MESSAGE_COLUMNS, ("content", "bytea"))
_RECIPIENT_COLUMNS = (("n", "bigint"), ("position", "integer"), ("address", "text"))
_STORED = [name for name, _ in _MESSAGE_COLUMNS]
_CONTENT_COLUMNS = ("message_seq", "content")
_RECIPIENT_ROW = ("message_seq", "position", "address", "state", "updated_at")


def _unnest(columns: tuple[tuple[str, str], ...], prefix: str) -> str:
    arrays = ", ".join(f"CAST(:{prefix}{name} AS {kind}[])" for name, kind in columns)
    return f"unnest({arrays})"


_INSERT_GROUP = sa.text(
    f"WITH v AS (SELECT * FROM {_unnest(_ARRAY_COLUMNS, 'm_')} WITH ORDINALITY"
    f" AS v({', '.join(name for name, _ in _ARRAY_COLUMNS)}, n)),"
    f" new AS (INSERT INTO messages ({', '.join(_STORED)}, next_attempt_at, failures,"
    f" possible_duplicate) SELECT {', '.join(_STORED)}, created_at, 0, false FROM v ORDER BY n"
    " RETURNING seq, id),"
    " numbered AS (SELECT new.seq, v.n, v.content, v.state, v.created_at"
    " FROM new JOIN v ON v.id = new.id),"
    " contents AS (INSERT INTO message_contents (message_seq, content)"
    " SELECT seq, content FROM numbered),"
    " rcpts AS (INSERT INTO recipients (message_seq, position, address, state, updated_at)"
    " SELECT numbered.seq, x.position, x.address, numbered.state, numbered.created_at"
    f" FROM {_unnest(_RECIPIENT_COLUMNS, 'r_')} AS x(n, position, address)"
    " JOIN numbered ON numbered.n = x.n)"
    " SELECT seq FROM numbered ORDER BY n"
)


def _one_statement(dialect: str, msgs: Sequence[NewMessage]) -> bool:
    """Whether the group goes in as the one statement over arrays (PostgreSQL, under the
    byte cap); else as driver SQL, a row per parameter set."""
    return dialect == "postgresql" and sum(len(x.content) for x in msgs) < ONE_STATEMENT_BYTES


def write_group(
    db: Database,
    msgs: Sequence[NewMessage],
    *,
    screen: Callable[[sa.Connection], Sequence[NewMessage]] | None = None,
) -> None:
    """Write the group as a transaction of its own, committed when it returns. `screen`, if
    given, runs first inside the transaction and returns the messages to insert (those whose
    idempotency key was used before left out); without one, on PostgreSQL under the byte cap,
    the one statement is atomic by itself and runs in autocommit, with no BEGIN and COMMIT
    round trips. Raises Conflict for a taken message id or key (nothing inserted),
    StoreUnavailable otherwise."""
    if not msgs:
        return
    if screen is None and _one_statement(db.dialect, msgs):
        try:
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                _insert_arrays(conn, msgs)
            return
        except SQLAlchemyError as exc:
            missing = "a referenced object does not exist"
            raise map_error(exc, conflict=CONFLICT, missing=missing) from None
    with db.write(conflict=CONFLICT, intake=True) as conn:
        insert_group(conn, msgs if screen is None else screen(conn))


def insert_group(conn: sa.Connection, msgs: Sequence[NewMessage]) -> list[int]:
    """Insert the messages, their contents and recipients inside the caller's write
    transaction; their seqs, in order."""
    if not msgs:
        return []
    if _one_statement(conn.dialect.name, msgs):
        return _insert_arrays(conn, msgs)
    return _insert_driver(conn, msgs)


def _insert_arrays(conn: sa.Connection, msgs: Sequence[NewMessage]) -> list[int]:
    """The one statement (PostgreSQL)."""
    values: dict[str, list[Any]] = {f"m_{name}": [] for name, _ in _ARRAY_COLUMNS}
    values.update({f"r_{name}": [] for name, _ in _RECIPIENT_COLUMNS})
    for n, msg in enumerate(msgs, start=1):
        row = (*_message_values(msg), msg.content)
        for (name, _), value in zip(_ARRAY_COLUMNS, row, strict=True):
            values[f"m_{name}"].append(value)
        for position, address in enumerate(msg.envelope.rcpt_to):
            values["r_n"].append(n)
            values["r_position"].append(position)
            values["r_address"].append(address)
    seqs = list(conn.execute(_INSERT_GROUP, values).scalars())
    if len(seqs) != len(msgs):  # cannot happen: every row inserted or an error raised
        raise RuntimeError(f"{len(seqs)} seqs back for {len(msgs)} messages")
    return seqs


def _message_values(msg: NewMessage) -> tuple[Any, ...]:
    """A message's values in `_MESSAGE_COLUMNS`' order (not its content). Times as floats:
    psycopg cannot dump an array of mixed ints and floats."""
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


def _insert_driver(conn: sa.Connection, msgs: Sequence[NewMessage]) -> list[int]:
    """The three INSERTs as driver SQL, inside the caller's write transaction: the rows are
    inserted in order, so their seqs rise in it (SQLite holds the write lock; PostgreSQL's
    sequence hands them out in order within the transaction)."""
    mark = marker(conn)
    columns = [*_STORED, "next_attempt_at", "failures", "possible_duplicate"]
    rows = [(*_message_values(msg), float(msg.created_at), 0, False) for msg in msgs]
    conn.exec_driver_sql(insert_sql(conn, messages, columns, mark), rows)
    ids = [msg.id for msg in msgs]
    seq_of: dict[str, int] = {}
    for part in chunks(ids):
        found = conn.exec_driver_sql(
            f"SELECT id, seq FROM messages WHERE id IN ({', '.join([mark] * len(part))})",
            tuple(part),
        )
        seq_of.update({message_id: int(seq) for message_id, seq in found})
    seqs = [seq_of[message_id] for message_id in ids]
    contents = [(seq, msg.content) for seq, msg in zip(seqs, msgs, strict=True)]
    conn.exec_driver_sql(insert_sql(conn, message_contents, _CONTENT_COLUMNS, mark), contents)
    recipient_rows = [
        (seq, position, address, State(msg.state).value, float(msg.created_at))
        for seq, msg in zip(seqs, msgs, strict=True)
        for position, address in enumerate(msg.envelope.rcpt_to)
    ]
    if recipient_rows:
        insert = insert_sql(conn, recipients, _RECIPIENT_ROW, mark)
        conn.exec_driver_sql(insert, recipient_rows)
    return seqs
