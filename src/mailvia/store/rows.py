"""Small helpers shared by the store's parts: batching, replies from columns, event ids."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.sql.compiler import IdentifierPreparer

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


_MARKERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}  # pysqlite's, psycopg's


def marker(conn: sa.Connection) -> str:
    """The driver's positional parameter marker, for statements the hot path sends as driver
    SQL with rows as tuples (`exec_driver_sql`): no SQLAlchemy parameter processing per row,
    which for a settlement's bulk statements cost about as much as the statements."""
    return _MARKERS[conn.dialect.paramstyle]


def insert_sql(conn: sa.Connection, table: sa.Table, columns: Sequence[str], mark: str) -> str:
    """`INSERT INTO table (columns) VALUES (mark, ...)`: one row's values, in `columns`' order
    (names quoted as the dialect needs). Made once per dialect and statement: every intake's
    commit sends three (made anew, ~5% of a single POST's request thread in a profile)."""
    return _insert_sql(conn.dialect.identifier_preparer, table, tuple(columns), mark)


@lru_cache(maxsize=64)
def _insert_sql(
    preparer: IdentifierPreparer, table: sa.Table, columns: tuple[str, ...], mark: str
) -> str:
    quote = preparer.quote
    names = ", ".join(quote(table.c[column].name) for column in columns)
    marks = ", ".join([mark] * len(columns))
    return f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"


def literal_seqs(seqs: Sequence[int]) -> str:
    """Integer keys as an SQL list `(1, 2, 3)` (ints only: nothing to escape), for driver SQL
    (see `among`)."""
    return f"({', '.join([str(int(seq)) for seq in seqs])})"


def reply_of(code: int | None, enhanced: str | None, text: str | None) -> Reply | None:
    """A reply from its stored columns (None when nothing was ever recorded)."""
    if code is None:
        return None
    return Reply(code, enhanced, text or "")


def event_id(now: Instant) -> str:
    """A new event id, like the ones the use cases make."""
    return make_id("evt", now, os.urandom(10))
