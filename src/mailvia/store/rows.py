"""Small helpers shared by the store's parts: batching, replies from columns, event ids."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any, TypeVar

import sqlalchemy as sa

from mailvia.domain.clock import Instant
from mailvia.domain.ids import make_id
from mailvia.domain.replies import Reply

T = TypeVar("T")

# Well under SQLite's 32,766 bound parameters and PostgreSQL's 65,535.
BATCH = 5000


def chunks(items: Sequence[T], size: int = BATCH) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items (for IN lists)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def among(column: sa.ColumnElement[Any], seqs: Sequence[int]) -> sa.ColumnElement[bool]:
    """`column IN (...)` for integer keys, the values written into the statement as literals
    (ints only, so nothing to escape). A list of N placeholders costs psycopg a parse of the
    whole statement for every new N (about 3 ms for 200 on the claim's path, where N varies
    with every batch); literals parse in no time. SQLite takes either alike."""
    values = [int(seq) for seq in seqs]
    listed: sa.BindParameter[list[int]] = sa.bindparam(
        "seqs", values, expanding=True, literal_execute=True, unique=True
    )
    return column.in_(listed)


def _pg_type(column: sa.Column[Any]) -> str:
    """PostgreSQL's name for the column's type (those the bulk inserts write)."""
    kind = column.type
    if isinstance(kind, sa.BigInteger):
        return "bigint"
    if isinstance(kind, sa.Integer):
        return "integer"
    if isinstance(kind, sa.Float):
        return "double precision"
    if isinstance(kind, sa.String):
        return "text"
    raise TypeError(f"no array type for {column}")


@cache
def _insert_unnest(table: sa.Table, columns: tuple[str, ...]) -> sa.TextClause:
    """INSERT of many rows on PostgreSQL over arrays, one per column, in the arrays' order:
    its text never changes, so psycopg prepares it once (an executemany is a statement per
    row that psycopg walks in Python; a multi-row VALUES list is new text for every count)."""
    kinds = [_pg_type(table.c[name]) for name in columns]
    arrays = ", ".join(
        f"CAST(:{name} AS {kind}[])" for name, kind in zip(columns, kinds, strict=True)
    )
    names = ", ".join(columns)
    return sa.text(
        f"INSERT INTO {table.name} ({names}) SELECT {names} FROM unnest({arrays})"
        f" WITH ORDINALITY AS v({names}, _n) ORDER BY _n"  # in order: serial keys follow it
    )


def insert_many(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert the rows (dicts with the same keys) in one statement: over arrays on PostgreSQL,
    an executemany on SQLite."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(table.insert(), list(rows))
        return
    columns = tuple(rows[0])
    conn.execute(
        _insert_unnest(table, columns), {name: [row[name] for row in rows] for name in columns}
    )


def reply_of(code: int | None, enhanced: str | None, text: str | None) -> Reply | None:
    """A reply from its stored columns (None when nothing was ever recorded)."""
    if code is None:
        return None
    return Reply(code, enhanced, text or "")


def event_id(now: Instant) -> str:
    """A new event id, like the ones the use cases make."""
    return make_id("evt", now, os.urandom(10))
