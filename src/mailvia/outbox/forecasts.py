"""A batch's forecast: when each message should leave, given its channel's budgets and the
backlog ahead of it (ahead.py).

Side effects: none (reads the budgets' use through the store, the backlog through
`QueuedAhead`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mailvia.domain.channel import Budget, Channel
from mailvia.domain.clock import Instant, to_iso
from mailvia.domain.message import State
from mailvia.domain.presets import PRESETS
from mailvia.domain.shaping import UseLog, forecast
from mailvia.outbox.ahead import QueuedAhead
from mailvia.outbox.ports import Ledger, NewMessage


class BudgetReads(Protocol):
    """What a forecast reads from the store: a channel's budgets' use."""

    def budget_ledger(self, channel_id: str, budgets: Sequence[Budget]) -> Ledger: ...


@dataclass(frozen=True)
class Forecast:
    """One new message's forecast: the messages ahead of it, when it should leave (None: it
    is not queued), and the warning that its batch is bulk on a mailbox (None: it is not)."""

    ahead: int
    at: Instant | None
    bulk: str | None = None


class Forecasts:
    """When each message of a batch should leave, given its channel's budgets and backlog;
    a batch that would take more than a day on a mailbox channel gets a warning. The
    backlog ahead comes from `queued`: counted in the store at most a second ago (ahead.py)."""

    def __init__(self, store: BudgetReads, *, now: Instant, queued: QueuedAhead) -> None:
        self.store = store
        self.now = now
        self.queued = queued
        self.ahead: dict[str, int] = {}
        self.logs: dict[str, UseLog] = {}
        self.when: dict[str, tuple[int, Instant | None]] = {}  # message id -> (ahead, at)
        self.last: dict[str, Instant] = {}  # channel id -> the batch's last expected time

    def plan_all(self, planned: Sequence[tuple[NewMessage, Channel]]) -> None:
        for message, channel in planned:
            self.plan(channel, message)

    def plan(self, channel: Channel, message: NewMessage) -> None:
        if channel.id not in self.ahead:
            self.ahead[channel.id] = self.queued.waiting(channel.id)
            if channel.budgets:
                ledger = self.store.budget_ledger(channel.id, channel.budgets)
                self.logs[channel.id] = ledger.log(self.now)
        ahead = self.ahead[channel.id]
        self.ahead[channel.id] = ahead + 1
        at: Instant | None = None
        if message.state is State.QUEUED:
            log = self.logs.get(channel.id)
            recipients = len(message.envelope.rcpt_to)
            at = (
                forecast(channel.budgets, log, self.now, ahead, recipients)
                if log is not None
                else self.now
            )
            self.last[channel.id] = max(self.last.get(channel.id, at), at)
        self.when[message.id] = (ahead, at)

    def of(self, message: NewMessage, channel: Channel) -> Forecast | None:
        """The planned message's forecast (None: it was not planned)."""
        if message.id not in self.when:
            return None
        ahead, at = self.when[message.id]
        preset = PRESETS.get(channel.preset or "")
        last = self.last.get(channel.id)
        bulk = None
        if preset is not None and preset.mailbox and last is not None and last - self.now >= 86_400:
            bulk = (
                f"{preset.title} mailboxes are not for bulk mail: at {channel.name}'s limits "
                f"this batch finishes around {to_iso(last)}"
            )
        return Forecast(ahead, at, bulk)
