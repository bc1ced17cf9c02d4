"""PostgreSQL statements over arrays: many rows in one statement, each column's values one
array (`unnest`), sent to psycopg in binary. Used by the records' writes (store/settle.py,
store/settle_pg.py), the events' INSERT (store/events.py) and a group of new messages'
INSERTs (store/message_inserts_pg.py).

Side effects: none (builds driver SQL and its parameters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import PGDialect

Column = tuple[str, str, str]  # (column, bind parameter, PostgreSQL type)
_POSTGRESQL = PGDialect()  # type: ignore[no-untyped-call]  # for its type names only


def typed(table: sa.Table, **binds: str) -> tuple[Column, ...]:
    """`table`'s columns for a statement over arrays, in the order given (column=bind
    parameter), each with its PostgreSQL type as store/tables.py declares it: the type is
    written once, there."""
    return tuple(
        (column, bind, table.c[column].type.compile(dialect=_POSTGRESQL).lower())
        for column, bind in binds.items()
    )


def names(columns: Sequence[Column]) -> tuple[str, ...]:
    """The columns' names, in their order (for the same statement's SQLite form)."""
    return tuple(column for column, _, _ in columns)


def unnest_arrays(columns: Sequence[Column]) -> tuple[str, str]:
    """`unnest(CAST(%(b)b AS type[]), ...)` (driver SQL, for `exec_driver_sql` with a dict of
    lists) and its columns' names (`v(b, ...)`'s). `%(b)b`: psycopg sends the list in
    binary; in text (`%(b)s`) its array dumper escapes every element with a regular
    expression, about 25 us per row of an attempt or an event, most of the store process's
    CPU for a record."""
    arrays = ", ".join(f"CAST(%({bind})b AS {kind}[])" for _, bind, kind in columns)
    return f"unnest({arrays})", ", ".join(bind for _, bind, _ in columns)


def insert_unnest(table: str, columns: Sequence[Column]) -> str:
    """INSERT of many rows (driver SQL), each column's values one array, in the arrays'
    order (rows get their serial keys in that order)."""
    arrays, names = unnest_arrays(columns)
    targets = ", ".join(column for column, _, _ in columns)
    return (
        f"INSERT INTO {table} ({targets}) SELECT {names} FROM {arrays}"
        f" WITH ORDINALITY AS v({names}, n) ORDER BY n"
    )


def arrays(rows: Sequence[tuple[Any, ...]], columns: Sequence[Column]) -> dict[str, Any]:
    """Row tuples (in `columns`' order) as one list per bind parameter, each number column's
    values of one type (a time of double precision all floats, an integer or bigint all
    ints, a boolean all bools; None stays None): psycopg refuses a binary list of mixed
    types ("cannot dump lists of mixed types"), e.g. a time given as a whole number among
    floats, and the statement would fail as a whole."""
    lists = list(zip(*rows, strict=True)) or [() for _ in columns]
    return {
        bind: _of_one_type(values, kind)
        for (_, bind, kind), values in zip(columns, lists, strict=True)
    }


_TYPES: dict[str, type] = {
    "double precision": float,
    "bigint": int,
    "integer": int,
    "boolean": bool,
}


def _of_one_type(values: Sequence[Any], kind: str) -> list[Any]:
    made = _TYPES.get(kind)
    if made is None:
        return list(values)
    return [v if v is None or v.__class__ is made else made(v) for v in values]
