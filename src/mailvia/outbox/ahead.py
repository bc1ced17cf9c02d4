"""How many of a channel's messages wait ahead of a new one, for the forecast (a receipt's
`queued_ahead`, and when the channel's budgets let the message leave).

Counting them in the store is a COUNT over the channel's queued, deferred and sending
messages: its cost grows with the backlog (0.45 ms per 10,000 waiting on SQLite), and every
submit paid it. `QueuedAhead` keeps each channel's count as the store gave it, for at most
`fresh_for` seconds, plus the waiting messages this process committed since: a submit
counts in the store at most once a `fresh_for` per channel, whatever the backlog.

What it may miss, for at most `fresh_for` seconds: the messages other processes (another
serve, a CLI `send`) submitted, and those that left the queue (delivered, bounced, held,
cancelled) since the count; and, by the few in flight, a submit that committed while a count
was made. A forecast, not a ledger: the budgets' own use (`budget_ledger`) is still read
afresh.

Side effects: none (reads through `count`); thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from mailvia.domain.clock import Instant

FRESH_FOR = 1.0  # seconds a channel's count is used before it is counted again


@dataclass
class _Count:
    counted_at: Instant
    waiting: int  # as counted, plus what was added since


class QueuedAhead:
    """Each channel's waiting messages: counted by `count(channel_id)` at most `fresh_for`
    seconds before `now`, plus those `added` since."""

    def __init__(self, count: Callable[[str], int], *, fresh_for: float = FRESH_FOR) -> None:
        self._count = count
        self._fresh_for = fresh_for
        self._counts: dict[str, _Count] = {}
        self._lock = threading.Lock()

    def waiting(self, channel_id: str, now: Instant) -> int:
        """The channel's waiting messages at `now` (counted in the store when the last count
        is older than `fresh_for`, or from a later time than `now`)."""
        with self._lock:
            known = self._counts.get(channel_id)
            if known is not None and 0 <= now - known.counted_at < self._fresh_for:
                return known.waiting
        waiting = self._count(channel_id)  # outside the lock: other channels go on
        with self._lock:
            self._counts[channel_id] = _Count(now, waiting)
        return waiting

    def added(self, channel_id: str, count: int = 1) -> None:
        """`count` more messages of the channel wait (committed by this process)."""
        with self._lock:
            known = self._counts.get(channel_id)
            if known is not None:
                known.waiting += count
