"""Each channel's concurrency in this process (domain/concurrency.py), and the gate that holds
a channel run's connections to it.

The concurrency is kept per dispatcher process, not in the store: a worker that got a 421
sends through fewer connections, and another worker process of the same channel lowers its
own when its sessions get 421s too. The connection slots (outbox/slots.py) still cap every
worker together at `max_connections`. Each change is reported as the gauge
`mailvia_channel_concurrency{channel}` (ingress/metrics.py).

Side effects: the Metrics gauge; asyncio events (the gate).
"""

from __future__ import annotations

import asyncio
import logging

from mailvia.domain.channel import Channel
from mailvia.domain.clock import Instant
from mailvia.domain.concurrency import Concurrency
from mailvia.domain.delivery import Settlement
from mailvia.outbox.webhook_ports import Metrics

log = logging.getLogger(__name__)


class ConcurrencyBook:
    """The concurrency of each channel this dispatcher has delivered on."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._by_channel: dict[str, Concurrency] = {}

    def allowed(self, channel: Channel, now: Instant) -> int:
        """How many of the channel's connections may be in a transaction at once now."""
        return self._set(channel, self._get(channel).at(channel.max_connections, now))

    def cohort(self, channel: Channel) -> int:
        """The cohort a transaction of the channel starting now belongs to (a 421 to it
        lowers the concurrency only if no cut came in between: domain/concurrency.py)."""
        return self._get(channel).cohort

    def settled(
        self, channel: Channel, settlement: Settlement, now: Instant, *, started_in: int
    ) -> int:
        """The concurrency after one transaction's settlement (lowered by a generic 421 to
        a transaction of the current cohort, grown by a clean delivery); returns it."""
        before = self._get(channel)
        after = before.after(settlement, channel.max_connections, now, started_in=started_in)
        if after is before:
            return after.allowed  # unchanged (full width): nothing to store or report
        if after.allowed < before.allowed:
            log.warning(
                "channel %s: the server is closing sessions (421); %d connections at once",
                channel.id,
                after.allowed,
            )
        return self._set(channel, after)

    def _get(self, channel: Channel) -> Concurrency:
        return self._by_channel.get(channel.id) or Concurrency(channel.max_connections)

    def _set(self, channel: Channel, concurrency: Concurrency) -> int:
        old = self._by_channel.get(channel.id)
        self._by_channel[channel.id] = concurrency
        if old is None or old.allowed != concurrency.allowed:
            self.metrics.concurrency(channel.id, concurrency.allowed)
        return concurrency.allowed


class Gate:
    """Lets no more than `limit` connections of a run into a transaction at once; the limit
    moves with the channel's concurrency, and waiters go in as room frees up."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 1)
        self.inside = 0
        self.waiting = 0
        self._moved = asyncio.Event()

    async def enter(self) -> None:
        """Wait for room, then go in (callers try `enter_now` first: no coroutine when there
        is room, the common case)."""
        while self.inside >= self.limit:
            moved = self._moved
            self.waiting += 1
            try:
                await moved.wait()
            finally:
                self.waiting -= 1
        self.inside += 1

    def enter_now(self) -> bool:
        """Go in if there is room now; False: call `enter`."""
        if self.inside >= self.limit:
            return False
        self.inside += 1
        return True

    def leave(self) -> None:
        self.inside -= 1
        self._signal()

    def resize(self, limit: int) -> None:
        self.limit = max(limit, 1)
        self._signal()

    def _signal(self) -> None:
        if not self.waiting:
            return  # the common case, at full width: nobody to wake
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()
