"""SqlStore: the Store port on SQLAlchemy Core, for SQLite (one process) and PostgreSQL
(several workers), assembled from one part per concern."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager

from mailvia.domain.cursors import CursorSeal
from mailvia.store.budgets import BudgetStore
from mailvia.store.channels import ChannelStore
from mailvia.store.engine import Database
from mailvia.store.events import EventStore
from mailvia.store.from_reads import FromReadStore
from mailvia.store.give_backs import LostClaims
from mailvia.store.mending import MendingStore
from mailvia.store.message_reads import MessageReads
from mailvia.store.oauth import OAuthStore
from mailvia.store.outbox import OutboxStore
from mailvia.store.sessions import WebSessionStore
from mailvia.store.settle import SettleStore
from mailvia.store.slots import SlotStore
from mailvia.store.tenancy import TenancyStore
from mailvia.store.webhooks import WebhookStore
from mailvia.store.workers import WorkerStore


class SqlStore(
    TenancyStore,
    FromReadStore,
    ChannelStore,
    OutboxStore,
    SettleStore,
    MendingStore,
    MessageReads,
    EventStore,
    BudgetStore,
    WebhookStore,
    OAuthStore,
    WebSessionStore,
    WorkerStore,
    SlotStore,
):
    """The outbox and everything it refers to. Every public method is one transaction and
    raises domain errors only (NotFound, Conflict, InvalidInput, StoreUnavailable)."""

    def __init__(self, url: str, *, cursor_key: bytes | None = None) -> None:
        self._db = Database(url)
        self._cursors = CursorSeal(cursor_key or os.urandom(32))
        self._lost_claims = LostClaims()

    def use_cursor_key(self, key: bytes) -> None:
        """Seal list cursors with `key` (derived from the master key, so that every process
        agrees); until then a random key of this store's own."""
        self._cursors = CursorSeal(key)

    def snapshot(self) -> AbstractContextManager[None]:
        """The reads of this thread inside it share one read transaction (Database.snapshot)."""
        return self._db.snapshot()

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._db.dialect

    def close(self) -> None:
        """Close the pooled connections (the store can still be used; it reconnects)."""
        self._db.dispose()

    def __repr__(self) -> str:
        return f"SqlStore({self._db.url!r})"
