"""Query plans of what a store call runs: capture its statements, then EXPLAIN each and name
those that read a growing table whole (SQLite `SCAN t`; PostgreSQL `Seq Scan on t` with
sequential scans priced out, so a small test table still shows whether an index can serve)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from mailvia.store import SqlStore


def statements(store: SqlStore, call: Callable[[], object]) -> list[tuple[str, Any]]:
    """The SELECT, UPDATE and DELETE statements `call` runs (a WITH query too: PostgreSQL's
    claim is one), with their (first) parameters."""
    engine = store._db.engine
    seen: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            seen.append((statement, params[0] if many else params))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    return seen


def whole_table_reads(
    store: SqlStore, seen: list[tuple[str, Any]], tables: Sequence[str]
) -> list[str]:
    """The statements of `seen` whose plan reads one of `tables` whole, each with its steps."""
    engine: sa.Engine = store._db.engine
    sqlite = engine.dialect.name == "sqlite"
    found = []
    with engine.connect() as conn:
        if not sqlite:
            conn.exec_driver_sql("SET enable_seqscan = off")
        for statement, params in seen:
            prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            plan = [str(row[-1]) for row in conn.exec_driver_sql(prefix + statement, params)]
            bad = [
                step
                for step in plan
                for table in tables
                if (sqlite and step.strip().split(" ")[:2] == ["SCAN", table])
                or (not sqlite and f"Seq Scan on {table} " in step + " ")
            ]
            if bad:
                found.append(f"{' '.join(statement.split())[:140]}: {bad}")
        conn.rollback()
    return found
