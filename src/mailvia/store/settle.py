"""Changing messages' states in SQL: recording attempts (the hot path, in bulk statements),
holding and releasing a channel's mail, expiring mail past its give-up time, cancelling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mailvia.domain.channel import Channel, ChannelState
from mailvia.domain.clock import Instant
from mailvia.domain.errors import Conflict, NotFound
from mailvia.domain.message import TERMINAL, State
from mailvia.domain.retry import GAVE_UP, GAVE_UP_TEXT, LAST_TRY_GRACE
from mailvia.outbox.ports import AttemptRecord
from mailvia.outbox.records import Event, MessageView
from mailvia.store.engine import Database
from mailvia.store.events import insert_events
from mailvia.store.mending import cancel_seqs
from mailvia.store.message_reads import read_message
from mailvia.store.pg_arrays import Column, arrays, insert_unnest, names, typed, unnest_arrays
from mailvia.store.rows import chunks, event_id, insert_sql, literal_seqs, marker
from mailvia.store.settle_pg import MESSAGE_CLEARED, MESSAGE_KEY, MESSAGE_SET, settle_leased
from mailvia.store.tables import attempts, channels, messages, recipients

# The messages' columns are listed once, with their PostgreSQL types, beside the PostgreSQL
# statement (settle dispatches to it); SQLite's UPDATE takes their names.

_WAITING = (State.QUEUED.value, State.DEFERRED.value)
_EXPIRABLE = (State.QUEUED.value, State.DEFERRED.value, State.HELD.value)
_TERMINAL = sorted(s.value for s in TERMINAL)
m, r = messages.c, recipients.c

# What settling sets, written once: (column, bind parameter, PostgreSQL type from the
# table). Each table's UPDATE is built from it twice: driver SQL with one row per execute
# (SQLite), and on PostgreSQL one statement over arrays (unnest), whose text never changes so
# psycopg prepares it once, instead of a pipelined executemany that the server runs row by
# row (the messages' columns and UPDATE, which also checks the leases, are in
# store/settle_pg.py; the array helpers in store/pg_arrays.py).
# The rows are tuples handed to the driver as they are (no SQLAlchemy parameter processing
# per row).
_RECIPIENT_KEY = typed(recipients, message_seq="b_seq", address="b_address")
_RECIPIENT_SET = typed(
    recipients,
    state="b_state",
    last_code="b_code",
    last_enhanced="b_enhanced",
    last_text="b_text",
    updated_at="b_at",
)


def _set_sql(
    conn: sa.Connection,
    table: sa.Table,
    key: tuple[Column, ...],
    values: tuple[Column, ...],
    cleared: tuple[str, ...],
    mark: str,
) -> str:
    """One row's UPDATE as driver SQL: the values' markers, then the key's (a row's tuple
    lists them in that order)."""
    quote = conn.dialect.identifier_preparer.quote
    sets = [f"{quote(column)} = {mark}" for column, _, _ in values]
    sets += [f"{quote(column)} = NULL" for column in cleared]
    match = " AND ".join(f"{quote(column)} = {mark}" for column, _, _ in key)
    return f"UPDATE {quote(table.name)} SET {', '.join(sets)} WHERE {match}"


def _update_unnest(
    table: sa.Table, key: tuple[Column, ...], values: tuple[Column, ...], cleared: tuple[str, ...]
) -> str:
    """The same UPDATE for many rows on PostgreSQL (driver SQL): each bind parameter an
    array, sent in binary (store/pg_arrays.py)."""
    sets = [f"{column} = v.{bind}" for column, bind, _ in values]
    sets += [f"{column} = NULL" for column in cleared]
    unnest, names = unnest_arrays((*key, *values))
    match = " AND ".join(f"{table.name}.{column} = v.{bind}" for column, bind, _ in key)
    return f"UPDATE {table.name} SET {', '.join(sets)} FROM {unnest} AS v({names}) WHERE {match}"


_PG_UPDATE_RECIPIENTS = _update_unnest(recipients, _RECIPIENT_KEY, _RECIPIENT_SET, ())
# Recipients the attempt left untouched (never tried, still `sending`) follow the message's
# new state.
_LEFTOVERS_KEY = typed(recipients, message_seq="b_seq")
_LEFTOVERS_SET = typed(recipients, state="b_state", updated_at="b_at")
_PG_UPDATE_LEFTOVERS = (
    f"{_update_unnest(recipients, _LEFTOVERS_KEY, _LEFTOVERS_SET, ())}"
    f" AND recipients.state = '{State.SENDING.value}'"
)
_PG_ATTEMPT_COLUMNS = typed(
    attempts,
    message_seq="a_seq",
    channel_id="a_channel",
    recipient="a_recipient",
    at="a_at",
    stage="a_stage",
    code="a_code",
    enhanced="a_enhanced",
    text="a_text",
    outcome="a_outcome",
    worker="a_worker",
)
_PG_INSERT_ATTEMPTS = insert_unnest("attempts", _PG_ATTEMPT_COLUMNS)
_ATTEMPT_COLUMNS = names(_PG_ATTEMPT_COLUMNS)  # SQLite's INSERT
# A row of each statement, as a tuple in its driver SQL's order (values, then key).
_Row = tuple[Any, ...]
_STATE_VALUES: dict[str, str] = {state: state.value for state in State}
_TERMINAL_VALUES = frozenset(_TERMINAL)
_SENDING, _DEFERRED = State.SENDING.value, State.DEFERRED.value


def _state_value(state: State | str) -> str:
    value = _STATE_VALUES.get(state)
    return State(state).value if value is None else value


def _message_row(rec: AttemptRecord, stored_duplicate: bool) -> _Row:
    """The message's new values (MESSAGE_SET, then seq): its state `_after` the record;
    possible_duplicate once true stays true (`stored_duplicate`, the flag as stored)."""
    duplicate = stored_duplicate or rec.possible_duplicate
    return (_after(rec), rec.next_attempt_at, rec.failures, duplicate, rec.claim.seq)


def _after(rec: AttemptRecord) -> str:
    """The message's state after the record: without a lease nothing would ever pick a
    `sending` message up again, so it is deferred."""
    after = _state_value(rec.message_state)
    return _DEFERRED if after == _SENDING else after


class _Settled:
    """A record's rows for the recipients and attempts, built in one pass over the kept
    records (their messages' rows are written first: `_message_row`)."""

    def __init__(self, kept: Sequence[AttemptRecord]) -> None:
        self.recipients: list[_Row] = []  # _RECIPIENT_SET, then seq and address
        self.leftovers: list[_Row] = []  # state, updated_at, then seq
        self.attempts: list[_Row] = []  # _ATTEMPT_COLUMNS
        for rec in kept:
            self._add(rec)

    def _add(self, rec: AttemptRecord) -> None:
        claim = rec.claim
        seq, at, worker, channel = claim.seq, rec.at, rec.worker, claim.channel_id
        after = _after(rec)
        if after not in _TERMINAL_VALUES:
            self.leftovers.append((after, at, seq))
        for s in rec.recipients:
            code, enhanced, text = s.reply.code, s.reply.enhanced, s.reply.text
            state = _state_value(s.state)
            self.recipients.append((state, code, enhanced, text, at, seq, s.address))
            outcome, stage = str(s.outcome), str(s.stage)  # the stage its own reply came at
            self.attempts.append(
                (seq, channel, s.address, at, stage, code, enhanced, text, outcome, worker)
            )

    def write(self, conn: sa.Connection) -> None:
        """The recipients' replies, the untried recipients and the attempt rows, in bulk: on
        PostgreSQL one statement over arrays each."""
        if conn.dialect.name == "postgresql":
            if self.recipients:
                columns = (*_RECIPIENT_SET, *_RECIPIENT_KEY)
                conn.exec_driver_sql(_PG_UPDATE_RECIPIENTS, arrays(self.recipients, columns))
            if self.leftovers:
                columns = (*_LEFTOVERS_SET, *_LEFTOVERS_KEY)
                conn.exec_driver_sql(_PG_UPDATE_LEFTOVERS, arrays(self.leftovers, columns))
            if self.attempts:
                rows = arrays(self.attempts, _PG_ATTEMPT_COLUMNS)
                conn.exec_driver_sql(_PG_INSERT_ATTEMPTS, rows)
            return
        mark = marker(conn)
        update = _set_sql(conn, recipients, _RECIPIENT_KEY, _RECIPIENT_SET, (), mark)
        _driver_many(conn, update, self.recipients)
        leftovers = _set_sql(conn, recipients, _LEFTOVERS_KEY, _LEFTOVERS_SET, (), mark)
        _driver_many(conn, f"{leftovers} AND state = '{_SENDING}'", self.leftovers)
        _driver_many(conn, insert_sql(conn, attempts, _ATTEMPT_COLUMNS, mark), self.attempts)


def _driver_many(conn: sa.Connection, sql: str, rows: list[_Row]) -> None:
    if rows:
        conn.exec_driver_sql(sql, rows)


def _live(conn: sa.Connection, records: Sequence[AttemptRecord]) -> dict[int, bool]:
    """seq -> possible_duplicate of the messages still leased to their record's worker
    (SQLite: its write transaction holds the write lock already)."""
    owners: dict[int, tuple[str | None, bool]] = {}
    seqs = sorted({rec.claim.seq for rec in records})
    for part in chunks(seqs):
        query = (
            "SELECT seq, lease_owner, possible_duplicate FROM messages"
            f" WHERE seq IN {literal_seqs(part)}"
        )
        for seq, owner, duplicate in conn.exec_driver_sql(query):
            owners[seq] = (owner, bool(duplicate))
    return {
        rec.claim.seq: owners[rec.claim.seq][1]
        for rec in records
        if rec.claim.seq in owners and owners[rec.claim.seq][0] == rec.worker
    }


def record_in(conn: sa.Connection, records: Sequence[AttemptRecord]) -> None:
    """`record_attempts`'s writes, in the caller's write transaction: the messages still
    leased to their record's worker (on PostgreSQL the messages' UPDATE checks the lease
    itself: store/settle_pg.py), then their recipients, attempts and events."""
    if conn.dialect.name == "postgresql":
        kept = settle_leased(
            conn, records, [_message_row(rec, stored_duplicate=False) for rec in records]
        )
    else:
        live = _live(conn, records)
        kept = [rec for rec in records if rec.claim.seq in live]
        update = _set_sql(conn, messages, MESSAGE_KEY, MESSAGE_SET, MESSAGE_CLEARED, marker(conn))
        _driver_many(conn, update, [_message_row(rec, live[rec.claim.seq]) for rec in kept])
    if kept:
        _Settled(kept).write(conn)
        insert_events(conn, [e for rec in kept for e in rec.events])


def _expire(conn: sa.Connection, seqs: Sequence[int], now: Instant) -> None:
    code, enhanced, text = GAVE_UP
    conn.execute(
        recipients.update()
        .where(r.message_seq.in_(seqs), r.state.not_in(_TERMINAL))
        .values(
            state=State.EXPIRED.value,
            last_code=code,
            last_enhanced=enhanced,
            last_text=text,
            updated_at=now,
        )
    )
    conn.execute(
        messages.update()
        .where(m.seq.in_(seqs))
        .values(state=State.EXPIRED.value, next_attempt_at=None)
    )


def _not_last_try(state: str, now: Instant) -> sa.ColumnElement[bool]:
    """Not a deferred message whose last try, at its give-up time, is still to come."""
    if state != State.DEFERRED.value:
        return sa.true()
    return sa.or_(
        m.next_attempt_at.is_(None),
        m.next_attempt_at < m.expires_at,
        m.expires_at <= now - LAST_TRY_GRACE,
    )


class SettleStore:
    """State-changing methods of the Store port."""

    _db: Database

    def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        """Persist attempts, all in one transaction: an attempts row and the new state and last
        reply per settled recipient; the message's state, next_attempt_at, failures and
        possible_duplicate (once true, it stays true); the lease cleared; the records' events.

        A record whose message is no longer leased to the record's worker (its lease expired
        and another worker claimed it, or it was given back) is ignored with its events.
        """
        if not records:
            return
        with self._db.write() as conn:
            record_in(conn, records)

    def hold_channel(self, channel_id: str, now: Instant) -> int:
        """Hold the channel's queued and deferred messages (and their unfinished recipients)
        until it is released. Returns how many messages were held."""
        waiting = sa.and_(m.channel_id == channel_id, m.state.in_(_WAITING))
        with self._db.write() as conn:
            return move_messages(conn, waiting, State.HELD, {}, now)

    def release_channel(self, channel_id: str, now: Instant) -> int:
        """Queue the channel's held messages (and their held recipients) again, due now; their
        submission order (seq) decides who goes first. Returns how many were released."""
        held = sa.and_(m.channel_id == channel_id, m.state == State.HELD.value)
        with self._db.write() as conn:
            return move_messages(conn, held, State.QUEUED, {"next_attempt_at": now}, now)

    def release_if_active(self, seen: Channel, now: Instant) -> int | None:
        """`release_channel`, only while the channel is active and still in `seen`'s
        generation: one transaction, the channel's row locked (a disconnect between the
        reading of `seen` and this releases nothing). Returns how many were released, or None
        (the channel is not active, changed since, or is gone)."""
        c = channels.c
        held = sa.and_(m.channel_id == seen.id, m.state == State.HELD.value)
        with self._db.write() as conn:
            still = conn.execute(
                sa.select(c.id)
                .where(
                    c.id == seen.id,
                    c.state == ChannelState.ACTIVE.value,
                    c.generation == seen.generation,
                )
                .with_for_update()
            ).first()
            if still is None:
                return None
            return move_messages(conn, held, State.QUEUED, {"next_attempt_at": now}, now)

    def expire_due(self, now: Instant, events_for: str, *, limit: int = 1000) -> list[Event]:
        """Expire queued, deferred and held messages whose give-up time has come, at most
        `limit` of each state (soonest first; call again while a full batch came back):
        they and their unfinished recipients become `expired` (with a reply saying so).
        Returns and records one `message.expired` event per message, with the state and the
        reason (the owner's webhooks and activity say why it never went). (`events_for` is the
        caller's label and changes nothing.)

        A deferred message whose last try is due at its give-up time (the retry schedule puts
        it there) is left to that try for LAST_TRY_GRACE seconds: the try settles it."""
        with self._db.write() as conn:
            rows = sorted(
                (
                    row
                    for state in _EXPIRABLE
                    for row in conn.execute(
                        sa.select(m.seq, m.id, m.organization_id)
                        .where(m.state == state, m.expires_at <= now, _not_last_try(state, now))
                        .order_by(m.expires_at)
                        .limit(limit)
                        .with_for_update()
                    )
                ),
                key=lambda row: row.seq,
            )
            for part in chunks([row.seq for row in rows]):
                _expire(conn, part, now)
            expired = [
                Event(
                    event_id(now),
                    row.organization_id,
                    "message.expired",
                    now,
                    {"message_id": row.id, "state": State.EXPIRED.value, "reason": GAVE_UP_TEXT},
                )
                for row in rows
            ]
            insert_events(conn, expired)
        return expired

    def cancel_message(
        self, message_id: str, now: Instant, reason: str = "cancelled"
    ) -> MessageView:
        """Cancel the message's queued, deferred and held recipients (their reply says
        `reason`) and record a `message.cancelled` event; the message's state follows from its
        recipients'. Raises NotFound, or Conflict while it is being sent or once it is
        finished."""
        with self._db.write() as conn:
            row = conn.execute(
                sa.select(m.seq, m.id, m.organization_id, m.state)
                .where(m.id == message_id)
                .with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"no message {message_id!r}")
            if row.state == State.SENDING.value:
                raise Conflict("the message is being sent right now; try again in a moment")
            if row.state in _TERMINAL:
                raise Conflict(f"the message is already {row.state}")
            cancel_seqs(conn, [row], now, reason)
            return read_message(conn, message_id)


def move_messages(
    conn: sa.Connection,
    which: sa.ColumnElement[bool],
    to: State,
    values: dict[str, Any],
    now: Instant,
) -> int:
    """Lock the messages `which` selects and move them, with their recipients that are neither
    terminal nor `sending`, to state `to`. Returns how many messages moved."""
    seqs = list(conn.execute(sa.select(m.seq).where(which).with_for_update()).scalars())
    for part in chunks(seqs):
        conn.execute(
            recipients.update()
            .where(r.message_seq.in_(part), r.state.in_(_EXPIRABLE))
            .values(state=to.value, updated_at=now)
        )
        conn.execute(messages.update().where(m.seq.in_(part)).values(state=to.value, **values))
    return len(seqs)
