"""The webhook dispatcher's once-a-second poll (queue new events, find the due webhooks)
calls the store in a thread, never on the event loop: there its round trips held up every
connection of `serve`, the submission port's sessions too."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from mailvia.outbox.webhook_dispatch import WebhookDispatcher

pytestmark = pytest.mark.timeout(30)


class PollingStore:
    """Records the thread of each poll's store call; nothing is ever due."""

    def __init__(self, stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        self.threads: list[tuple[str, threading.Thread]] = []
        self.stop, self.loop = stop, loop

    def queue_webhook_events(self, now: float, *, limit: int, backlog: int) -> int:
        self.threads.append(("queue", threading.current_thread()))
        return 0

    def webhooks_due(self, now: float) -> list[str]:
        self.threads.append(("due", threading.current_thread()))
        self.loop.call_soon_threadsafe(self.stop.set)
        return []


async def test_the_poll_reads_the_store_off_the_event_loop() -> None:
    stop = asyncio.Event()
    store = PollingStore(stop, asyncio.get_running_loop())
    dispatcher = WebhookDispatcher(store, vault=Any, sender=Any)  # type: ignore[arg-type]
    await asyncio.wait_for(dispatcher.run_forever(time.time, stop), timeout=10)
    assert [what for what, _ in store.threads] == ["queue", "due"]
    assert all(thread is not threading.current_thread() for _, thread in store.threads)
