"""Dispatch: find channels with due mail and run each one's delivery on its own, so a slow,
throttled or backlogged channel never delays another.

Both take one clock (`time.time` in service, a `SteppingClock` in tests) and read every
time from it. `run_once(clock)` is one pass: each due channel's run claims, delivers and
claims more (refills) as in service, until its mail, its budget or its turn runs out; tests
drive it without sleeping. `run_forever(clock, stop)` keeps one task per busy channel until
`stop` is set, and beats (outbox/liveness.py) so that its claims last while it runs and come
back soon after it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from mailvia.domain.channel import ChannelState
from mailvia.domain.clock import Clock, Instant
from mailvia.domain.errors import MailviaError, NotFound, StoreUnavailable
from mailvia.outbox.channel_run import ChannelRun
from mailvia.outbox.concurrency import ConcurrencyBook
from mailvia.outbox.dispatch_ports import DispatchOptions, DispatchStore, Notifier, no_notice
from mailvia.outbox.liveness import Liveness
from mailvia.outbox.metrics import NO_METRICS
from mailvia.outbox.outage import Outage
from mailvia.outbox.ports import CredentialSource, Transport, WorkerRegistry
from mailvia.outbox.run_context import RunContext, new_event
from mailvia.outbox.slots import Connections, LocalConnections, SharedConnections, SlotStore
from mailvia.outbox.webhook_ports import Metrics

log = logging.getLogger(__name__)

IDLE_POLL = 1.0  # seconds between looks for mail submitted by other processes
# While channel runs are going on, a wake-up looks for other due channels at most this
# often after the previous look (the runs claim their own channel's new mail themselves).
LOOK_GAP = 0.05  # seconds
# run_forever looks for mail past its give-up time at most this often: each look is a write
# transaction, and passes come many times a second while mail trickles in.
EXPIRE_EVERY = 10.0  # seconds
EXPIRE_BATCH = 1000  # messages of each state expired per transaction (memory stays flat)


class Dispatcher:
    """Delivers due mail. One per process; several may share a PostgreSQL store."""

    def __init__(
        self,
        store: DispatchStore,
        transport: Transport,
        *,
        credentials: CredentialSource,
        options: DispatchOptions,
        workers: WorkerRegistry,
        rand: Callable[[], float] = random.random,
        notify_disconnected: Notifier = no_notice,
        metrics: Metrics = NO_METRICS,
        slots: SlotStore | None = None,
    ) -> None:
        self.store = store
        self.transport = transport
        self.credentials = credentials
        self.options = options
        self.rand = rand
        self.notify_disconnected = notify_disconnected
        self.metrics = metrics
        self.stopping = False
        self.shutdown_at: float | None = None  # monotonic: in-flight work gives up then
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._expired_at: Instant | None = None
        self.outage = Outage("delivery", rand=rand)
        # max_connections across every worker (slots in the store), or per process
        self.connections: Connections = (
            LocalConnections()
            if slots is None
            else SharedConnections(
                slots,
                worker=options.worker,
                lease_seconds=options.lease_seconds,
                close_idle=transport.forget,
                rand=rand,
            )
        )
        self.concurrency = ConcurrencyBook(metrics)  # lowered by a 421, per process
        self.liveness = Liveness(
            workers,
            worker=options.worker,
            lease_seconds=options.lease_seconds,
            host=options.host,
            pid=options.pid,
        )

    def past_shutdown(self) -> bool:
        """Whether a stop's bound for in-flight work has passed."""
        return self.shutdown_at is not None and time.monotonic() >= self.shutdown_at

    def wake(self) -> None:
        """Look for work now (called after a submission in this process, from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def run_once(self, clock: Clock) -> int:
        """One pass: expire, then one run per channel due at the clock's time, all channels
        side by side (each claims more as it goes, as in service). Returns the number of
        attempts."""
        now = clock()
        while True:  # a full batch: there may be more
            expired = self.store.expire_due(now, self.options.worker, limit=EXPIRE_BATCH)
            if len(expired) < EXPIRE_BATCH:
                break
        due = self.store.channels_due(now)
        counts = await asyncio.gather(*(self._drain(cid, clock) for cid in due))
        return sum(counts)

    async def run_forever(self, clock: Clock, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then let in-flight transactions finish."""
        self._loop = asyncio.get_running_loop()
        running: dict[str, asyncio.Task[int]] = {}
        started = False
        while not stop.is_set():
            self._wake.clear()
            wait = IDLE_POLL
            try:
                if not started:
                    self.liveness.start(clock())
                    started = True
                if self.outage.down:  # beat, a write: reads alone succeed on a full disk
                    self.liveness.beaten_at = None
                await self.liveness.beat_aside(clock())
                wait = await self._start_due(clock, running)
                self.outage.worked(clock())
            except StoreUnavailable as exc:
                wait = self.outage.failed(clock(), exc)  # logged once an outage
            looked = time.monotonic()
            await _wait_any(self._wake, stop, running.values(), wait)
            _reap(running)
            if running and self._wake.is_set() and not stop.is_set():
                # Woken by a submission while runs go on: they claim the mail of their own
                # channels as it comes; the look for other channels is made at most every
                # LOOK_GAP (serve wakes this loop after every group commit).
                gap = looked + LOOK_GAP - time.monotonic()
                if gap > 0:
                    await _wait_any(asyncio.Event(), stop, running.values(), gap)
                    _reap(running)
        self.stopping = True
        await self._finish(running, clock)

    async def _finish(self, running: dict[str, asyncio.Task[int]], clock: Clock) -> None:
        """Let in-flight transactions finish (beating meanwhile) for up to `shutdown_seconds`;
        each channel run gives back the claims it did not start. Past the bound the runs are
        cancelled: a message cut off in its transaction keeps its lease (marked started) until
        the lease runs out or this worker starts again, and whoever takes it flags it
        possible_duplicate. Then sign off."""
        self.shutdown_at = time.monotonic() + self.options.shutdown_seconds
        while running and not self.past_shutdown():
            left = max(self.shutdown_at - time.monotonic(), 0.0)
            await asyncio.wait(running.values(), timeout=min(self.liveness.every, left))
            _reap(running)
            with contextlib.suppress(StoreUnavailable):
                await self.liveness.beat_aside(clock())
        if running:
            log.warning(
                "stopping: %d channel runs cut off after %.0f s",
                len(running),
                self.options.shutdown_seconds,
            )
            for task in running.values():
                task.cancel()
            await asyncio.wait(running.values())
            _reap(running)
        await self.connections.aclose(give_back=False)  # the stop drops them all at once
        with contextlib.suppress(StoreUnavailable):
            self.liveness.stop()

    async def _start_due(self, clock: Clock, running: dict[str, asyncio.Task[int]]) -> float:
        now = clock()
        expire = self._expired_at is None or not 0 <= now - self._expired_at < EXPIRE_EVERY
        # In a thread: on PostgreSQL each look is round trips that would otherwise hold up
        # every connection of the runs in progress (serve wakes this loop after every commit).
        expired, due, next_due = await asyncio.to_thread(self._look, now, expire=expire)
        if expire:
            # A full batch: look again on the next pass rather than hold the loop now.
            self._expired_at = None if expired >= EXPIRE_BATCH else now
        for channel_id in due:
            if channel_id not in running:
                run = self._drain(channel_id, clock, in_service=True)
                running[channel_id] = asyncio.create_task(run)
        if next_due is None or next_due <= now:
            return IDLE_POLL  # nothing waiting, or all of it is being worked on
        return min(next_due - now, IDLE_POLL)

    def _look(self, now: Instant, *, expire: bool) -> tuple[int, list[str], Instant | None]:
        """Expire what is past its give-up time (when `expire`), then the channels due and the
        next due time, read in one transaction. Returns how many expired and those two."""
        expired = (
            len(self.store.expire_due(now, self.options.worker, limit=EXPIRE_BATCH))
            if expire
            else 0
        )
        with self.store.snapshot():
            return expired, self.store.channels_due(now), self.store.next_due_at()

    async def _drain(self, channel_id: str, clock: Clock, *, in_service: bool = False) -> int:
        try:
            channel = await asyncio.to_thread(self.store.get_channel, channel_id)
        except NotFound:
            return 0
        if channel.state is not ChannelState.ACTIVE:
            return 0
        return await ChannelRun(self.context(clock, in_service=in_service), channel).go()

    def context(self, clock: Clock, *, in_service: bool = False) -> RunContext:
        """What a channel run works with (read afresh each run: tests swap the transport)."""
        return RunContext(
            store=self.store,
            transport=self.transport,
            credentials=self.credentials,
            clock=clock,
            options=self.options,
            liveness=self.liveness,
            stopping=lambda: self.stopping,
            rand=self.rand,
            metrics=self.metrics,
            notify_disconnected=self.notify_disconnected,
            connections=self.connections,
            concurrency=self.concurrency,
            outage=self.outage,
            past_shutdown=self.past_shutdown,
            in_service=in_service,
        )


def _reap(running: dict[str, asyncio.Task[int]]) -> None:
    for channel_id, task in list(running.items()):
        if task.done():
            del running[channel_id]
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                if isinstance(exc, StoreUnavailable):
                    continue  # the outage is logged once, by the loop (outbox/outage.py)
                level = logging.WARNING if isinstance(exc, MailviaError) else logging.ERROR
                log.log(level, "delivery on channel %s failed: %r", channel_id, exc)


async def _wait_any(
    wake: asyncio.Event,
    stop: asyncio.Event,
    tasks: Iterable[asyncio.Task[int]],
    timeout: float,
) -> None:
    waiters: list[asyncio.Future[bool]] = [
        asyncio.ensure_future(wake.wait()),
        asyncio.ensure_future(stop.wait()),
    ]
    watched: list[asyncio.Future[Any]] = [*waiters, *tasks]
    try:
        await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter


__all__ = ["DispatchOptions", "Dispatcher", "Notifier", "new_event"]
