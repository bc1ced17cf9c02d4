"""Time as the core sees it: float seconds since the epoch, always passed in, never read.

A component that reads the time more than once takes a `Clock` (`time.time` in service);
tests give it a `SteppingClock`, which they set and move on by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Instant = float
Clock = Callable[[], Instant]


class SteppingClock:
    """A clock that reads `now`, moving on by `step` seconds after each reading (0: it stands
    still until set or advanced)."""

    def __init__(self, now: Instant, *, step: float = 0.0) -> None:
        self.now = now
        self.step = step

    def __call__(self) -> Instant:
        at = self.now
        self.now += self.step
        return at

    def at(self, now: Instant) -> SteppingClock:
        """Set the time; returns the clock itself, so that `run_once(clock.at(t))` reads well."""
        self.now = now
        return self

    def advance(self, seconds: float) -> None:
        self.now += seconds


def to_iso(at: Instant | None) -> str | None:
    """Render an instant as an ISO 8601 UTC string (None stays None)."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
