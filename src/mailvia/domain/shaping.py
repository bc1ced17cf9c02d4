"""Shaping: budgets of `count per window` over messages or recipients, given the channel's
recent transactions and the time. Limits delay mail; they never drop it.

The promise is at the receiving server: no window of `per_seconds` sees more than `count`.
A transaction counts from its start, so a slow one cannot push a window over.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailvia.domain.channel import Budget, Unit
from mailvia.domain.clock import Instant

# A start leaves the window `per_seconds` plus this much after it happened, so that even a
# closed window of `per_seconds` never holds both it and the start that takes its place.
EPSILON = 0.001


@dataclass(frozen=True)
class Use:
    """One transaction's start: when, and how many messages (1) and recipients it carried."""

    at: Instant
    messages: int
    recipients: int


class UseLog:
    """Transaction starts in time order, with running totals so that what a window holds is
    two binary searches, not a walk over a day of history."""

    def __init__(self, uses: Iterable[Use] = ()) -> None:
        self.times: list[Instant] = []
        self._totals: dict[Unit, list[int]] = {}
        self._rebuild(uses)

    def _rebuild(self, uses: Iterable[Use]) -> None:
        self.times = []
        self._totals = {Unit.MESSAGES: [0], Unit.RECIPIENTS: [0]}
        for use in sorted(uses, key=lambda x: x.at):
            self.add(use)

    def __len__(self) -> int:
        return len(self.times)

    def add(self, use: Use) -> None:
        """Append a start (out-of-order starts are placed in order)."""
        if self.times and use.at < self.times[-1]:
            self._rebuild([*self.uses(), use])
            return
        self.times.append(use.at)
        for unit, amount in ((Unit.MESSAGES, use.messages), (Unit.RECIPIENTS, use.recipients)):
            self._totals[unit].append(self._totals[unit][-1] + amount)

    def uses(self) -> list[Use]:
        m, r = self._totals[Unit.MESSAGES], self._totals[Unit.RECIPIENTS]
        return [Use(at, m[i + 1] - m[i], r[i + 1] - r[i]) for i, at in enumerate(self.times)]

    def held(self, budget: Budget, now: Instant) -> int:
        """What the budget's window ending at `now` holds."""
        lo = bisect_right(self.times, now - budget.per_seconds)
        hi = bisect_right(self.times, now)
        totals = self._totals[budget.unit]
        return totals[hi] - totals[lo]

    def free_at(self, budget: Budget, now: Instant, excess: int) -> Instant:
        """When enough of the window's oldest starts have aged out to free `excess` units."""
        lo = bisect_right(self.times, now - budget.per_seconds)
        totals = self._totals[budget.unit]
        i = bisect_left(totals, totals[lo] + excess, lo=lo + 1) - 1
        i = min(i, len(self.times) - 1)
        return self.times[i] + budget.per_seconds + EPSILON


def longest_window(budgets: Sequence[Budget]) -> float:
    return max((b.per_seconds for b in budgets), default=0.0)


def need(budget: Budget, recipients: int) -> int:
    """What a transaction takes from a budget. One larger than the whole budget still goes,
    alone in its window."""
    return min(1 if budget.unit is Unit.MESSAGES else recipients, budget.count)


def fits(budgets: Sequence[Budget], log: UseLog, now: Instant, recipients: int) -> bool:
    """Whether a transaction with this many recipients may start at `now`."""
    return all(log.held(b, now) + need(b, recipients) <= b.count for b in budgets)


def next_fit(budgets: Sequence[Budget], log: UseLog, now: Instant, recipients: int) -> Instant:
    """The earliest time >= now at which such a transaction fits every budget.

    No new starts are assumed, so each budget only frees up as time passes and the answer
    is the latest of the per-budget times."""
    latest = now
    for budget in budgets:
        excess = log.held(budget, now) + need(budget, recipients) - budget.count
        if excess > 0:
            latest = max(latest, log.free_at(budget, now, excess))
    return latest


def allowance(budgets: Sequence[Budget], log: UseLog, now: Instant) -> int | None:
    """How many more transactions the message budgets let start now (None: no limit)."""
    counts = [b.count - log.held(b, now) for b in budgets if b.unit is Unit.MESSAGES]
    return max(min(counts), 0) if counts else None


def forecast(
    budgets: Sequence[Budget], log: UseLog, now: Instant, ahead: int, recipients: int = 1
) -> Instant:
    """About when a transaction queued behind `ahead` others (each with `recipients`) would
    start if the channel sends as fast as its budgets allow: each budget lets `count` units
    through per window, and what the current window holds counts against it."""
    latest = now
    for budget in budgets:
        units = log.held(budget, now) + (ahead + 1) * need(budget, recipients)
        windows = (units - 1) // budget.count
        if windows > 0:
            latest = max(latest, now + windows * budget.per_seconds)
    return latest


def window_words(per_seconds: float) -> str:
    """`this minute`, `this hour`, `in 24 h`, or `in N s`."""
    named = {60.0: "this minute", 3600.0: "this hour", 86_400.0: "in 24 h"}
    return named.get(float(per_seconds), f"in {per_seconds:g} s")


def describe_use(budgets: Sequence[Budget], log: UseLog, now: Instant) -> str:
    """`12/30 this minute, 3,200/10,000 in 24 h` (recipient budgets say so)."""
    parts = []
    for budget in budgets:
        unit = " recipients" if budget.unit is Unit.RECIPIENTS else ""
        held = log.held(budget, now)
        parts.append(f"{held:,}/{budget.count:,}{unit} {window_words(budget.per_seconds)}")
    return ", ".join(parts)
