"""MemoryStore: the outbox in memory, for the logic tests (routing, submitting, dispatching,
shaping, retries) that need no database: the same contract as the SQL store for tenancy,
channels, the outbox, its events, the workers' heartbeats and the budget ledger
(tests/integration/test_store_contract.py runs on both), none of its durability.

Everything lives in plain objects under one lock; each method is one transaction. Sessions,
webhooks and OAuth tokens are the SQL store's alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from mailvia.domain.channel import Provider
from mailvia.domain.cursors import CursorSeal
from mailvia.outbox.oauth.ports import SealedApp, StoredTokens
from mailvia.store.memory.budgets import MemoryBudgets, Usage
from mailvia.store.memory.data import Data
from mailvia.store.memory.mending import MemoryMending
from mailvia.store.memory.outbox import MemoryOutbox
from mailvia.store.memory.reads import MemoryReads, MemoryWorkers
from mailvia.store.memory.tenancy import MemoryChannels, MemoryTenancy


class MemoryStore(
    MemoryTenancy,
    MemoryChannels,
    MemoryOutbox,
    MemoryMending,
    MemoryReads,
    MemoryWorkers,
    MemoryBudgets,
):
    """The outbox and what it refers to, in memory (one process, gone when it ends)."""

    def __init__(self, *, cursor_key: bytes | None = None) -> None:
        self._d = Data()
        self._usage: dict[str, Usage] = {}
        self._cursors = CursorSeal(cursor_key or os.urandom(32))

    def use_cursor_key(self, key: bytes) -> None:
        self._cursors = CursorSeal(key)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads that see one state (the SQL store's one read transaction): the store's lock,
        held for the block."""
        with self._d.lock:
            yield

    def oauth_token_list(self, org_id: str) -> list[StoredTokens]:
        """No OAuth mailboxes here (their tokens are the SQL store's alone)."""
        return []

    def oauth_app(self, org_id: str, provider: Provider) -> SealedApp | None:
        """No organization's OAuth app here (the SQL store's alone)."""
        return None

    def close(self) -> None:
        """Nothing to close (the SQL store's counterpart disposes of its connections)."""

    def __repr__(self) -> str:
        return "MemoryStore()"


def _implements(store: MemoryStore) -> tuple[object, ...]:
    """The ports the memory store stands in for, checked by mypy (never called)."""
    from mailvia.outbox.channels import ChannelStore
    from mailvia.outbox.dispatch_ports import DispatchStore
    from mailvia.outbox.messages import MessageStore
    from mailvia.outbox.notices import NoticeStore
    from mailvia.outbox.ports import WorkerRegistry
    from mailvia.outbox.submit import SubmitStore
    from mailvia.outbox.tenancy import TenancyStore
    from mailvia.outbox.tokens import ApiTokenStore

    dispatch: tuple[DispatchStore, WorkerRegistry, NoticeStore] = (store, store, store)
    intake: tuple[SubmitStore, MessageStore] = (store, store)
    tenancy: tuple[TenancyStore, ChannelStore, ApiTokenStore] = (store, store, store)
    return (*dispatch, *intake, *tenancy)


__all__ = ["MemoryStore"]
