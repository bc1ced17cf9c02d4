"""What waits in the outbox and how much of each channel's budgets is used now: the counts
per channel and state, each budgeted channel's ledger as it counts at `now`, and a channel's
last 24 hours of sending, hour by hour. Read by the pages (banners, Activity, a channel's
page), `mailvia queue` and the metrics gauges. Reads only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mailvia.domain.channel import Budget, Channel
from mailvia.domain.clock import Instant
from mailvia.domain.message import State
from mailvia.domain.shaping import UseLog
from mailvia.outbox.ports import Ledger
from mailvia.outbox.records import HourOfUse

Counts = dict[str, dict[State, int]]  # channel id -> state -> messages
HOUR = 3600.0


class BacklogStore(Protocol):
    """What reading the backlog needs from the store."""

    def queue_counts(self, org_id: str | None = None) -> Counts: ...
    def list_channels(self, org_id: str | None = None) -> list[Channel]: ...
    def budget_ledger(self, channel_id: str, budgets: Sequence[Budget]) -> Ledger: ...
    def hours_of_use(self, channel_id: str, *, until: float, hours: int) -> list[HourOfUse]: ...


@dataclass(frozen=True)
class Snapshot:
    """The backlog of one organization (or of all), read at one time."""

    at: Instant
    counts: Counts
    channels: list[Channel]
    use: dict[str, UseLog]  # channel id -> its budget use at `at` (budgeted channels only)


class Backlog:
    """Queue counts and budget use."""

    def __init__(self, store: BacklogStore) -> None:
        self._store = store

    def counts(self, organization_id: str | None) -> Counts:
        """Messages per channel and state, of one organization (None: of all)."""
        return self._store.queue_counts(organization_id)

    def use(self, channel: Channel, now: Instant) -> UseLog | None:
        """The transactions that count against the channel's budgets at `now` (None: it has
        no budgets)."""
        if not channel.budgets:
            return None
        return self._store.budget_ledger(channel.id, channel.budgets).log(now)

    def last_day(self, channel: Channel, now: Instant) -> list[HourOfUse]:
        """The channel's sending in each of the 24 clock hours up to the one `now` is in
        (UTC hours; the last one so far), oldest first."""
        until = (int(now // HOUR) + 1) * HOUR
        return self._store.hours_of_use(channel.id, until=until, hours=24)

    def snapshot(self, organization_id: str | None, now: Instant) -> Snapshot:
        """Counts, channels and budget use of one organization (None: of all)."""
        counts = self.counts(organization_id)
        channels = self._store.list_channels(organization_id)
        use = {c.id: log for c in channels if (log := self.use(c, now)) is not None}
        return Snapshot(now, counts, channels, use)
