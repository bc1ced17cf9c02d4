"""The shaping ledger: each budgeted channel's transactions, taken atomically so that several
workers sharing one database never exceed a budget together.

A transaction counts against a window from its start until `per_seconds` after its end:
whenever the receiving server counts it (at MAIL, or at the final dot), no window it sees
holds more than the budget. A transaction in flight counts as happening now; one left open
by a crashed worker is taken to have ended `STALE_AFTER` seconds after it started.

Each row keeps `budget_end`, the end a budget counts it to (its end; in flight, its start
plus STALE_AFTER), so a window of `per` seconds at `now` holds exactly the rows with
`budget_end > now - per`. A start must not add up a whole window (a day of a mailbox's
history): `budget_windows` keeps, per channel and window, that sum at a cursor, and a check
moves the cursor to `now - per` by adding up only the rows whose budget_end lies between
the two (amortised, each row once per window). Starts and ends change the sums under the
channel's lock, so the sums stay exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from mailvia.domain.channel import Budget, Unit
from mailvia.domain.clock import Instant
from mailvia.domain.errors import NotFound
from mailvia.domain.shaping import Use, UseLog, longest_window, need
from mailvia.store.engine import Database
from mailvia.store.tables import budget_windows, channel_usage, channels

u, w = channel_usage.c, budget_windows.c
STALE_AFTER = 3600.0
_PURGE_SLACK = 3600.0  # keep an hour beyond the longest window, then forget
_LOOK_AGAIN = 0.05  # seconds: in-flight transactions end soon; look again then


@dataclass
class _Window:
    """One window's running sum: `held` is what rows with budget_end > `cursor` add up to."""

    per: float
    unit: Unit
    cursor: Instant
    held: int
    stored: bool  # a budget_windows row exists


def _amount(unit: Unit) -> Any:
    return u.messages if unit is Unit.MESSAGES else u.recipients


def _sum_between(
    conn: sa.Connection, channel_id: str, unit: Unit, low: Instant | None, high: Instant | None
) -> int:
    """What the channel's rows with low < budget_end <= high add up to (None: unbounded)."""
    where = [u.channel_id == channel_id]
    if low is not None:
        where.append(u.budget_end > low)
    if high is not None:
        where.append(u.budget_end <= high)
    query = sa.select(sa.func.coalesce(sa.func.sum(_amount(unit)), 0)).where(*where)
    return int(conn.execute(query).scalar_one())


