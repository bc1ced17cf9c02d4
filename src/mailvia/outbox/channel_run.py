"""One channel's share of a dispatch pass: deliver its claimed mail over up to
`max_connections` connections, within its budgets, and settle what came back.

Side effects: claims, settles and gives back messages in the store; records budget use;
disconnects, throttles or budget-waits the channel; records events.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, NoReturn

from mailvia.domain.channel import Channel, ChannelState
from mailvia.domain.clock import Instant
from mailvia.domain.delivery import (
    ChannelEffect,
    RecipientSettlement,
    Settlement,
    TransactionResult,
    settle,
)
from mailvia.domain.errors import CredentialsFailed, StoreUnavailable
from mailvia.domain.ids import make_id
from mailvia.domain.message import Envelope, State, message_state
from mailvia.domain.oauth import refused_after_renewal
from mailvia.domain.replies import Stage, credentials_rejected
from mailvia.outbox.order import Turns
from mailvia.outbox.ports import AttemptRecord, Claim, Credentials, Event, Ledger

if TYPE_CHECKING:
    from mailvia.outbox.dispatch import Dispatcher

log = logging.getLogger(__name__)

THROTTLE_FIRST = 60.0  # seconds; doubles per consecutive throttle
THROTTLE_MAX = 1800.0
THROTTLE_DAILY = 3600.0  # a daily-quota reply when the channel has no budget to wait for
# After a claim came back short (the queue is drained), wait this long before claiming again
# while mail trickles in: each claim is a write transaction, and twenty connections claiming
# before every message would hold the write lock that intake needs.
REFILL_PAUSE = 0.05  # seconds

_EVENT_FOR = {
    State.DELIVERED: "message.delivered",
    State.BOUNCED: "message.bounced",
    State.EXPIRED: "message.expired",
    State.DEFERRED: "message.deferred",
    State.HELD: "message.held",
}


class _LeaseLost(Exception):
    """The worker no longer holds the claim's lease."""


def _lost(claim: Claim) -> NoReturn:
    log.warning("message %s: its lease was lost before sending; not sent", claim.message_id)
    raise _LeaseLost


def new_event(org_id: str, type_: str, now: Instant, data: dict[str, object]) -> Event:
    return Event(make_id("evt", now, os.urandom(10)), org_id, type_, now, data)


