"""Webhook dispatch: queue each webhook's new events, then POST its due deliveries, at most
`in_flight` at a time per webhook, each webhook on its own so a slow receiver delays no other.

A delivery that fails (no 2xx answer, a timeout, a refused address) is retried 10 s later,
then 20 s, 40 s ... at most an hour apart, and given up 24 h after it was queued; each
delivery has its own schedule, so one event that keeps failing never holds up later ones.

Both take one clock (`time.time` in service, a `SteppingClock` in tests): `run_once(clock)`
is one pass, each webhook delivering until none of its deliveries is due, so tests drive
retries without sleeping; `run_forever(clock, stop)` polls every second until `stop` is set.

Side effects: queues, leases and settles deliveries in the store; POSTs through the sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from mailvia.domain.clock import Clock, Instant
from mailvia.domain.errors import MailviaError, StoreUnavailable
from mailvia.outbox.metrics import NO_METRICS
from mailvia.outbox.outage import Outage
from mailvia.outbox.ports import Vault
from mailvia.outbox.webhook_ports import (
    Metrics,
    WebhookAttempt,
    WebhookJob,
    WebhookResult,
    WebhookSender,
    WebhookStore,
)
from mailvia.outbox.webhooks import next_attempt, payload

log = logging.getLogger(__name__)

IDLE_POLL = 1.0
IN_FLIGHT = 4  # concurrent POSTs per webhook (per process)
LEASE_SECONDS = 120.0  # longer than a POST's timeout
QUEUE_LIMIT = 500  # events queued per webhook per pass
BACKLOG = 1000  # new events wait while a webhook has this many pending deliveries


class WebhookDispatcher:
    """Delivers events to webhooks. One per `serve` process; several may share PostgreSQL."""

    def __init__(
        self,
        store: WebhookStore,
        vault: Vault,
        sender: WebhookSender,
        *,
        metrics: Metrics = NO_METRICS,
        in_flight: int = IN_FLIGHT,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.store = store
        self.vault = vault
        self.sender = sender
        self.metrics = metrics
        self.in_flight = in_flight
        self.lease_seconds = lease_seconds
        self.stopping = False

    async def run_once(self, clock: Clock) -> int:
        """Queue new events, then deliver each webhook's due deliveries, webhooks side by
        side. Returns the number of attempts."""
        due = await asyncio.to_thread(self._queue_and_find_due, clock())
        counts = await asyncio.gather(*(self._drain(wid, clock) for wid in due))
        return sum(counts)

    async def run_forever(self, clock: Clock, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then let the POSTs in flight finish."""
        running: dict[str, asyncio.Task[int]] = {}
        outage = Outage("webhook delivery", rand=random.random)
        while not stop.is_set():
            wait = IDLE_POLL
            try:
                await self._start_due(clock, running)
                outage.worked(clock())
            except StoreUnavailable as exc:
                wait = outage.failed(clock(), exc)  # logged once an outage
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    [stopped, *running.values()],
                    timeout=wait,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                stopped.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stopped
            _reap(running)
        self.stopping = True
        if running:
            await asyncio.wait(running.values())

    async def _start_due(self, clock: Clock, running: dict[str, asyncio.Task[int]]) -> None:
        """Queue new events and start each due webhook's drain. The poll's store calls run
        in a thread: on the event loop they held up every connection of the process (the
        submission port's sessions too) for their round trips, once a second."""
        due = await asyncio.to_thread(self._queue_and_find_due, clock())
        for webhook_id in due:
            if webhook_id not in running:
                running[webhook_id] = asyncio.create_task(self._drain(webhook_id, clock))

    def _queue_and_find_due(self, now: Instant) -> list[str]:
        self.store.queue_webhook_events(now, limit=QUEUE_LIMIT, backlog=BACKLOG)
        return self.store.webhooks_due(now)

    async def _drain(self, webhook_id: str, clock: Clock) -> int:
        """Deliver the webhook's due deliveries, `in_flight` at a time, until none is due."""
        attempts = 0
        while not self.stopping:
            at = clock()
            jobs = await asyncio.to_thread(  # the store, off the event loop (as the poll)
                self.store.claim_webhook_deliveries,
                webhook_id,
                now=at,
                limit=self.in_flight,
                lease_until=at + self.lease_seconds,
            )
            if not jobs:
                break
            done = await asyncio.gather(*(self._deliver(job, at, clock) for job in jobs))
            await asyncio.to_thread(self.store.record_webhook_attempts, done)
            attempts += len(done)
        return attempts

    async def _deliver(self, job: WebhookJob, now: Instant, clock: Clock) -> WebhookAttempt:
        try:
            secret = self.vault.open(job.sealed_secret).decode()
        except MailviaError as exc:
            log.error("webhook %s: its signing secret does not open: %s", job.webhook_id, exc)
            result = WebhookResult(None, "mailvia cannot open the signing secret", 0.0)
        else:
            result = await self.sender.send(
                job.url,
                secret=secret,
                message_id=job.event.id,
                timestamp=now,
                body=payload(job.event),
            )
        return self._settle(job, result, clock())

    def _settle(self, job: WebhookJob, result: WebhookResult, at: Instant) -> WebhookAttempt:
        attempt = job.attempts + 1
        retry_at = None if result.ok else next_attempt(attempt, job.created_at, at)
        outcome = "delivered" if result.ok else ("retry" if retry_at is not None else "failed")
        self.metrics.webhook_attempt(outcome, result.duration)
        if outcome == "failed":
            log.warning(
                "webhook %s: gave up on event %s after %d attempts",
                job.webhook_id,
                job.event.id,
                attempt,
            )
        return WebhookAttempt(
            delivery_id=job.delivery_id,
            webhook_id=job.webhook_id,
            event_id=job.event.id,
            event_type=job.event.type,
            attempt=attempt,
            at=at,
            status=result.status,
            error=result.error,
            duration=result.duration,
            outcome=outcome,
            next_attempt_at=retry_at,
        )


def _reap(running: dict[str, asyncio.Task[int]]) -> None:
    for webhook_id, task in list(running.items()):
        if task.done():
            del running[webhook_id]
            exc = None if task.cancelled() else task.exception()
            if exc is not None and not isinstance(exc, StoreUnavailable):  # logged by the loop
                level = logging.WARNING if isinstance(exc, MailviaError) else logging.ERROR
                log.log(level, "webhook %s: delivery failed: %r", webhook_id, exc)
