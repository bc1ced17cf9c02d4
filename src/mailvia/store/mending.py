"""Mending a channel's mail in SQL: reading what waits on a channel, cancelling messages with
a reason (and a `message.cancelled` event each), moving waiting mail to another channel,
retrying a channel's deferred mail now.

Only mail that waits (queued, deferred or held) is touched: a message being sent has a lease
and finishes (or is given back) first; a finished one stays as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mailvia.domain.clock import Instant
from mailvia.domain.message import State, message_state
from mailvia.domain.retry import CANCELLED
from mailvia.outbox.records import Event, WaitingMail
from mailvia.store.engine import Database
from mailvia.store.events import insert_events
from mailvia.store.rows import chunks, event_id
from mailvia.store.tables import channels, message_contents, messages, recipients

WAITING = (State.QUEUED.value, State.DEFERRED.value, State.HELD.value)
m, r = messages.c, recipients.c


def cancel_seqs(conn: sa.Connection, rows: Sequence[Any], now: Instant, reason: str) -> None:
    """Cancel the waiting recipients of these messages (rows of seq, id, organization_id),
    settle each message's state from its recipients', and record one `message.cancelled`
    event each, all in the caller's transaction."""
    code, enhanced = CANCELLED
    text = f"mailvia: cancelled: {reason}"
    seqs = [row.seq for row in rows]
    for part in chunks(seqs):
        conn.execute(
            recipients.update()
            .where(r.message_seq.in_(part), r.state.in_(WAITING))
            .values(
                state=State.CANCELLED.value,
                last_code=code,
                last_enhanced=enhanced,
                last_text=text,
                updated_at=now,
            )
        )
        states: dict[int, list[State]] = {}
        for seq, state in conn.execute(
            sa.select(r.message_seq, r.state).where(r.message_seq.in_(part))
        ):
            states.setdefault(seq, []).append(State(state))
        for seq, found in states.items():
            state = message_state(found)
            values: dict[str, object] = {"state": state.value}
            if state.terminal:
                values["next_attempt_at"] = None
            conn.execute(messages.update().where(m.seq == seq).values(**values))
    events = [
        Event(
            event_id(now),
            row.organization_id,
            "message.cancelled",
            now,
            {"message_id": row.id, "reason": reason},
        )
        for row in rows
    ]
    insert_events(conn, events)


class MendingStore:
    """Mending methods of the Store port."""

    _db: Database

    def waiting_mail(self, channel_id: str) -> list[WaitingMail]:
        """The channel's queued, deferred and held messages, in submission order, each with
        its sender and the head of its content (where its From is)."""
        query = (
            sa.select(m.id, m.user_id, message_contents.c.content)
            .join(message_contents, message_contents.c.message_seq == m.seq)
            .where(m.channel_id == channel_id, m.state.in_(WAITING))
            .order_by(m.seq)
        )
        with self._db.read() as conn:
            return [
                WaitingMail(row.id, row.user_id, bytes(row.content).partition(b"\r\n\r\n")[0])
                for row in conn.execute(query)
            ]

    def cancel_channel_mail(
        self, channel_id: str, now: Instant, reason: str, ids: Sequence[str] | None = None
    ) -> int:
        """Cancel the channel's waiting messages (only those of `ids` when given), each with
        `reason` and a `message.cancelled` event. Returns how many were cancelled."""
        which = sa.and_(m.channel_id == channel_id, m.state.in_(WAITING))
        with self._db.write() as conn:
            rows = _locked(conn, which, ids)
            cancel_seqs(conn, rows, now, reason)
            return len(rows)

    def move_mail(
        self, channel_id: str, ids: Sequence[str], to_channel_id: str, *, held: bool, now: Instant
    ) -> int:
        """Move these of the channel's waiting messages to another channel: queued there, due
        now (their order is their submission order), or held when `held` (that channel is
        not active). Returns how many moved (a message that stopped waiting stays)."""
        to = State.HELD if held else State.QUEUED
        which = sa.and_(m.channel_id == channel_id, m.state.in_(WAITING))
        with self._db.write() as conn:
            seqs = [row.seq for row in _locked(conn, which, ids)]
            for part in chunks(seqs):
                conn.execute(
                    recipients.update()
                    .where(r.message_seq.in_(part), r.state.in_(WAITING))
                    .values(state=to.value, updated_at=now)
                )
                values: dict[str, object] = {"channel_id": to_channel_id, "state": to.value}
                if not held:
                    values["next_attempt_at"] = now
                conn.execute(messages.update().where(m.seq.in_(part)).values(**values))
            return len(seqs)

    def retry_channel_now(self, channel_id: str, now: Instant) -> int:
        """Make the channel's deferred messages due now and end its pause (after its
        settings changed, the back-off earned with the old ones, a wrong port's
        `unreachable` pause among them, no longer applies). Returns how many messages."""
        with self._db.write() as conn:
            conn.execute(
                channels.update()
                .where(channels.c.id == channel_id)
                .values(throttled_until=None, throttle_level=0)
            )
            result = conn.execute(
                messages.update()
                .where(
                    m.channel_id == channel_id,
                    m.state == State.DEFERRED.value,
                    m.next_attempt_at > now,
                )
                .values(next_attempt_at=now)
            )
            return int(result.rowcount or 0)


def _locked(
    conn: sa.Connection, which: sa.ColumnElement[bool], ids: Sequence[str] | None
) -> list[Any]:
    """Lock and read (seq, id, organization_id) of the messages `which` selects (those of
    `ids` when given), in submission order."""
    if ids is not None:
        found: list[Any] = []
        for part in chunks(list(ids)):
            query = sa.select(m.seq, m.id, m.organization_id).where(which, m.id.in_(part))
            found.extend(conn.execute(query.with_for_update()).all())
        return sorted(found, key=lambda row: row.seq)
    query = sa.select(m.seq, m.id, m.organization_id).where(which).order_by(m.seq)
    return list(conn.execute(query.with_for_update()).all())
