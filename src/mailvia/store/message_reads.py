"""Reading the outbox in SQL: one message with its recipients and attempts, filtered pages of
messages (newest first, searched by subject or recipient), queue counts per channel and
state, and a channel's attempts hour by hour."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from mailvia.domain.cursors import CursorSeal
from mailvia.domain.errors import InvalidInput, NotFound
from mailvia.domain.message import Envelope, State
from mailvia.domain.replies import Outcome, Reply
from mailvia.outbox.headers import subject_of
from mailvia.outbox.records import (
    AttemptView,
    HourOfUse,
    MessageFilter,
    MessageView,
    RecipientView,
)
from mailvia.store.engine import Database
from mailvia.store.rows import reply_of
from mailvia.store.tables import attempts, channels, message_contents, messages, recipients

_CURSOR = "msg"
m, r, a = messages.c, recipients.c, attempts.c
HEAD_BYTES = 8192  # where a message stored before 0010 has its Subject, as good as always
# A message's columns; for one stored before 0010, the head of its bytes.
_OLD_HEAD = (
    sa.select(sa.func.substr(message_contents.c.content, 1, HEAD_BYTES))
    .where(message_contents.c.message_seq == m.seq)
    .scalar_subquery()
)
_HEAD = [
    *messages.c,
    sa.type_coerce(
        sa.case((m.subject.is_(None), _OLD_HEAD), else_=sa.null()), sa.LargeBinary
    ).label("head"),
]
HOUR = 3600.0


def _view(
    row: Any, rcpts: list[RecipientView], tries: list[AttemptView] | None = None
) -> MessageView:
    return MessageView(
        id=row.id,
        organization_id=row.organization_id,
        user_id=row.user_id,
        channel_id=row.channel_id,
        state=State(row.state),
        envelope=Envelope(row.mail_from, tuple(x.address for x in rcpts)),
        size=row.size,
        created_at=row.created_at,
        expires_at=row.expires_at,
        next_attempt_at=row.next_attempt_at,
        possible_duplicate=bool(row.possible_duplicate),
        recipients=tuple(rcpts),
        attempts=tuple(tries or ()),
        test=bool(row.test),
        subject=row.subject if row.subject is not None else _subject_of_head(row.head),
    )


def _subject_of_head(head: bytes | memoryview | str | None) -> str | None:
    """The subject in the head of a message's bytes (SQLite hands back text for bytes that
    were stored as text)."""
    if head is None:
        return None
    return subject_of(head.encode() if isinstance(head, str) else bytes(head))


def _recipients(conn: sa.Connection, seqs: list[int]) -> dict[int, list[RecipientView]]:
    found: dict[int, list[RecipientView]] = defaultdict(list)
    if not seqs:
        return found
    query = sa.select(recipients).where(r.message_seq.in_(seqs)).order_by(r.message_seq, r.position)
    for row in conn.execute(query):
        reply = reply_of(row.last_code, row.last_enhanced, row.last_text)
        found[row.message_seq].append(
            RecipientView(row.address, State(row.state), reply, row.updated_at)
        )
    return found


def _attempts(conn: sa.Connection, seq: int) -> list[AttemptView]:
    query = sa.select(attempts).where(a.message_seq == seq).order_by(a.at, a.id)
    return [
        AttemptView(
            at=row.at,
            channel_id=row.channel_id,
            recipient=row.recipient,
            stage=row.stage,
            reply=Reply(row.code, row.enhanced, row.text),
            outcome=row.outcome,
        )
        for row in conn.execute(query)
    ]


def read_message(conn: sa.Connection, message_id: str) -> MessageView:
    """The message with its recipients (by position) and attempts (by time). Raises
    NotFound."""
    row = conn.execute(sa.select(*_HEAD).where(m.id == message_id)).first()
    if row is None:
        raise NotFound(f"no message {message_id!r}")
    return _view(row, _recipients(conn, [row.seq])[row.seq], _attempts(conn, row.seq))


def _matching(search: str) -> sa.ColumnElement[bool]:
    """A message whose subject or one of whose recipients contains `search` (any case; `%`
    and `_` are taken as themselves)."""
    words = " ".join(search.split())
    recipient = sa.exists().where(
        r.message_seq == m.seq, r.address.icontains(words, autoescape=True)
    )
    return sa.or_(m.subject.icontains(words, autoescape=True), recipient)


class MessageReads:
    """Read methods of the Store port."""

    _db: Database
    _cursors: CursorSeal

    def get_message(self, message_id: str) -> MessageView:
        """The message with its recipients and attempts. Raises NotFound."""
        with self._db.read() as conn:
            return read_message(conn, message_id)

    def list_messages(self, query: MessageFilter) -> tuple[list[MessageView], str | None]:
        """One page of the organization's messages matching the filter, newest first, each
        with its recipients (not its attempts), and the cursor of the next page (None on the
        last). Raises InvalidInput for a bad limit, InvalidCursor for a cursor not handed
        out for this organization's list."""
        if query.limit < 1:
            raise InvalidInput("limit: must be at least 1")
        select = sa.select(*_HEAD).where(m.organization_id == query.organization_id)
        if query.user_id is not None:
            select = select.where(m.user_id == query.user_id)
        if query.state is not None:
            select = select.where(m.state == State(query.state).value)
        if query.channel_id is not None:
            select = select.where(m.channel_id == query.channel_id)
        if query.search:
            select = select.where(_matching(query.search))
        if query.cursor is not None:
            after = self._cursors.open(_CURSOR, query.organization_id, query.cursor)
            select = select.where(m.seq < after)
        select = select.order_by(m.seq.desc()).limit(query.limit + 1)
        with self._db.read() as conn:
            rows = conn.execute(select).all()
            page = rows[: query.limit]
            rcpts = _recipients(conn, [row.seq for row in page])
        views = [_view(row, rcpts[row.seq]) for row in page]
        if len(rows) <= query.limit:
            return views, None
        return views, self._cursors.seal(_CURSOR, query.organization_id, page[-1].seq)

    def hours_of_use(self, channel_id: str, *, until: float, hours: int) -> list[HourOfUse]:
        """The channel's attempts in the `hours` whole hours before `until`, oldest first: per
        hour, the messages tried and those delivered to at least one recipient. One index
        range (attempts by channel and time), counted per hour in one pass."""
        since = until - hours * HOUR
        starts = [since + i * HOUR for i in range(hours)]

        def counted(delivered: bool, start: float) -> sa.Label[int]:
            inside = sa.and_(a.at >= start, a.at < start + HOUR)
            if delivered:
                inside = sa.and_(inside, a.outcome == Outcome.DELIVERED.value)
            seq = sa.case((inside, a.message_seq), else_=sa.null())
            return sa.func.count(sa.distinct(seq)).label(f"{'d' if delivered else 't'}{start:.0f}")

        columns = [counted(d, start) for start in starts for d in (False, True)]
        query = sa.select(*columns).where(a.channel_id == channel_id, a.at >= since, a.at < until)
        with self._db.read() as conn:
            row = conn.execute(query).one()
        values = list(row)
        return [
            HourOfUse(start, int(values[2 * i] or 0), int(values[2 * i + 1] or 0))
            for i, start in enumerate(starts)
        ]

    def waiting_count(self, channel_id: str) -> int:
        """How many of the channel's messages wait to be sent (queued, deferred, sending)."""
        waiting = (State.QUEUED.value, State.DEFERRED.value, State.SENDING.value)
        query = sa.select(sa.func.count()).where(m.channel_id == channel_id, m.state.in_(waiting))
        with self._db.read() as conn:
            return int(conn.execute(query).scalar_one())

    def queue_counts(self, org_id: str | None = None) -> dict[str, dict[State, int]]:
        """How many messages are in each state, per channel id: every state of every channel
        (of the organization, or all when None) and of any removed channel with messages."""
        counts = sa.select(m.channel_id, m.state, sa.func.count()).group_by(m.channel_id, m.state)
        known = sa.select(channels.c.id)
        if org_id is not None:
            counts = counts.where(m.organization_id == org_id)
            known = known.where(channels.c.organization_id == org_id)
        with self._db.read() as conn:
            ids = list(conn.execute(known).scalars())
            rows = conn.execute(counts).all()
        result: dict[str, dict[State, int]] = {str(i): dict.fromkeys(State, 0) for i in ids}
        for channel_id, state, count in rows:
            result.setdefault(channel_id, dict.fromkeys(State, 0))[State(state)] = int(count)
        return result
