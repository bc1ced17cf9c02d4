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
from mailvia.store.workers import mark_started

u, w = channel_usage.c, budget_windows.c
STALE_AFTER = 3600.0
_PURGE_SLACK = 3600.0  # keep an hour beyond the longest window, then forget
_PURGE_EVERY = 64  # starts between purges of forgotten rows
_LOOK_AGAIN = 0.05  # seconds: in-flight transactions end soon; look again then
_FAR = 1e18  # later than any budget_end
_b = sa.bindparam

# Built once: a start runs these many times a second, and building a statement costs more
# than running it.
_LOCK = sa.select(channels.c.id).where(channels.c.id == _b("c")).with_for_update()
_WINDOWS = sa.select(w.per_seconds, w.unit, w.cursor, w.held).where(w.channel_id == _b("c"))
_START = channel_usage.insert()
_END = (
    channel_usage.update()
    .where(u.seq == _b("s"))
    .values(ended_at=_b("b_end"), budget_end=_b("b_end"))
)
_FORGET = channel_usage.delete().where(u.seq == _b("s"))
_ROW = sa.select(u.at, u.ended_at, u.budget_end, u.messages, u.recipients).where(u.seq == _b("s"))
# A row whose budget_end moved across a window's cursor enters or leaves its sum. Relative
# updates: a start, under the channel's lock, may be moving the cursor at the same time.
_CROSS = (
    budget_windows.update()
    .where(w.channel_id == _b("c"), w.cursor >= _b("lo"), w.cursor < _b("hi"))
    .values(held=w.held + sa.case((w.unit == Unit.MESSAGES.value, _b("dm")), else_=_b("dr")))
)
_MOVE = (
    budget_windows.update()
    .where(w.channel_id == _b("c"), w.per_seconds == _b("p"), w.unit == _b("u"))
    .values(cursor=_b("cur"), held=w.held + _b("dh"))
)
_ADD = budget_windows.insert()
_PURGE = channel_usage.delete().where(u.channel_id == _b("c"), u.budget_end < _b("before"))


def _between(unit: Unit, index: int) -> Any:
    """What the channel's rows with lo_i < budget_end <= hi_i add up to."""
    amount = u.messages if unit is Unit.MESSAGES else u.recipients
    return (
        sa.select(sa.func.coalesce(sa.func.sum(amount), 0))
        .where(
            u.channel_id == _b("c"),
            u.budget_end > _b(f"lo{index}"),
            u.budget_end <= _b(f"hi{index}"),
        )
        .scalar_subquery()
    )


@dataclass
class _Window:
    """One window's running sum: `held` is what rows with budget_end > `cursor` add up to."""

    per: float
    unit: Unit
    cursor: Instant
    held: int
    stored: bool  # a budget_windows row exists
    delta: int = 0  # added to the stored `held` by this transaction


