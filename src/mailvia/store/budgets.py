"""The shaping ledger: each budgeted channel's transactions, taken atomically so that several
workers sharing one database never exceed a budget together.

A transaction counts against a window from its start until `per_seconds` after its end:
whenever the receiving server counts it (at MAIL, or at the final dot), no window it sees
holds more than the budget. A transaction in flight counts as happening now; one left open
by a crashed worker is taken to have ended `STALE_AFTER` seconds after it started.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mailvia.domain.channel import Budget, Unit
from mailvia.domain.clock import Instant
from mailvia.domain.errors import NotFound
from mailvia.domain.shaping import Use, UseLog, longest_window, need, next_fit
from mailvia.store.engine import Database
from mailvia.store.tables import channel_usage, channels

u = channel_usage.c
STALE_AFTER = 3600.0
_PURGE_SLACK = 3600.0  # keep an hour beyond the longest window, then forget


def _effective_end(now: Instant) -> Any:
    """When a row stops counting as in flight: its end, or now, or its stale time."""
    stale = u.at + STALE_AFTER
    return sa.func.coalesce(u.ended_at, sa.case((stale < now, stale), else_=now))


class BudgetLedger:
    """One channel's transactions against its budgets."""

    def __init__(self, db: Database, channel_id: str, budgets: Sequence[Budget]) -> None:
        self._db = db
        self.channel_id = channel_id
        self.budgets = tuple(budgets)
        self.window = longest_window(budgets)

    def take(self, now: Instant, recipients: int) -> tuple[int | None, Instant | None]:
        """Start a transaction now if every budget allows it: returns (its ledger id, None).
        Otherwise records nothing, marks the channel as waiting and returns (None, when).

        One database transaction, serialised per channel (SQLite's write lock; a row lock on
        PostgreSQL). Raises NotFound when the channel is gone."""
        with self._db.write() as conn:
            self._lock(conn)
            held = self._held(conn, now)
            if all(
                h + need(b, recipients) <= b.count for b, h in zip(self.budgets, held, strict=True)
            ):
                seq = conn.execute(
                    channel_usage.insert().values(
                        channel_id=self.channel_id, at=now, messages=1, recipients=recipients
                    )
                ).inserted_primary_key
                self._purge(conn, now)
                return int((seq or (0,))[0]), None
            wait = next_fit(self.budgets, self._log(conn, now), now, recipients)
            wait = max(wait, now + 0.05)  # in-flight transactions end soon; look again then
            conn.execute(
                channels.update()
                .where(channels.c.id == self.channel_id)
                .values(budget_wait_until=wait)
            )
            return None, wait

    def finish(self, ended: Sequence[tuple[int, Instant]]) -> None:
        """Record when transactions ended (one database transaction)."""
        if not ended:
            return
        with self._db.write() as conn:
            conn.execute(
                channel_usage.update().where(u.seq == sa.bindparam("s")),
                [{"s": seq, "ended_at": at} for seq, at in ended],
            )

    def allowance(self, now: Instant) -> int | None:
        """How many more transactions the message budgets let start now (None: no limit)."""
        with self._db.read() as conn:
            held = self._held(conn, now)
        counts = [
            b.count - h for b, h in zip(self.budgets, held, strict=True) if b.unit is Unit.MESSAGES
        ]
        return max(min(counts), 0) if counts else None

    def log(self, now: Instant) -> UseLog:
        """The transactions that count at `now`, by end time (in flight: now)."""
        with self._db.read() as conn:
            return self._log(conn, now)

    def _lock(self, conn: sa.Connection) -> None:
        query = sa.select(channels.c.id).where(channels.c.id == self.channel_id)
        if conn.execute(query.with_for_update()).first() is None:
            raise NotFound(f"no channel {self.channel_id!r}")

    def _held(self, conn: sa.Connection, now: Instant) -> list[int]:
        end = _effective_end(now)
        sums = [
            sa.func.coalesce(
                sa.func.sum(
                    sa.case(
                        (
                            end > now - b.per_seconds,
                            u.messages if b.unit is Unit.MESSAGES else u.recipients,
                        ),
                        else_=0,
                    )
                ),
                0,
            )
            for b in self.budgets
        ]
        row = conn.execute(sa.select(*sums).where(*self._recent(now))).one()
        return [int(v) for v in row]

    def _log(self, conn: sa.Connection, now: Instant) -> UseLog:
        end = _effective_end(now)
        rows = conn.execute(sa.select(end, u.messages, u.recipients).where(*self._recent(now)))
        return UseLog(Use(float(at), int(m), int(r)) for at, m, r in rows)

    def _recent(self, now: Instant) -> list[Any]:
        return [
            u.channel_id == self.channel_id,
            u.at > now - self.window - STALE_AFTER,
            sa.or_(u.ended_at.is_(None), u.ended_at > now - self.window),
        ]

    def _purge(self, conn: sa.Connection, now: Instant) -> None:
        conn.execute(
            channel_usage.delete().where(
                u.channel_id == self.channel_id,
                u.at < now - self.window - STALE_AFTER - _PURGE_SLACK,
            )
        )


class BudgetStore:
    """Budget use per channel."""

    _db: Database

    def budget_ledger(self, channel_id: str, budgets: Sequence[Budget]) -> BudgetLedger:
        """The ledger for the channel's budgets."""
        return BudgetLedger(self._db, channel_id, budgets)