class ChannelRun:
    """Delivers one channel's claimed mail; `go(now)` returns the number of attempts."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        channel: Channel,
        clock: Callable[[], Instant] | None,
    ) -> None:
        self.d = dispatcher
        self.store = dispatcher.store
        self.channel = channel
        self.credentials: Credentials | None = None  # a password's, asked for once a run
        self.asked = False
        self.clock = clock  # None: a single pass at a fixed time (run_once)
        self.ledger: Ledger | None = (
            self.store.budget_ledger(channel.id, channel.budgets) if channel.budgets else None
        )
        self.queue: deque[Claim] = deque()
        self.records: list[AttemptRecord] = []
        self.effect = ChannelEffect.NONE
        self.effect_reply: str | None = None
        self.effect_wait: float | None = None  # the provider's own Retry-After, if given
        self.budget_wait: Instant | None = None
        self.attempts = 0
        self.held = 0  # messages this run moved to held
        self.delivered_any = False
        self.drained_at: Instant | None = None  # when a claim last came back short
        self.claimed: list[int] = []  # seqs this run claimed (in the worker's hand until done)
        self.turns = Turns(channel.max_connections + 1)
        # seq -> the group commit marking it started, and its place in the group
        self.marks: dict[int, tuple[asyncio.Future[list[bool]], int]] = {}
        self.store_down = False  # the store failed: send nothing more this run

    def now(self, fixed: Instant) -> Instant:
        return fixed if self.clock is None else self.clock()

    @property
    def stopped(self) -> bool:
        return (
            self.effect is not ChannelEffect.NONE
            or self.budget_wait is not None
            or self.d.stopping
            or self.store_down
        )

    async def go(self, now: Instant) -> int:
        connections = self.d.connections.take(self.channel, now)  # across every worker
        try:
            if connections:
                return await self._go(now, connections)
            if self.clock is not None:  # every slot is another worker's: not again at once
                await asyncio.sleep(self.d.connections.retry_after())
            return 0
        finally:
            self.d.connections.done(self.channel.id, keep=self.clock is not None)

    async def _go(self, now: Instant, connections: int) -> int:
        if not self._claim(now):
            return 0
        workers = min(connections, len(self.queue))
        try:
            await asyncio.gather(*(self._work(now) for _ in range(workers)))
        finally:
            try:
                await self._when_back(self._flush)
                await self._apply_effect(self.now(now))
            finally:
                self.d.liveness.holding.difference_update(self.claimed)
        return self.attempts

    def _claim(self, now: Instant) -> bool:
        opts = self.d.options
        limit = opts.batch
        if self.ledger is not None:
            allowed = self.ledger.allowance(now)
            limit = min(limit, max(allowed, 1)) if allowed is not None else limit
        claims = self.store.claim(
            channel_id=self.channel.id,
            now=now,
            limit=limit,
            lease_until=now + opts.lease_seconds,
            worker=opts.worker,
        )
        self.queue.extend(claims)
        self.claimed.extend(c.seq for c in claims)
        self.d.liveness.holding.update(c.seq for c in claims)
        self.drained_at = now if len(claims) < limit else None
        return bool(claims)

    def _refill(self, now: Instant) -> None:
        """Claim more before the queue runs dry, unless the outbox was just found drained."""
        if len(self.queue) >= self.d.options.batch // 4:
            return
        if self.drained_at is not None and now - self.drained_at < REFILL_PAUSE:
            return
        self._claim(now)

    async def _work(self, fixed: Instant) -> None:
        while self.queue and not self.stopped:
            await self.turns.wait()  # no more than max_connections ahead of the oldest
            if not self.queue or self.stopped:
                return
            claim = self.queue.popleft()
            position = self.turns.take()
            try:
                if self.clock is not None:
                    self._refill(self.clock())
                record = await self._attempt(claim, fixed)
            except _LeaseLost:
                continue  # another worker holds it now; it is theirs to send and record
            except StoreUnavailable:
                record = None  # raised before its transaction started: it goes back unsent
                self.store_down = True
            finally:
                self.turns.done(position)
            if record is None:
                self.queue.appendleft(claim)  # not started: the budget is spent for now
                return
            self.attempts += 1
            self.records.append(record)
            if len(self.records) >= self.d.options.flush_every:
                try:
                    self._flush()
                except StoreUnavailable:
                    self.store_down = True  # kept in hand; `go` records them when it is back

    def _flush(self) -> None:
        """Record the attempts in hand; on StoreUnavailable they stay in hand."""
        if self.records:
            self.store.record_attempts(self.records)
            self.records = []

    async def _when_back(self, step: Callable[[], None]) -> None:
        """A store step that must not be dropped (recording what was sent, giving claims
        back): while the store is gone, wait for it (outbox/outage.py), until the shutdown's
        bound passes. run_once (a fixed time) does not wait."""
        if self.clock is None:
            step()
            return
        await self.d.outage.until_back(step, self.clock, give_up=self.d.past_shutdown)

    async def _attempt(self, claim: Claim, fixed: Instant) -> AttemptRecord | None:
        settlements: list[Settlement] = []
        untried: list[str] = []
        size = self.channel.max_recipients_per_message
        chunks = [claim.pending[i : i + size] for i in range(0, len(claim.pending), size)]
        for chunk in chunks:
            first = None if settlements else claim
            try:
                taken = None if self.stopped else self._take_budget(len(chunk), fixed, first)
            except StoreUnavailable:
                if not settlements:
                    raise
                taken, self.store_down = None, True  # a later chunk: left for the next try
            if taken is None:
                if not settlements:
                    return None
                untried.extend(chunk)
                continue
            if first is not None and self.ledger is None:
                await self._mark_started(claim, fixed)
                if self.stopped:  # another connection disconnected or throttled meanwhile
                    return None
            started = time.perf_counter()
            result = await self._send(Envelope(claim.mail_from, chunk), claim.content)
            seconds = time.perf_counter() - started
            if self.ledger is not None and taken:
                self._finish_budget(taken, self.now(fixed))
            settlement = settle(
                result,
                pending=chunk,
                failures=claim.failures,
                policy=self.channel.retry,
                now=self.now(fixed),
                expires_at=claim.expires_at,
                rand=self.d.rand(),
            )
            settlements.append(settlement)
            outcomes = [str(r.outcome) for r in settlement.recipients]
            self.d.metrics.attempt(self.channel.id, seconds, outcomes)
            self._note_effect(settlement)
        return self._record(claim, settlements, untried, self.now(fixed))

    async def _mark_started(self, claim: Claim, fixed: Instant) -> None:
        """Commit that this message's transaction starts (before MAIL or the API call): if
        this worker dies now, whoever takes the message over flags it possible_duplicate.
        The marks go ahead by up to max_connections messages (the next ones in the queue,
        in one group), so that one commit serves many transactions; a budgeted channel's
        ledger marks each exactly as it takes the budget. Raises _LeaseLost when another
        worker has it."""
        if claim.seq not in self.marks:
            ahead = [c.seq for c in self.queue if c.seq not in self.marks]
            group = (claim.seq, *ahead[: self.channel.max_connections - 1])
            marking = asyncio.ensure_future(self.d.liveness.started(group, self.now(fixed)))
            self.marks.update((seq, (marking, i)) for i, seq in enumerate(group))
        pending, index = self.marks.pop(claim.seq)
        if not (await pending)[index]:
            _lost(claim)

    async def _send(self, envelope: Envelope, content: bytes) -> TransactionResult:
        """One transaction. An OAuth mailbox whose token the server refuses gets one fresh
        token and one more try; a second refusal settles as channel_broken, saying to
        reconnect with the provider. When
        no credentials can be had, the attempt settles with the reply the source gave."""
        rejected: Credentials | None = None
        while True:
            try:
                credentials = await self._credentials(rejected)
            except CredentialsFailed as failed:
                return TransactionResult(Stage.AUTH, failed.reply)
            result = await self.d.transport.send(self.channel, credentials, envelope, content)
            provider = self.channel.oauth
            if provider is None or not credentials_rejected(result.reply, result.stage):
                return result
            if rejected is not None and result.reply is not None:
                # A token renewed a moment ago is refused too: the consent itself is gone.
                return replace(result, reply=refused_after_renewal(provider, result.reply))
            rejected = credentials

    async def _credentials(self, rejected: Credentials | None) -> Credentials | None:
        """A password is asked for once a run; an OAuth token every time (the source keeps it
        in memory and renews it ahead of expiry, so a long run never sends a stale one)."""
        if self.channel.oauth is None and self.asked:
            return self.credentials
        credentials = await self.d.credentials(self.channel, rejected=rejected)
        self.credentials, self.asked = credentials, True
        return credentials

    def _take_budget(self, recipients: int, fixed: Instant, first: Claim | None) -> int | None:
        """The ledger id of a transaction allowed to start now (0 without budgets), or None
        when the budgets are spent for now. For a message's first transaction the ledger
        also marks it started; raises _LeaseLost when another worker has it."""
        if self.ledger is None:
            return 0
        start = (first.seq, self.d.options.worker) if first is not None else None
        taken, wait = self.ledger.take(self.now(fixed), recipients, start=start)
        if wait is not None:
            self.budget_wait = wait
        elif taken is None and first is not None:
            _lost(first)
        return taken

    def _finish_budget(self, taken: int, now: Instant) -> None:
        """End the ledger's in-flight row; after the transaction, so a store outage now must
        not lose what was sent (the row then ends on its own, at its stale time)."""
        try:
            assert self.ledger is not None
            self.ledger.finish([(taken, now)])
        except StoreUnavailable as exc:
            log.info("channel %s: budget use not ended (%s)", self.channel.id, exc)

    def _note_effect(self, settlement: Settlement) -> None:
        if any(r.state is State.DELIVERED for r in settlement.recipients):
            self.delivered_any = True
        effect = settlement.channel_effect
        if effect is not ChannelEffect.NONE and (
            self.effect is ChannelEffect.NONE or effect is ChannelEffect.DISCONNECT
        ):
            self.effect = effect
            self.effect_reply = str(settlement.channel_reply)
            self.effect_wait = settlement.wait

    def _record(
        self, claim: Claim, settlements: Sequence[Settlement], untried: Sequence[str], now: Instant
    ) -> AttemptRecord:
        recipients: tuple[RecipientSettlement, ...] = tuple(
            r for s in settlements for r in s.recipients
        )
        untried_state = State.HELD if self.effect is ChannelEffect.DISCONNECT else State.DEFERRED
        states = [*claim.settled, *(r.state for r in recipients)]
        state = message_state(states + [untried_state] * len(untried))
        self.held += state is State.HELD
        failed = any(s.counts_as_failure for s in settlements)
        next_times = [s.next_attempt_at for s in settlements if s.next_attempt_at is not None]
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
            events=self._events(claim, state, recipients, now),
        )

    def _events(
        self, claim: Claim, state: State, recipients: Sequence[RecipientSettlement], now: Instant
    ) -> tuple[Event, ...]:
        event_type = _EVENT_FOR.get(state)
        if event_type is None:
            return ()
        data: dict[str, object] = {
            "message_id": claim.message_id,
            "state": str(state),
            "channel_id": self.channel.id,
            "recipients": [
                {"address": r.address, "state": str(r.state), "reply": str(r.reply)}
                for r in recipients
            ],
        }
        return (new_event(claim.organization_id, event_type, now, data),)

    async def _apply_effect(self, now: Instant) -> None:
        leftovers = list(self.queue)
        self.queue.clear()
        if self.effect is ChannelEffect.DISCONNECT:
            await self._disconnect(leftovers, now)
            return
        if leftovers:
            await self._when_back(
                lambda: self.store.unclaim(leftovers, state=State.QUEUED, now=now)
            )
        if self.effect in (ChannelEffect.THROTTLE, ChannelEffect.THROTTLE_DAILY):
            self._throttle(now)
        elif self.delivered_any and self.channel.throttle_level:
            self.store.set_channel_throttle(self.channel.id, None, 0)

    async def _disconnect(self, leftovers: list[Claim], now: Instant) -> None:
        channel = self.channel
        self.store.set_channel_state(channel.id, ChannelState.DISCONNECTED, self.effect_reply, now)
        if leftovers:
            self.store.unclaim(leftovers, state=State.HELD, now=now)
        held = self.store.hold_channel(channel.id, now)
        data: dict[str, object] = {
            "channel_id": channel.id,
            "reason": self.effect_reply,
            "held": held + len(leftovers) + self.held,
        }
        self.store.add_events(
            [new_event(channel.organization_id, "channel.disconnected", now, data)]
        )
        await self.d.transport.forget(channel.id)
        await self.d.notify_disconnected(channel, self.effect_reply or "", now)
        log.warning("channel %s disconnected: %s", channel.id, self.effect_reply)

    def _throttle(self, now: Instant) -> None:
        """Pause the channel: for exactly as long as the provider said (Retry-After), else
        60 s doubling with each consecutive throttle; a daily quota waits for its window."""
        level = self.channel.throttle_level + 1
        pause = min(THROTTLE_FIRST * 2 ** (level - 1), THROTTLE_MAX)
        if self.effect_wait is not None:
            level, pause = self.channel.throttle_level, max(self.effect_wait, 0.0)
        if self.effect is ChannelEffect.THROTTLE_DAILY:
            pause = max(pause, self._daily_wait(now))
        self.store.set_channel_throttle(self.channel.id, now + pause, level)
        log.warning(
            "channel %s throttled for %.0f s: %s", self.channel.id, pause, self.effect_reply
        )

    def _daily_wait(self, now: Instant) -> float:
        """A daily-quota reply: wait until the oldest start of the last 24 h ages out."""
        if self.ledger is None:
            return THROTTLE_DAILY
        in_window = [t for t in self.ledger.log(now).times if t > now - 86_400]
        return max(in_window[0] + 86_400 - now, THROTTLE_FIRST) if in_window else THROTTLE_DAILY
