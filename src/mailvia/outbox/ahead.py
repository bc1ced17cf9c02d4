"""How many of a channel's messages wait ahead of a new one, for the forecast (a receipt's
`queued_ahead`, and when the channel's budgets let the message leave).

Counting them in the store is a COUNT over the channel's queued, deferred and sending
messages: its cost grows with the backlog (0.45 ms per 10,000 waiting on SQLite), and every
submit paid it. `QueuedAhead` keeps each channel's count as the store gave it, for at most
`fresh_for` seconds, plus the waiting messages this process committed since: a submit
counts in the store at most once a `fresh_for` per channel, whatever the backlog.

Freshness is measured on the class's own monotonic clock when a count is asked for, not on a
request's `now` (taken when the request started): requests that reach the count out of
order, or a batch that composed for long, neither count again nor use an older count. One
thread counts a stale channel at a time; the others use the previous count meanwhile (or
wait for the first one). A channel not asked for `forget_after` seconds is forgotten (a
removed channel's entry does not stay).

What it may miss, for at most `fresh_for` seconds: the messages other processes (another
serve, a CLI `send`) submitted, and those that left the queue (delivered, bounced, held,
cancelled) since the count; and, by the few in flight, a submit that committed while a count
was made. A forecast, not a ledger: the budgets' own use (`budget_ledger`) is still read
afresh.

Side effects: none (reads through `count`); thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

FRESH_FOR = 1.0  # seconds a channel's count is used before it is counted again
FORGET_AFTER = 600.0  # seconds a channel not asked for keeps its entry


@dataclass
class _Count:
    asked_at: float  # monotonic
    counted_at: float = float("-inf")  # monotonic, when the count began
    waiting: int | None = None  # as counted, plus what was added since; None: never counted
    counting: bool = False  # a thread is counting it now


class QueuedAhead:
    """Each channel's waiting messages: counted by `count(channel_id)` at most `fresh_for`
    seconds before (on `clock`, monotonic), plus those `added` since."""

    def __init__(
        self,
        count: Callable[[str], int],
        *,
        fresh_for: float = FRESH_FOR,
        forget_after: float = FORGET_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._count = count
        self._fresh_for = fresh_for
        self._forget_after = forget_after
        self._clock = clock
        self._counts: dict[str, _Count] = {}
        self._changed = threading.Condition()

    def waiting(self, channel_id: str) -> int:
        """The channel's waiting messages: counted in the store when the last count is older
        than `fresh_for` (by one thread: the others take the previous count meanwhile, or
        wait for the first). Raises what `count` raises, to the thread that counted."""
        with self._changed:
            while True:
                now = self._clock()
                known = self._counts.get(channel_id)
                if known is None:
                    known = self._counts[channel_id] = _Count(asked_at=now)
                known.asked_at = now
                if known.waiting is not None and (
                    known.counting or now - known.counted_at < self._fresh_for
                ):
                    return known.waiting
                if not known.counting:
                    break
                self._changed.wait()  # a first count is under way: its answer is ours
            known.counting = True
        try:
            waiting = self._count(channel_id)  # outside the lock: other channels go on
        except BaseException:
            with self._changed:
                known.counting = False
                self._changed.notify_all()
            raise
        with self._changed:
            known.counting, known.counted_at, known.waiting = False, now, waiting
            self._forget(now)
            self._changed.notify_all()
        return waiting

    def added(self, channel_id: str, count: int = 1) -> None:
        """`count` more messages of the channel wait (committed by this process)."""
        with self._changed:
            known = self._counts.get(channel_id)
            if known is not None and known.waiting is not None:
                known.waiting += count

    def _forget(self, now: float) -> None:
        """Drop the channels not asked for `forget_after` seconds (called under the lock, once
        per count: at most once a `fresh_for` per channel)."""
        old = [
            channel_id
            for channel_id, known in self._counts.items()
            if not known.counting and now - known.asked_at >= self._forget_after
        ]
        for channel_id in old:
            del self._counts[channel_id]
