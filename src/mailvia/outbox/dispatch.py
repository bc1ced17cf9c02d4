"""Dispatch: claim due mail per channel, hand it to the transport, settle what came back.

Side effects: claims (leases) and settles messages in the store in batches; disconnects a
channel and holds its mail on `channel_broken`; pauses a channel on `throttled`; records
events. `run_once(now)` is one pass at a given time, so tests drive it without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailvia.domain.channel import Channel, ChannelState
from mailvia.domain.clock import Instant
from mailvia.domain.delivery import ChannelEffect, RecipientSettlement, Settlement, settle
from mailvia.domain.errors import NotFound, StoreUnavailable
from mailvia.domain.ids import make_id
from mailvia.domain.message import Envelope, State, message_state
from mailvia.outbox.ports import AttemptRecord, Claim, Credentials, Event, Store, Transport

log = logging.getLogger(__name__)

THROTTLE_FIRST = 60.0  # seconds; doubles per consecutive throttle
THROTTLE_MAX = 1800.0
THROTTLE_DAILY = 3600.0  # until the budget ledger knows when the 24 h window frees

_EVENT_FOR = {
    State.DELIVERED: "message.delivered",
    State.BOUNCED: "message.bounced",
    State.EXPIRED: "message.expired",
    State.DEFERRED: "message.deferred",
    State.HELD: "message.held",
}


@dataclass(frozen=True)
class DispatchOptions:
    worker: str
    lease_seconds: float = 1800.0
    batch: int = 200
    flush_every: int = 100


def new_event(org_id: str, type_: str, now: Instant, data: dict[str, object]) -> Event:
    return Event(make_id("evt", now, os.urandom(10)), org_id, type_, now, data)


class Dispatcher:
    """Delivers due mail. One per process; several may share a PostgreSQL store."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        *,
        credentials: Callable[[Channel], Credentials | None],
        options: DispatchOptions,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.transport = transport
        self.credentials = credentials
        self.options = options
        self.rand = rand
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for work now (called after a submission in this process)."""
        self._wake.set()

    async def run_once(self, now: Instant) -> int:
        """One pass at time `now`: expire, then one batch per due channel. Returns attempts."""
        expired = self.store.expire_due(now, self.options.worker)
        if expired:
            log.info("expired %d messages", len(expired))
        due = self.store.channels_due(now)
        counts = await asyncio.gather(*(self._drain(cid, now, None) for cid in due))
        return sum(counts)

    async def run_forever(self, clock: Callable[[], Instant], stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; channels keep claiming while they have due mail."""
        while not stop.is_set():
            self._wake.clear()
            try:
                now = clock()
                self.store.expire_due(now, self.options.worker)
                due = self.store.channels_due(now)
                await asyncio.gather(*(self._drain(cid, now, clock) for cid in due))
                next_due = self.store.next_due_at()
            except StoreUnavailable as exc:
                log.warning("store unavailable, retrying: %s", exc)
                next_due = None
            wait = 1.0 if next_due is None else min(max(next_due - clock(), 0.0), 1.0)
            if wait > 0 and not due:
                await _wait_any(self._wake, stop, wait)

    async def _drain(
        self, channel_id: str, now: Instant, clock: Callable[[], Instant] | None
    ) -> int:
        try:
            channel = self.store.get_channel(channel_id)
        except NotFound:
            return 0
        if channel.state is not ChannelState.ACTIVE:
            return 0
        run = ChannelRun(self, channel, self.credentials(channel), clock)
        return await run.go(now)


