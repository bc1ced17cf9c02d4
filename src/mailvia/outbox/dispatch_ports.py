"""What the dispatch core needs from the store, and nothing more: `DispatchStore`, the
narrow port of outbox/dispatch.py and outbox/channel_run.py. The SQL store and the memory
store implement it (store/sqlstore.py, store/memory/)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from mailvia.domain.channel import Budget, Channel
from mailvia.domain.clock import Instant
from mailvia.domain.message import State
from mailvia.outbox.ports import AttemptRecord, Claim, Ledger
from mailvia.outbox.records import Event

Notifier = Callable[[Channel, str, Instant], Awaitable[None]]  # a channel, why, when


async def no_notice(channel: Channel, reason: str, now: Instant) -> None:
    """A Notifier that tells no one (tests, tools)."""
    return None


@dataclass(frozen=True)
class DispatchOptions:
    """A dispatcher's settings (docs/settings.md)."""

    worker: str
    lease_seconds: float = 30.0  # how long a claim outlives its worker's last beat
    shutdown_seconds: float = 30.0  # a stop lets transactions in flight finish this long
    batch: int = 200  # messages per claim (CLAIM_BATCH)
    flush_every: int = 100  # attempts recorded per transaction
    # Records of attempts ride in the commits of started marks (outbox/liveness.py): on
    # SQLite, where every commit queues at the one write lock, one commit for both is ahead;
    # on PostgreSQL, where records commit on a connection of their own beside the marks, it
    # was behind (docs/benchmarks.md, "Issue 15 after the seventh session's merges").
    records_with_marks: bool = True
    host: str = ""  # shown in the worker's heartbeat row
    pid: int = 0


class DispatchStore(Protocol):
    """Finding due mail, claiming it, settling it, and the channel's state as delivery
    changes it. Each method is one transaction."""

    def snapshot(self) -> AbstractContextManager[None]:
        """The reads of this thread inside it share one read transaction."""
        ...

    def expire_due(self, now: Instant, events_for: str, *, limit: int = 1000) -> list[Event]:
        """Give up on waiting and held mail past its give-up time (up to `limit` per state)."""
        ...

    def channels_due(self, now: Instant) -> list[str]:
        """Active, unthrottled channels with claimable mail."""
        ...

    def next_due_at(self) -> Instant | None:
        """When the next message of an active channel becomes claimable (None: nothing)."""
        ...

    def get_channel(self, channel_id: str) -> Channel: ...
    def budget_ledger(self, channel_id: str, budgets: Sequence[Budget]) -> Ledger: ...

    def claim(
        self, *, channel_id: str, now: Instant, limit: int, lease_until: Instant, worker: str
    ) -> list[Claim]:
        """Lease up to `limit` claimable messages, oldest due first."""
        ...

    def unclaim(self, claims: Sequence[Claim], *, state: State, now: Instant) -> None:
        """Give claims back unsent, in `state`, keeping their place in the queue."""
        ...

    def record_attempts(self, records: Sequence[AttemptRecord]) -> None: ...
    def disconnect_channel(
        self, seen: Channel, reason: str, now: Instant, *, refusal: str | None = None
    ) -> Channel | None:
        """Disconnect the channel if it is active and still in `seen`'s generation; returns
        it disconnected, or None (it is not active, or changed since)."""
        ...

    def set_channel_throttle(self, channel_id: str, until: Instant | None, level: int) -> None: ...
    def release_if_active(self, seen: Channel, now: Instant) -> int | None:
        """Queue the channel's held mail again (in its original order) only while the channel
        is active and still in `seen`'s generation, in one transaction; returns how many, or
        None (it is not active, changed since, or is gone)."""
        ...

    def hold_channel(self, channel_id: str, now: Instant) -> int:
        """Hold the channel's waiting mail; returns how many messages."""
        ...

    def add_events(self, events: Sequence[Event]) -> None: ...
