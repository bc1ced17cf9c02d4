"""The memory store's shaping ledger: each budgeted channel's transactions, with the same
rules as store/budgets.py. A transaction counts against a window from its start until
`per_seconds` after its end; one in flight counts as happening now (one left open is taken
to have ended STALE_AFTER seconds after it started).

Ended transactions are kept in end order with running totals, so what a window holds and
when enough of it ages out are binary searches, not a walk over a day of history."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailvia.domain.channel import Budget, Unit
from mailvia.domain.clock import Instant
from mailvia.domain.errors import NotFound
from mailvia.domain.message import State
from mailvia.domain.shaping import EPSILON, Use, UseLog, longest_window, need
from mailvia.store.memory.data import Data, locked

STALE_AFTER = 3600.0
_LOOK_AGAIN = 0.05  # seconds: in-flight transactions end soon; look again then
_PURGE_SLACK = 3600.0
_PURGE_EVERY = 1024  # ends between purges of forgotten rows


@dataclass
class Usage:
    """One channel's transactions: ended ones by end time (with running totals of messages
    and recipients), and those in flight."""

    ends: list[tuple[Instant, int]] = field(default_factory=list)  # (end, id)
    recipients: dict[int, int] = field(default_factory=dict)  # id -> recipients
    totals: dict[Unit, list[int]] = field(
        default_factory=lambda: {Unit.MESSAGES: [0], Unit.RECIPIENTS: [0]}
    )
    open: dict[int, tuple[Instant, int]] = field(default_factory=dict)  # id -> (start, rcpts)
    next_id: int = 0
    ended: int = 0

    def end(self, seq: int, at: Instant, recipients: int) -> None:
        i = bisect_right(self.ends, (at, seq))
        self.ends.insert(i, (at, seq))
        self.recipients[seq] = recipients
        self._total_from(i)

    def forget(self, seq: int) -> None:
        """Drop a transaction, open or ended, as if never taken (`give_back`)."""
        if self.open.pop(seq, None) is not None or seq not in self.recipients:
            return
        i = next(i for i, (_, ended) in enumerate(self.ends) if ended == seq)
        del self.ends[i]
        del self.recipients[seq]
        self._total_from(i)

    def _total_from(self, i: int) -> None:
        for unit, totals in self.totals.items():
            del totals[i + 1 :]
            for _, seq in self.ends[i:]:
                totals.append(totals[-1] + (1 if unit is Unit.MESSAGES else self.recipients[seq]))

    def purge(self, before: Instant) -> None:
        cut = bisect_left(self.ends, (before, -1))
        for _, seq in self.ends[:cut]:
            del self.recipients[seq]
        del self.ends[:cut]
        self._total_from(0)

    def in_flight(self, now: Instant) -> list[Use]:
        """Open transactions at the time they count to: now, or their stale end once past."""
        return [Use(min(now, at + STALE_AFTER), 1, r) for at, r in self.open.values()]

    def held(self, budget: Budget, now: Instant) -> int:
        after = now - budget.per_seconds
        totals = self.totals[budget.unit]
        lo = bisect_right(self.ends, (after, float("inf")))
        flying = [u for u in self.in_flight(now) if u.at > after]
        amount = (lambda u: 1) if budget.unit is Unit.MESSAGES else (lambda u: u.recipients)
        return totals[-1] - totals[lo] + sum(amount(u) for u in flying)

    def free_at(self, budget: Budget, now: Instant, excess: int) -> Instant:
        """When enough of the window's oldest transactions have aged out to free `excess`."""
        after = now - budget.per_seconds
        totals = self.totals[budget.unit]
        lo = bisect_right(self.ends, (after, float("inf")))
        i = bisect_left(totals, totals[lo] + excess, lo=lo + 1) - 1
        if i < len(self.ends):
            return self.ends[i][0] + budget.per_seconds + EPSILON
        return now + budget.per_seconds + EPSILON  # only transactions in flight free it

    def log(self, now: Instant, after: Instant) -> UseLog:
        lo = bisect_right(self.ends, (after, float("inf")))
        ended = [Use(at, 1, self.recipients[seq]) for at, seq in self.ends[lo:]]
        return UseLog([*ended, *(u for u in self.in_flight(now) if u.at > after)])


class MemoryLedger:
    """One channel's budget use, shared by every ledger of the channel the store hands out."""

    def __init__(self, data: Data, usage: Usage, channel_id: str, budgets: Sequence[Budget]):
        self._d = data
        self._usage = usage
        self.channel_id = channel_id
        self.budgets = tuple(budgets)
        self.window = longest_window(budgets)

    @locked
    def take(
        self, now: Instant, recipients: int, *, start: tuple[int, str] | None = None
    ) -> tuple[int | None, Instant | None]:
        if self.channel_id not in self._d.channels:
            raise NotFound(f"no channel {self.channel_id!r}")
        usage, over, latest = self._usage, False, now
        for budget in self.budgets:
            excess = usage.held(budget, now) + need(budget, recipients) - budget.count
            if excess > 0:
                over, latest = True, max(latest, usage.free_at(budget, now, excess))
        if over:
            wait = max(latest, now + _LOOK_AGAIN)
            self._d.budget_wait[self.channel_id] = wait
            return None, wait
        if start is not None:
            msg = self._d.messages.get(start[0])
            if msg is None or msg.lease_owner != start[1] or msg.state is not State.SENDING:
                return None, None
            msg.started_at = now
        usage.next_id += 1
        usage.open[usage.next_id] = (now, recipients)
        return usage.next_id, None

    @locked
    def finish(self, ended: Sequence[tuple[int, Instant]]) -> None:
        usage = self._usage
        for seq, at in ended:
            known = usage.open.pop(seq, None)
            if known is not None:
                usage.end(seq, at, known[1])
                usage.ended += 1
        if usage.ended % _PURGE_EVERY == 0 and ended:
            usage.purge(ended[-1][1] - self.window - _PURGE_SLACK)

    @locked
    def give_back(self, taken: Sequence[int]) -> None:
        for seq in taken:
            self._usage.forget(seq)

    @locked
    def allowance(self, now: Instant) -> int | None:
        counts = [
            b.count - self._usage.held(b, now) for b in self.budgets if b.unit is Unit.MESSAGES
        ]
        return max(min(counts), 0) if counts else None

    @locked
    def log(self, now: Instant) -> UseLog:
        return self._usage.log(now, now - self.window)


class MemoryBudgets:
    _d: Data
    _usage: dict[str, Usage]

    def budget_ledger(self, channel_id: str, budgets: Sequence[Budget]) -> MemoryLedger:
        return MemoryLedger(
            self._d, self._usage.setdefault(channel_id, Usage()), channel_id, budgets
        )
