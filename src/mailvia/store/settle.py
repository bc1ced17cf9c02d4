"""Changing messages' states in SQL: recording attempts (the hot path, in bulk statements),
holding and releasing a channel's mail, expiring mail past its give-up time, cancelling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

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
from mailvia.store.rows import among, chunks, event_id
from mailvia.store.tables import attempts, messages, recipients

_WAITING = (State.QUEUED.value, State.DEFERRED.value)
_EXPIRABLE = (State.QUEUED.value, State.DEFERRED.value, State.HELD.value)
_TERMINAL = sorted(s.value for s in TERMINAL)
m, r = messages.c, recipients.c
_b = sa.bindparam

_UPDATE_MESSAGE = (
    messages.update()
    .where(m.seq == _b("b_seq"))
    .values(
        state=_b("b_state"),
        next_attempt_at=_b("b_next"),
        failures=_b("b_failures"),
        possible_duplicate=_b("b_duplicate"),
        lease_owner=None,
        lease_expires_at=None,
        started_at=None,
    )
)
_UPDATE_RECIPIENT = (
    recipients.update()
    .where(r.message_seq == _b("b_seq"), r.address == _b("b_address"))
    .values(
        state=_b("b_state"),
        last_code=_b("b_code"),
        last_enhanced=_b("b_enhanced"),
        last_text=_b("b_text"),
        updated_at=_b("b_at"),
    )
)
# Recipients the attempt left untouched (never tried) follow the message's new state.
_UPDATE_LEFTOVERS = (
    recipients.update()
    .where(r.message_seq == _b("b_seq"), r.state == State.SENDING.value)
    .values(state=_b("b_state"), updated_at=_b("b_at"))
)


# On PostgreSQL the two bulk UPDATEs take arrays: one statement whose text never changes
# (psycopg prepares it once), instead of a pipelined executemany that psycopg walks row by row.
_PG_UPDATE_MESSAGES = sa.text(
    "UPDATE messages SET state = v.state, next_attempt_at = v.next, failures = v.failures,"
    " possible_duplicate = v.duplicate, lease_owner = NULL, lease_expires_at = NULL,"
    " started_at = NULL"
    " FROM unnest(CAST(:seqs AS bigint[]), CAST(:states AS text[]),"
    " CAST(:nexts AS double precision[]), CAST(:failures AS integer[]),"
    " CAST(:duplicates AS boolean[])) AS v(seq, state, next, failures, duplicate)"
    " WHERE messages.seq = v.seq"
)
_PG_UPDATE_RECIPIENTS = sa.text(
    "UPDATE recipients SET state = v.state, last_code = v.code, last_enhanced = v.enhanced,"
    " last_text = v.text, updated_at = v.at"
    " FROM unnest(CAST(:seqs AS bigint[]), CAST(:addresses AS text[]),"
    " CAST(:states AS text[]), CAST(:codes AS integer[]), CAST(:enhanced AS text[]),"
    " CAST(:texts AS text[]), CAST(:ats AS double precision[]))"
    " AS v(seq, address, state, code, enhanced, text, at)"
    " WHERE recipients.message_seq = v.seq AND recipients.address = v.address"
)


def _columns(rows: list[dict[str, Any]], names: dict[str, str]) -> dict[str, list[Any]]:
    """Row dicts as one list per column, renamed (`names`: row key -> parameter name)."""
    return {param: [row[key] for row in rows] for key, param in names.items()}


def _update_settled(
    conn: sa.Connection, messages_rows: list[dict[str, Any]], rcpt_rows: list[dict[str, Any]]
) -> None:
    """The messages' new states and their recipients' replies, in bulk."""
    if conn.dialect.name != "postgresql":
        conn.execute(_UPDATE_MESSAGE, messages_rows)
        _execute_many(conn, _UPDATE_RECIPIENT, rcpt_rows)
        return
    names = {
        "b_seq": "seqs",
        "b_state": "states",
        "b_next": "nexts",
        "b_failures": "failures",
        "b_duplicate": "duplicates",
    }
    conn.execute(_PG_UPDATE_MESSAGES, _columns(messages_rows, names))
    if rcpt_rows:
        names = {
            "b_seq": "seqs",
            "b_address": "addresses",
            "b_state": "states",
            "b_code": "codes",
            "b_enhanced": "enhanced",
            "b_text": "texts",
            "b_at": "ats",
        }
        conn.execute(_PG_UPDATE_RECIPIENTS, _columns(rcpt_rows, names))


def _live(conn: sa.Connection, records: Sequence[AttemptRecord]) -> dict[int, bool]:
    """seq -> possible_duplicate of the messages still leased to their record's worker
    (locked until commit on PostgreSQL)."""
    owners: dict[int, tuple[str | None, bool]] = {}
    seqs = sorted({rec.claim.seq for rec in records})
    for part in chunks(seqs):
        query = (
            sa.select(m.seq, m.lease_owner, m.possible_duplicate)
            .where(among(m.seq, part))
            .with_for_update()
        )
        for seq, owner, duplicate in conn.execute(query):
            owners[seq] = (owner, bool(duplicate))
    return {
        rec.claim.seq: owners[rec.claim.seq][1]
        for rec in records
        if rec.claim.seq in owners and owners[rec.claim.seq][0] == rec.worker
    }


def _attempt_rows(rec: AttemptRecord) -> list[dict[str, Any]]:
    return [
        {
            "message_seq": rec.claim.seq,
            "channel_id": rec.claim.channel_id,
            "recipient": s.address,
            "at": rec.at,
            "stage": rec.stage,
            "code": s.reply.code,
            "enhanced": s.reply.enhanced,
            "text": s.reply.text,
            "outcome": str(s.outcome),
            "worker": rec.worker,
        }
        for s in rec.recipients
    ]


def _after(rec: AttemptRecord) -> State:
    # Without a lease nothing would ever pick a `sending` message up again.
    return State.DEFERRED if rec.message_state == State.SENDING else State(rec.message_state)


def _message_params(rec: AttemptRecord, live: dict[int, bool]) -> dict[str, Any]:
    return {
        "b_seq": rec.claim.seq,
        "b_state": _after(rec).value,
        "b_next": rec.next_attempt_at,
        "b_failures": rec.failures,
        "b_duplicate": live[rec.claim.seq] or rec.possible_duplicate,
    }


def _rcpt_params(rec: AttemptRecord) -> list[dict[str, Any]]:
    return [
        {
            "b_seq": rec.claim.seq,
            "b_address": s.address,
            "b_state": State(s.state).value,
            "b_code": s.reply.code,
            "b_enhanced": s.reply.enhanced,
            "b_text": s.reply.text,
            "b_at": rec.at,
        }
        for s in rec.recipients
    ]


def _execute_many(
    conn: sa.Connection, statement: sa.Executable, rows: list[dict[str, Any]]
) -> None:
    if rows:
        conn.execute(statement, rows)


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
            live = _live(conn, records)
            kept = [rec for rec in records if rec.claim.seq in live]
            if not kept:
                return
            _update_settled(
                conn,
                [_message_params(rec, live) for rec in kept],
                [p for rec in kept for p in _rcpt_params(rec)],
            )
            leftovers = [
                {"b_seq": rec.claim.seq, "b_state": _after(rec).value, "b_at": rec.at}
                for rec in kept
                if not _after(rec).terminal
            ]
            _execute_many(conn, _UPDATE_LEFTOVERS, leftovers)
            _execute_many(conn, attempts.insert(), [p for rec in kept for p in _attempt_rows(rec)])
            insert_events(conn, [e for rec in kept for e in rec.events])

    def hold_channel(self, channel_id: str, now: Instant) -> int:
        """Hold the channel's queued and deferred messages (and their unfinished recipients)
        until it is released. Returns how many messages were held."""
        waiting = sa.and_(m.channel_id == channel_id, m.state.in_(_WAITING))
        with self._db.write() as conn:
            return _move(conn, waiting, State.HELD, {}, now)

    def release_channel(self, channel_id: str, now: Instant) -> int:
        """Queue the channel's held messages (and their held recipients) again, due now; their
        submission order (seq) decides who goes first. Returns how many were released."""
        held = sa.and_(m.channel_id == channel_id, m.state == State.HELD.value)
        with self._db.write() as conn:
            return _move(conn, held, State.QUEUED, {"next_attempt_at": now}, now)

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


def _move(
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
