"""What waits in the outbox and how much of each channel's budgets is used now: the counts
per channel and state, each budgeted channel's ledger as it counts at `now`, and a channel's
last 24 hours of sending, hour by hour; and why one message waits (`mailvia send --wait`).
Read by the pages (banners, Activity, a channel's page), `mailvia queue`, `send --wait` and
the metrics gauges. Reads only."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol

from mailvia.domain.channel import Budget, Channel
from mailvia.domain.clock import Instant
from mailvia.domain.errors import NotFound
from mailvia.domain.message import State
from mailvia.domain.shaping import UseLog, next_fit
from mailvia.domain.waiting import ALIVE_WITHIN, Waiting, why_waiting
from mailvia.outbox.ports import Ledger, WorkerView
from mailvia.outbox.records import HourOfUse, MessageView

Counts = dict[str, dict[State, int]]  # channel id -> state -> messages
HOUR = 3600.0


class BacklogStore(Protocol):
    """What reading the backlog needs from the store."""

    def queue_counts(self, org_id: str | None = None) -> Counts: ...
    def list_channels(self, org_id: str | None = None) -> list[Channel]: ...
    def get_channel(self, channel_id: str) -> Channel: ...
    def budget_ledger(self, channel_id: str, budgets: Sequence[Budget]) -> Ledger: ...
    def hours_of_use(self, channel_id: str, *, until: float, hours: int) -> list[HourOfUse]: ...
    def list_workers(self) -> list[WorkerView]: ...


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

    def delivering(self, now: Instant) -> bool:
        """Whether a dispatcher (serve's, or a worker) has beaten lately."""
        return any(w.beat_at >= now - ALIVE_WITHIN for w in self._store.list_workers())

    def channels_of(self, messages: Sequence[MessageView]) -> dict[str, Channel]:
        """The channels (by id) `messages` went or wait on, that are still there: a reply's
        hint is in its channel's words (its kind, its scope), as the channel's own
        `state_hint` is. One read of channels per organization among them (a page of the
        API's list is one organization's), and one of each other (the shared pool's row,
        which is the operator's organization's)."""
        wanted = {m.channel_id for m in messages}
        found = {
            c.id: c
            for org_id in sorted({m.organization_id for m in messages})
            for c in self._store.list_channels(org_id)
            if c.id in wanted
        }
        for channel_id in sorted(wanted - found.keys()):
            with suppress(NotFound):  # removed since
                found[channel_id] = self._store.get_channel(channel_id)
        return found

    def waiting(self, message: MessageView, now: Instant) -> Waiting | None:
        """Why this message has not left yet, and whether anything will move it without
        someone acting (None: it is finished)."""
        if message.state.terminal:
            return None
        channel = self.channels_of([message]).get(message.channel_id)
        log = self.use(channel, now) if channel is not None else None
        free_at = None
        if channel is not None and log is not None:
            free_at = next_fit(channel.budgets, log, now, len(message.recipients) or 1)
        replies = [r for r in message.recipients if r.reply is not None and not r.state.terminal]
        last = max(replies, key=lambda r: r.updated_at).reply if replies else None
        return why_waiting(
            message.state,
            channel=channel,
            last_reply=last,
            next_attempt_at=message.next_attempt_at,
            budget_free_at=free_at,
            delivering=self.delivering(now),
            now=now,
        )