async def _wait_any(wake: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class ChannelRun:
    """Delivers one channel's claimed mail over up to `max_connections` connections."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        channel: Channel,
        credentials: Credentials | None,
        clock: Callable[[], Instant] | None,
    ) -> None:
        self.d = dispatcher
        self.channel = channel
        self.credentials = credentials
        self.clock = clock  # None: a single pass at a fixed time (run_once)
        self.queue: deque[Claim] = deque()
        self.records: list[AttemptRecord] = []
        self.effect = ChannelEffect.NONE
        self.effect_reply: str | None = None
        self.attempts = 0
        self.delivered_any = False

    def now(self, fixed: Instant) -> Instant:
        return fixed if self.clock is None else self.clock()

    async def go(self, now: Instant) -> int:
        if not self._claim(now):
            return 0
        workers = min(self.channel.max_connections, len(self.queue))
        await asyncio.gather(*(self._work(now) for _ in range(workers)))
        self._flush()
        await self._apply_effect(now)
        return self.attempts

    def _claim(self, now: Instant) -> bool:
        opts = self.d.options
        claims = self.d.store.claim(
            channel_id=self.channel.id,
            now=now,
            limit=opts.batch,
            lease_until=now + opts.lease_seconds,
            worker=opts.worker,
        )
        self.queue.extend(claims)
        return bool(claims)

    async def _work(self, fixed: Instant) -> None:
        while self.queue and self.effect is ChannelEffect.NONE:
            claim = self.queue.popleft()
            if self.clock is not None and len(self.queue) < self.d.options.batch // 4:
                self._claim(self.clock())
            record = await self._attempt(claim, fixed)
            self.attempts += 1
            self.records.append(record)
            if len(self.records) >= self.d.options.flush_every:
                self._flush()

    def _flush(self) -> None:
        if self.records:
            records, self.records = self.records, []
            self.d.store.record_attempts(records)

    async def _attempt(self, claim: Claim, fixed: Instant) -> AttemptRecord:
        settlements: list[Settlement] = []
        untried: list[str] = []
        size = self.channel.max_recipients_per_message
        chunks = [claim.pending[i : i + size] for i in range(0, len(claim.pending), size)]
        for chunk in chunks:
            if self.effect is not ChannelEffect.NONE:
                untried.extend(chunk)
                continue
            result = await self.d.transport.send(
                self.channel, self.credentials, Envelope(claim.mail_from, chunk), claim.content
            )
            now = self.now(fixed)
            settlement = settle(
                result,
                pending=chunk,
                failures=claim.failures,
                policy=self.channel.retry,
                now=now,
                expires_at=claim.expires_at,
                rand=self.d.rand(),
            )
            settlements.append(settlement)
            self._note_effect(settlement)
        return self._record(claim, settlements, untried, self.now(fixed))

    def _note_effect(self, settlement: Settlement) -> None:
        if any(r.state is State.DELIVERED for r in settlement.recipients):
            self.delivered_any = True
        if settlement.channel_effect is not ChannelEffect.NONE and (
            self.effect is ChannelEffect.NONE
            or settlement.channel_effect is ChannelEffect.DISCONNECT
        ):
            self.effect = settlement.channel_effect
            self.effect_reply = str(settlement.channel_reply)

    def _record(
        self, claim: Claim, settlements: Sequence[Settlement], untried: Sequence[str], now: Instant
    ) -> AttemptRecord:
        recipients: tuple[RecipientSettlement, ...] = tuple(
            r for s in settlements for r in s.recipients
        )
        untried_state = State.HELD if self.effect is ChannelEffect.DISCONNECT else State.DEFERRED
        states = [*claim.settled, *(r.state for r in recipients)]
        states += [untried_state] * len(untried)
        state = message_state(states)
        failed = any(s.counts_as_failure for s in settlements)
        next_times = [s.next_attempt_at for s in settlements if s.next_attempt_at is not None]
        event_type = _EVENT_FOR.get(state)
        events: tuple[Event, ...] = ()
        if event_type is not None:
            data: dict[str, object] = {
                "message_id": claim.message_id,
                "state": str(state),
                "channel_id": self.channel.id,
                "recipients": [
                    {"address": r.address, "state": str(r.state), "reply": str(r.reply)}
                    for r in recipients
                ],
            }
            events = (new_event(claim.organization_id, event_type, now, data),)
        return AttemptRecord(
            claim=claim,
            worker=self.d.options.worker,
            at=now,
            stage=str(recipients[-1].stage) if recipients else "",
            recipients=recipients,
            message_state=state,
            next_attempt_at=None if state.terminal else (max(next_times) if failed else now),
            failures=claim.failures + (1 if failed else 0),
            possible_duplicate=claim.possible_duplicate
            or any(s.possible_duplicate for s in settlements),
            events=events,
        )

    async def _apply_effect(self, now: Instant) -> None:
        store, channel = self.d.store, self.channel
        leftovers = list(self.queue)
        self.queue.clear()
        if self.effect is ChannelEffect.DISCONNECT:
            store.set_channel_state(channel.id, ChannelState.DISCONNECTED, self.effect_reply, now)
            if leftovers:
                store.unclaim(leftovers, state=State.HELD, now=now)
            held = store.hold_channel(channel.id, now)
            store.add_events(
                [
                    new_event(
                        channel.organization_id,
                        "channel.disconnected",
                        now,
                        {
                            "channel_id": channel.id,
                            "reason": self.effect_reply,
                            "held": held + len(leftovers),
                        },
                    )
                ]
            )
            await self.d.transport.forget(channel.id)
            log.warning("channel %s disconnected: %s", channel.id, self.effect_reply)
            return
        if leftovers:
            store.unclaim(leftovers, state=State.QUEUED, now=now)
        if self.effect in (ChannelEffect.THROTTLE, ChannelEffect.THROTTLE_DAILY):
            level = channel.throttle_level + 1
            pause = min(THROTTLE_FIRST * 2 ** (level - 1), THROTTLE_MAX)
            if self.effect is ChannelEffect.THROTTLE_DAILY:
                pause = max(pause, THROTTLE_DAILY)
            store.set_channel_throttle(channel.id, now + pause, level)
            log.warning("channel %s throttled for %.0f s: %s", channel.id, pause, self.effect_reply)
        elif self.delivered_any and channel.throttle_level:
            store.set_channel_throttle(channel.id, None, 0)