class BudgetLedger:
    """One channel's transactions against its budgets."""

    def __init__(self, db: Database, channel_id: str, budgets: Sequence[Budget]) -> None:
        self._db = db
        self.channel_id = channel_id
        self.budgets = tuple(budgets)
        self.window = longest_window(budgets)
        self._keys = sorted({(float(b.per_seconds), b.unit) for b in budgets})
        self._sums = sa.select(*(_between(unit, i) for i, (_, unit) in enumerate(self._keys)))
        self._mine: dict[int, tuple[Instant, int]] = {}  # started here: id -> (at, recipients)
        self._starts = 0
        self._others: set[tuple[float, Unit]] = set()  # stored windows of former budgets

    def take(
        self, now: Instant, recipients: int, *, start: tuple[int, str] | None = None
    ) -> tuple[int | None, Instant | None]:
        """Start a transaction now if every budget allows it: returns (its ledger id, None).
        Otherwise records nothing, marks the channel as waiting and returns (None, when).
        With `start` (message seq, worker) the message is marked started in the same
        transaction (see store/workers.py); when the worker no longer holds its lease,
        nothing is recorded and (None, None) comes back.

        One database transaction, serialised per channel (SQLite's write lock; a row lock on
        PostgreSQL). Raises NotFound when the channel is gone."""
        with self._db.write() as conn:
            self._lock(conn)
            windows = self._windows(conn, now)
            held = self._held(windows)
            if not all(
                h + need(b, recipients) <= b.count for b, h in zip(self.budgets, held, strict=True)
            ):
                return None, self._refuse(conn, windows, now, recipients, held)
            if start is not None and not mark_started(conn, [start[0]], start[1], now):
                return None, None
            return self._record_use(conn, windows, now, recipients), None

    def _refuse(
        self,
        conn: sa.Connection,
        windows: dict[tuple[float, Unit], _Window],
        now: Instant,
        recipients: int,
        held: list[int],
    ) -> Instant:
        """Mark the channel as waiting until a transaction of `recipients` fits; when."""
        self._save(conn, windows.values())
        wait = max(self._next_fit(conn, now, recipients, held), now + _LOOK_AGAIN)
        conn.execute(
            channels.update().where(channels.c.id == self.channel_id).values(budget_wait_until=wait)
        )
        return wait

    def _record_use(
        self,
        conn: sa.Connection,
        windows: dict[tuple[float, Unit], _Window],
        now: Instant,
        recipients: int,
    ) -> int:
        """Record a transaction started now in the ledger and the windows; its ledger id."""
        row = {
            "channel_id": self.channel_id,
            "at": now,
            "messages": 1,
            "recipients": recipients,
            "budget_end": now + STALE_AFTER,
        }
        seq = int((conn.execute(_START, row).inserted_primary_key or (0,))[0])
        for window in windows.values():
            if now + STALE_AFTER > window.cursor:
                amount = 1 if window.unit is Unit.MESSAGES else recipients
                window.held += amount
                window.delta += amount
        self._save(conn, windows.values())
        self._mine[seq] = (now, recipients)
        self._starts += 1
        if self._starts % _PURGE_EVERY == 1:
            self._purge(conn, now, windows)
        return seq

    def finish(self, ended: Sequence[tuple[int, Instant]]) -> None:
        """Record when transactions ended (one database transaction). Each row's budget_end
        becomes its end; a window whose cursor it crossed gains or loses it."""
        if not ended:
            return
        with self._db.write() as conn:
            for seq, at in ended:
                known = self._mine.pop(seq, None)
                if known is not None:
                    old, messages, recipients = known[0] + STALE_AFTER, 1, known[1]
                else:
                    row = conn.execute(_ROW, {"s": seq}).first()
                    if row is None:
                        continue  # forgotten long ago
                    old, messages, recipients = row.budget_end, row.messages, row.recipients
                conn.execute(_END, {"s": seq, "b_end": at})
                if at == old:
                    continue
                sign = -1 if at < old else 1
                conn.execute(
                    _CROSS,
                    {
                        "c": self.channel_id,
                        "lo": min(at, old),
                        "hi": max(at, old),
                        "dm": sign * messages,
                        "dr": sign * recipients,
                    },
                )

    def give_back(self, taken: Sequence[int]) -> None:
        """Forget transactions that never reached the provider (no credentials could be had
        to sign in with): they count against no window any more, as if never taken (one
        database transaction). Each window that held a row loses it."""
        if not taken:
            return
        with self._db.write() as conn:
            for seq in taken:
                self._mine.pop(seq, None)
                row = conn.execute(_ROW, {"s": seq}).first()
                if row is None:
                    continue  # forgotten long ago
                conn.execute(_FORGET, {"s": seq})
                conn.execute(
                    _CROSS,
                    {
                        "c": self.channel_id,
                        "lo": -_FAR,
                        "hi": row.budget_end,  # a window holds the rows ending after its cursor
                        "dm": -row.messages,
                        "dr": -row.recipients,
                    },
                )

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
        if conn.execute(_LOCK, {"c": self.channel_id}).first() is None:
            raise NotFound(f"no channel {self.channel_id!r}")

    def _windows(self, conn: sa.Connection, now: Instant) -> dict[tuple[float, Unit], _Window]:
        """Each budget's window with its cursor moved to `now - per`: the rows whose
        budget_end lies between the old cursor and the new one leave it (or, when the clock
        went back, enter it). A window not yet stored is added up once, in full."""
        stored = {
            (float(per), Unit(unit)): _Window(float(per), Unit(unit), cursor, int(held), True)
            for per, unit, cursor, held in conn.execute(_WINDOWS, {"c": self.channel_id})
        }
        self._others = set(stored) - set(self._keys)
        params: dict[str, Any] = {"c": self.channel_id}
        for i, (per, unit) in enumerate(self._keys):
            window = stored.get((per, unit))
            target = now - per
            if window is None:
                params[f"lo{i}"], params[f"hi{i}"] = target, _FAR
            else:
                params[f"lo{i}"], params[f"hi{i}"] = sorted((window.cursor, target))
        sums = conn.execute(self._sums, params).one()
        windows = {}
        for i, (per, unit) in enumerate(self._keys):
            target, amount = now - per, int(sums[i])
            window = stored.get((per, unit))
            if window is None:
                window = _Window(per, unit, target, amount, False)
            else:
                change = -amount if target >= window.cursor else amount
                window.held += change
                window.delta += change
                window.cursor = target
            windows[(per, unit)] = window
        return windows

    def _held(self, windows: dict[tuple[float, Unit], _Window]) -> list[int]:
        return [windows[(float(b.per_seconds), b.unit)].held for b in self.budgets]

    def _save(self, conn: sa.Connection, windows: Iterable[_Window]) -> None:
        moves = [
            {
                "c": self.channel_id,
                "p": window.per,
                "u": window.unit.value,
                "cur": window.cursor,
                "dh": window.delta,
            }
            for window in windows
            if window.stored
        ]
        if moves:
            conn.execute(_MOVE, moves)
        for window in windows:
            if not window.stored:
                conn.execute(
                    _ADD,
                    {
                        "channel_id": self.channel_id,
                        "per_seconds": window.per,
                        "unit": window.unit.value,
                        "cursor": window.cursor,
                        "held": window.held,
                    },
                )
                window.stored = True
            window.delta = 0

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
        conn.execute(_PURGE, {"c": self.channel_id, "before": now - self.window - _PURGE_SLACK})
        for per, unit in self._others:
            conn.execute(
                budget_windows.delete().where(
                    w.channel_id == self.channel_id, w.per_seconds == per, w.unit == unit.value
                )
            )


class BudgetStore:
    """Budget use per channel."""

    _db: Database

    def budget_ledger(self, channel_id: str, budgets: Sequence[Budget]) -> BudgetLedger:
        """The ledger for the channel's budgets."""
        return BudgetLedger(self._db, channel_id, budgets)
