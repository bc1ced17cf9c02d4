"""Each organization's event stream in SQL, read in insertion (`seq`) order."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mailvia.domain.cursors import CursorSeal
from mailvia.domain.errors import InvalidInput
from mailvia.outbox.records import Event
from mailvia.store.engine import Database
from mailvia.store.pg_arrays import arrays, insert_unnest, names, typed
from mailvia.store.rows import insert_sql, marker
from mailvia.store.tables import events

_CURSOR = "evt"
# Writers of events take this lock so that `seq` order is commit order on PostgreSQL: a reader
# that has seen seq n can never later find a smaller one committed (SQLite has one writer).
_EVENTS_LOCK = 0x6D61696C76696101


# (column, bind parameter, PostgreSQL type): on PostgreSQL the rows go as one statement over
# arrays, in order (their seqs rise in it).
_PG_COLUMNS = typed(
    events,
    id="e_id",
    organization_id="e_organization",
    type="e_type",
    created_at="e_created",
    data="e_data",
)
_PG_INSERT = insert_unnest("events", _PG_COLUMNS)
_COLUMNS = names(_PG_COLUMNS)


def insert_events(conn: sa.Connection, items: Sequence[Event]) -> None:
    """Append events inside the caller's transaction, in order: on PostgreSQL one statement
    over arrays, elsewhere one executemany with the rows as tuples straight to the driver."""
    if not items:
        return
    rows = [
        (e.id, e.organization_id, e.type, e.created_at, json.dumps(dict(e.data), default=str))
        for e in items
    ]
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_EVENTS_LOCK})")
        conn.exec_driver_sql(_PG_INSERT, arrays(rows, _PG_COLUMNS))
        return
    conn.exec_driver_sql(insert_sql(conn, events, _COLUMNS, marker(conn)), rows)


def _event(row: Any) -> Event:
    return Event(row.id, row.organization_id, row.type, row.created_at, json.loads(row.data))


class EventStore:
    """Event methods of the Store port."""

    _db: Database
    _cursors: CursorSeal

    def add_events(self, items: Sequence[Event]) -> None:
        """Append events to their organizations' streams. Raises Conflict for a reused id."""
        with self._db.write(conflict="an event with this id already exists") as conn:
            insert_events(conn, items)

    def list_events(
        self, org_id: str, *, cursor: str | None, limit: int
    ) -> tuple[list[Event], str | None]:
        """Up to `limit` of the organization's events after `cursor`, oldest first.

        The stream has no end: the returned cursor is where to continue from (the last event
        returned, or the given cursor when nothing new came); it is None only when the
        organization has no events yet and no cursor was given. Raises InvalidCursor for a
        cursor this organization's list did not hand out.
        """
        if limit < 1:
            raise InvalidInput("limit: must be at least 1")
        after = 0 if cursor is None else self._cursors.open(_CURSOR, org_id, cursor)
        query = (
            sa.select(events)
            .where(events.c.organization_id == org_id, events.c.seq > after)
            .order_by(events.c.seq)
            .limit(limit)
        )
        with self._db.read() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return [], cursor
        return [_event(row) for row in rows], self._cursors.seal(_CURSOR, org_id, rows[-1].seq)