class BudgetLedger:
    """One channel's transactions against its budgets."""

    def __init__(self, db: Database, channel_id: str, budgets: Sequence[Budget]) -> None:
        self._db = db
        self.channel_id = channel_id
        self.budgets = tuple(budgets)
        self.window = longest_window(budgets)
        self._keys = sorted({(float(b.per_seconds), b.unit) for b in budgets})

    def take(self, now: Instant, recipients: int) -> tuple[int | None, Instant | None]:
        """Start a transaction now if every budget allows it: returns (its ledger id, None).
        Otherwise records nothing, marks the channel as waiting and returns (None, when).

        One database transaction, serialised per channel (SQLite's write lock; a row lock on
        PostgreSQL). Raises NotFound when the channel is gone."""
        with self._db.write() as conn:
            self._lock(conn)
            windows = self._windows(conn, now)
            held = self._held(windows)
            if all(
                h + need(b, recipients) <= b.count for b, h in zip(self.budgets, held, strict=True)
            ):
                seq = conn.execute(
                    channel_usage.insert().values(
                        channel_id=self.channel_id,
                        at=now,
                        messages=1,
                        recipients=recipients,
                        budget_end=now + STALE_AFTER,
                    )
                ).inserted_primary_key
                for window in windows.values():
                    if now + STALE_AFTER > window.cursor:
                        window.held += 1 if window.unit is Unit.MESSAGES else recipients
                self._save(conn, windows.values())
                self._purge(conn, now, windows)
                return int((seq or (0,))[0]), None
            self._save(conn, windows.values())
            wait = max(self._next_fit(conn, now, recipients, held), now + _LOOK_AGAIN)
            conn.execute(
                channels.update()
                .where(channels.c.id == self.channel_id)
                .values(budget_wait_until=wait)
            )
            return None, wait

    def finish(self, ended: Sequence[tuple[int, Instant]]) -> None:
        """Record when transactions ended (one database transaction, under the channel's
        lock: the running sums move with each row's budget_end)."""
        if not ended:
            return
        with self._db.write() as conn:
            self._lock(conn)
            stored = self._stored(conn)
            for seq, at in ended:
                row = conn.execute(
                    sa.select(u.budget_end, u.messages, u.recipients).where(u.seq == seq)
                ).first()
                if row is None:
                    continue  # purged long ago
                conn.execute(
                    channel_usage.update().where(u.seq == seq).values(ended_at=at, budget_end=at)
                )
                for window in stored.values():
                    delta = int(at > window.cursor) - int(row.budget_end > window.cursor)
                    amount = row.messages if window.unit is Unit.MESSAGES else row.recipients
                    window.held += delta * amount
            self._save(conn, stored.values())

    def allowance(self, now: Instant) -> int | None:
        """How many more transactions the message budgets let start now (None: no limit)."""
        with self._db.read() as conn:
            held = self._held(self._windows(conn, now))
        counts = [
            b.count - h for b, h in zip(self.budgets, held, strict=True) if b.unit is Unit.MESSAGES
        ]
        return max(min(counts), 0) if counts else None

    def log(self, now: Instant) -> UseLog:
        """The transactions that count at `now`, by end time (in flight: now)."""
        with self._db.read() as conn:
            return self._log(conn, now, now - self.window, None)

    def _lock(self, conn: sa.Connection) -> None:
        query = sa.select(channels.c.id).where(channels.c.id == self.channel_id)
        if conn.execute(query.with_for_update()).first() is None:
            raise NotFound(f"no channel {self.channel_id!r}")

    def _stored(self, conn: sa.Connection) -> dict[tuple[float, Unit], _Window]:
        rows = conn.execute(
            sa.select(w.per_seconds, w.unit, w.cursor, w.held).where(
                w.channel_id == self.channel_id
            )
        )
        return {
            (float(per), Unit(unit)): _Window(float(per), Unit(unit), cursor, int(held), True)
            for per, unit, cursor, held in rows
        }

    def _windows(self, conn: sa.Connection, now: Instant) -> dict[tuple[float, Unit], _Window]:
        """Each budget's window with its cursor moved to `now - per` (a window not yet stored
        is added up once, in full)."""
        stored = self._stored(conn)
        windows = {key: stored[key] for key in self._keys if key in stored}
        for per, unit in self._keys:
            target = now - per
            window = windows.get((per, unit))
            if window is None:
                held = _sum_between(conn, self.channel_id, unit, target, None)
                windows[(per, unit)] = _Window(per, unit, target, held, False)
            elif target > window.cursor:
                window.held -= _sum_between(conn, self.channel_id, unit, window.cursor, target)
                window.cursor = target
            elif target < window.cursor:  # a clock that went back (another host's, a test's)
                window.held += _sum_between(conn, self.channel_id, unit, target, window.cursor)
                window.cursor = target
        return windows

    def _held(self, windows: dict[tuple[float, Unit], _Window]) -> list[int]:
        return [windows[(float(b.per_seconds), b.unit)].held for b in self.budgets]

    def _save(self, conn: sa.Connection, windows: Iterable[_Window]) -> None:
        for window in windows:
            key = {"channel_id": self.channel_id, "per_seconds": window.per, "unit": window.unit}
            values = {"cursor": window.cursor, "held": window.held}
            if window.stored:
                conn.execute(
                    budget_windows.update()
                    .where(
                        w.channel_id == self.channel_id,
                        w.per_seconds == window.per,
                        w.unit == window.unit.value,
                    )
                    .values(**values)
                )
            else:
                conn.execute(budget_windows.insert().values(**key, **values))
                window.stored = True

    def _next_fit(
        self, conn: sa.Connection, now: Instant, recipients: int, held: list[int]
    ) -> Instant:
        """When a transaction with this many recipients fits every budget (no new starts
        assumed): for each budget over, when enough of its window's oldest rows age out.
        Reads only those rows (each carries at least one message and one recipient)."""
        latest = now
        for budget, h in zip(self.budgets, held, strict=True):
            excess = h + need(budget, recipients) - budget.count
            if excess > 0:
                oldest = self._log(conn, now, now - budget.per_seconds, excess)
                latest = max(latest, oldest.free_at(budget, now, excess))
        return latest

    def _log(self, conn: sa.Connection, now: Instant, after: Instant, limit: int | None) -> UseLog:
        """The rows with budget_end > `after`, oldest end first (up to `limit`), each at the
        time it counts to: its end, or now while in flight (its stale time once past)."""
        end = sa.case((sa.and_(u.ended_at.is_(None), u.budget_end > now), now), else_=u.budget_end)
        query = (
            sa.select(end, u.messages, u.recipients)
            .where(u.channel_id == self.channel_id, u.budget_end > after)
            .order_by(u.budget_end, u.seq)
            .limit(limit)
        )
        return UseLog(Use(float(at), int(m), int(r)) for at, m, r in conn.execute(query))

    def _purge(
        self, conn: sa.Connection, now: Instant, windows: dict[tuple[float, Unit], _Window]
    ) -> None:
        """Forget rows no window counts any more (they lie below every cursor), and the
        windows of budgets the channel no longer has (their sums would go stale)."""
        conn.execute(
            budget_windows.delete().where(
                w.channel_id == self.channel_id,
                sa.tuple_(w.per_seconds, w.unit).not_in(
                    [(per, unit.value) for per, unit in windows]
                ),
            )
        )
        conn.execute(
            channel_usage.delete().where(
                u.channel_id == self.channel_id,
                u.budget_end < now - self.window - _PURGE_SLACK,
            )
        )


class BudgetStore:
    """Budget use per channel."""

    _db: Database

    def budget_ledger(self, channel_id: str, budgets: Sequence[Budget]) -> BudgetLedger:
        """The ledger for the channel's budgets."""
        return BudgetLedger(self._db, channel_id, budgets)
