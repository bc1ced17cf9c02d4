"""The webhook dispatcher's once-a-second poll (queue new events, find the due webhooks)
and each webhook's drain (claim its due deliveries, record the attempts) call the store in
a thread, never on the event loop: there their round trips held up every connection of
`serve`, the submission port's sessions too."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from mailvia.domain.errors import MailviaError
from mailvia.outbox.records import Event
from mailvia.outbox.webhook_dispatch import WebhookDispatcher
from mailvia.outbox.webhook_ports import WebhookAttempt, WebhookJob

pytestmark = pytest.mark.timeout(30)


class PollingStore:
    """Records the thread of each store call; webhook `wh_1` is due once, with one delivery
    (whose secret does not open: no POST)."""

    def __init__(self, stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        self.threads: list[tuple[str, threading.Thread]] = []
        self.stop, self.loop = stop, loop

    def queue_webhook_events(self, now: float, *, limit: int, backlog: int) -> int:
        self.threads.append(("queue", threading.current_thread()))
        return 0

    def webhooks_due(self, now: float) -> list[str]:
        self.threads.append(("due", threading.current_thread()))
        return ["wh_1"]

    def claim_webhook_deliveries(
        self, webhook_id: str, *, now: float, limit: int, lease_until: float
    ) -> list[WebhookJob]:
        self.threads.append(("claim", threading.current_thread()))
        if any(what == "record" for what, _ in self.threads):
            self.loop.call_soon_threadsafe(self.stop.set)
            return []
        event = Event("evt_1", "org_1", "message.sent", now, {})
        return [WebhookJob("dlv_1", webhook_id, "https://hook.test/", b"x", event, 0, now)]

    def record_webhook_attempts(self, attempts: list[WebhookAttempt]) -> None:
        self.threads.append(("record", threading.current_thread()))


class ClosedVault:
    def open(self, sealed: bytes) -> bytes:
        raise MailviaError("sealed with another key")


async def test_the_poll_and_the_drain_call_the_store_off_the_event_loop() -> None:
    stop = asyncio.Event()
    store = PollingStore(stop, asyncio.get_running_loop())
    vault = ClosedVault()
    dispatcher = WebhookDispatcher(store, vault=vault, sender=Any)  # type: ignore[arg-type]
    await asyncio.wait_for(dispatcher.run_forever(time.time, stop), timeout=10)
    assert [what for what, _ in store.threads][:5] == ["queue", "due", "claim", "record", "claim"]
    assert all(thread is not threading.current_thread() for _, thread in store.threads)


async def test_run_once_calls_the_store_off_the_event_loop() -> None:
    store = PollingStore(asyncio.Event(), asyncio.get_running_loop())
    vault = ClosedVault()
    dispatcher = WebhookDispatcher(store, vault=vault, sender=Any)  # type: ignore[arg-type]
    assert await asyncio.wait_for(dispatcher.run_once(time.time), timeout=10) == 1
    assert [what for what, _ in store.threads] == ["queue", "due", "claim", "record", "claim"]
    assert all(thread is not threading.current_thread() for _, thread in store.threads)
