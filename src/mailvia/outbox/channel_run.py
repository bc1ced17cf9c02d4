"""One channel's share of a dispatch pass: deliver its claimed mail over up to
`max_connections` connections (fewer at once after a 421: its concurrency,
outbox/concurrency.py), within its budgets, and settle what came back.

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
from dataclasses import dataclass, replace
from itertools import islice
from typing import NoReturn, TypeVar

from mailvia.domain.channel import Channel, ChannelState
from mailvia.domain.clock import Clock, Instant
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
from mailvia.domain.throttle import daily_quota_wait, escalate
from mailvia.outbox.concurrency import ConcurrencyBook, Gate
from mailvia.outbox.dispatch_ports import DispatchOptions, DispatchStore, Notifier
from mailvia.outbox.liveness import Liveness
from mailvia.outbox.order import Turns
from mailvia.outbox.outage import Outage
from mailvia.outbox.ports import (
    AttemptRecord,
    Claim,
    Credentials,
    CredentialSource,
    Event,
    Ledger,
    Transport,
)
from mailvia.outbox.slots import GROW_SECONDS, Connections
from mailvia.outbox.webhook_ports import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")
# After a claim came back short (the queue is drained), wait this long before claiming again
# while mail trickles in: each claim is a write transaction, and twenty connections claiming
# before every message would hold the write lock that intake needs.
REFILL_PAUSE = 0.05  # seconds
# In service a run goes on claiming mail that trickles in (`_next`) for at most this long;
# then it ends, and the next run reads its channel (settings, credentials) afresh.
TRICKLE_RUN = 5.0  # seconds

# Effects that pause the whole channel for a while (an unreachable server as a throttle).
_PAUSES = (ChannelEffect.THROTTLE, ChannelEffect.THROTTLE_DAILY, ChannelEffect.UNREACHABLE)

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


async def _in_thread(call: Callable[[], T]) -> T:
    """A store call in a worker thread: the store's own locks (SQLite's writer queue, the
    memory store's lock, PostgreSQL's row locks) keep its transactions apart."""
    return await asyncio.to_thread(call)


def new_event(org_id: str, type_: str, now: Instant, data: dict[str, object]) -> Event:
    return Event(make_id("evt", now, os.urandom(10)), org_id, type_, now, data)


@dataclass(frozen=True)
class RunContext:
    """What a channel run works with, handed in by the dispatcher: the store, the transport
    and what it signs in with, the one clock, the dispatcher's settings and liveness (the
    claims in hand, the started marks), and who hears of what happened."""

    store: DispatchStore
    transport: Transport
    credentials: CredentialSource
    clock: Clock
    options: DispatchOptions
    liveness: Liveness
    stopping: Callable[[], bool]  # the dispatcher is shutting down: start nothing new
    rand: Callable[[], float]  # retry jitter
    metrics: Metrics
    notify_disconnected: Notifier
    connections: Connections  # max_connections across every worker (outbox/slots.py)
    concurrency: ConcurrencyBook  # how many of them at once, lowered by a 421
    outage: Outage  # the store's outages, logged once (outbox/outage.py)
    past_shutdown: Callable[[], bool]  # a stop's bound for work in flight has passed
    # In service (run_forever): a run waits for the store to come back and for a free
    # connection slot; run_once neither waits nor keeps slots afterwards.
    in_service: bool


class ChannelRun:
    """Delivers one channel's claimed mail; `go()` returns the number of attempts. Every
    time it acts on is read from the context's clock as it goes."""

    def __init__(self, context: RunContext, channel: Channel) -> None:
        self.ctx = context
        self.store = context.store
        self.clock = context.clock
        self.channel = channel
        self.credentials: Credentials | None = None  # a password's, asked for once a run
        self.asked = False
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
        self.trickling = False  # the last claim brought mail, though short of a batch
        self.began = time.monotonic()
        self.claimed: list[int] = []  # seqs this run claimed (in the worker's hand until done)
        self.turns = Turns(channel.max_connections + 1)
        self.gate = Gate(channel.max_connections)  # its concurrency (outbox/concurrency.py)
        # seq -> the group commit marking it started, and its place in the group
        self.marks: dict[int, tuple[asyncio.Future[list[bool]], int]] = {}
        self.store_down = False  # the store failed: send nothing more this run
        # The store's claims and records run in a thread (`_in_thread`), one of each at a
        # time, so the event loop keeps every connection going meanwhile (SQLite's fsync,
        # PostgreSQL's round trips).
        self.claiming: asyncio.Task[None] | None = None
        self.flushing: asyncio.Task[None] | None = None
        # Its connection slots (outbox/slots.py), one connection each; while it has more mail
        # than connections it asks for more every GROW_SECONDS (`growing`).
        self.slots = 0
        self.working: list[asyncio.Task[None]] = []  # one per connection
        self.growing: asyncio.Task[None] | None = None
        self.grown_at: Instant = 0.0
        self.ending = False  # its connections are done: no more are added
        self.fault: Exception | None = None  # a claim's or record's error, raised by `go`

    @property
    def stopped(self) -> bool:
        return (
            self.effect is not ChannelEffect.NONE
            or self.budget_wait is not None
            or self.ctx.stopping()
            or self.store_down
            or self.fault is not None
        )

    async def go(self) -> int:
        now = self.clock()
        connections = await self.ctx.connections.take(self.channel, now)  # every worker's
        self.gate.resize(self.ctx.concurrency.allowed(self.channel, now))
        try:
            if connections:
                return await self._go(connections)
            if self.ctx.in_service:  # every slot is another worker's: not again at once
                await asyncio.sleep(self.ctx.connections.retry_after())
            return 0
        finally:
            self.ctx.connections.done(self.channel.id, keep=self.ctx.in_service)

    async def _go(self, connections: int) -> int:
        self.slots, self.grown_at = connections, self.clock()
        if not await self._claim(self.grown_at):
            return 0
        workers = min(connections, len(self.queue))
        self.working = [asyncio.ensure_future(self._work()) for _ in range(workers)]
        try:
            await self._all_working()
        finally:
            self.ending = True
            try:
                await self._in_flight()
                await self._when_back(self._flush)
                await self._apply_effect(self.clock())
            finally:
                self.ctx.liveness.holding.difference_update(self.claimed)
        if self.fault is not None:
            raise self.fault
        return self.attempts

    async def _all_working(self) -> None:
        """Wait for every connection of the run, those added as it grows too."""
        waited = 0
        try:
            while waited < len(self.working):
                batch = self.working[waited:]
                await asyncio.gather(*batch)
                waited += len(batch)
        except asyncio.CancelledError:
            for task in self.working:  # those added after the gather began too
                task.cancel()
            raise

    def _grow_soon(self, now: Instant) -> None:
        """Ask for more connection slots in a task, every GROW_SECONDS while more mail is
        waiting than the run has connections (another worker that wants the channel keeps
        its share: store/slots.py)."""
        if self.slots >= self.channel.max_connections or not self.queue:
            return
        if self.growing is not None and not self.growing.done():
            return
        if now - self.grown_at < GROW_SECONDS:
            return
        self.grown_at = now
        self.growing = asyncio.ensure_future(self._grow(now))

    async def _grow(self, now: Instant) -> None:
        try:
            slots = await self.ctx.connections.grow(self.channel, now)
        except StoreUnavailable:
            return  # the run goes on with the connections it has
        except Exception as exc:  # a fault: the run stops, `go` raises it
            self.fault = exc
            return
        more, self.slots = slots - self.slots, max(slots, self.slots)
        if more > 0 and not (self.stopped or self.ending):
            self.working += [asyncio.ensure_future(self._work()) for _ in range(more)]

    async def _in_flight(self) -> None:
        """Wait for the claim, the records and the slots asked for in flight (their claims
        join the leftovers; records the store refused are back in hand)."""
        for task in (self.claiming, self.flushing, self.growing):
            if task is not None:
                await asyncio.shield(task)

    async def _claim(self, now: Instant) -> bool:
        """Claim up to a batch, and no more than the budgets let start now beyond what is in
        hand (at least one when nothing is: its turn finds out when the budget frees up)."""
        opts = self.ctx.options
        limit = opts.batch
        allowed = None if self.ledger is None else self.ledger.allowance(now)
        if allowed is not None:
            wanted = allowed - len(self.queue)
            if wanted < 1 and self.queue:
                return False  # the claims in hand use up what the budgets allow
            limit = min(limit, max(wanted, 1))
        claims = await _in_thread(
            lambda: self.store.claim(
                channel_id=self.channel.id,
                now=now,
                limit=limit,
                lease_until=now + opts.lease_seconds,
                worker=opts.worker,
            )
        )
        self.queue.extend(claims)
        self.claimed.extend(c.seq for c in claims)
        self.ctx.liveness.holding.update(c.seq for c in claims)
        self.drained_at = now if len(claims) < limit else None
        self.trickling = 0 < len(claims) < limit
        return bool(claims)

    def _refill(self, now: Instant) -> None:
        """Claim more before the queue runs dry, unless the outbox was just found drained or
        a claim is already on its way."""
        if self.claiming is not None and not self.claiming.done():
            return
        if len(self.queue) >= self.ctx.options.batch // 4:
            return
        if self.drained_at is not None and now - self.drained_at < REFILL_PAUSE:
            return
        self.claiming = asyncio.ensure_future(self._claim_more(now))

    async def _claim_more(self, now: Instant) -> None:
        try:
            await self._claim(now)
        except Exception as exc:  # StoreUnavailable or a fault: the run stops, `go` raises it
            self.fault = exc

    async def _next(self) -> bool:
        """Whether there is a claim to take: when the queue is empty, the claim on its way
        (if any) is waited for. In service, while mail trickles in (the last claim brought
        some), an empty queue is claimed for again REFILL_PAUSE later, the attempts in hand
        recorded meanwhile: the run goes on until a claim comes back empty (or for
        TRICKLE_RUN seconds: a steady stream still sees its channel's changes), rather than
        end and have the dispatcher look for due channels, read the channel and start a new
        run for every few messages."""
        while True:
            while not self.queue and self.claiming is not None and not self.claiming.done():
                await asyncio.shield(self.claiming)
            if self.queue or self.stopped or not self._goes_on():
                return bool(self.queue) and not self.stopped
            if self.records:
                self._flush_soon()
            await asyncio.sleep(REFILL_PAUSE)
            if not self.queue and (self.claiming is None or self.claiming.done()):
                self.claiming = asyncio.ensure_future(self._claim_more(self.clock()))

    def _goes_on(self) -> bool:
        """In service, with mail trickling in, for up to TRICKLE_RUN seconds."""
        young = time.monotonic() - self.began < TRICKLE_RUN
        return self.ctx.in_service and self.trickling and young

    async def _work(self) -> None:
        while await self._next():
            await self.turns.wait()  # no more than max_connections ahead of the oldest
            if not self.gate.enter_now():  # no more connections at once than the concurrency
                await self.gate.enter()
            if not self.queue or self.stopped:
                self.gate.leave()
                continue  # `_next` says whether a claim on its way brings more
            claim = self.queue.popleft()
            now = self.clock()
            self._refill(now)
            self._grow_soon(now)
            position = self.turns.take()
            try:
                record = await self._attempt(claim)
            except _LeaseLost:
                continue  # another worker holds it now; it is theirs to send and record
            except StoreUnavailable:
                record = None  # raised before its transaction started: it goes back unsent
                self.store_down = True
            finally:
                self.turns.done(position)
                self.gate.leave()
            if record is None:
                self.queue.appendleft(claim)  # not started: the budget is spent for now
                return
            self.attempts += 1
            self.records.append(record)
            if len(self.records) >= self.ctx.options.flush_every:
                self._flush_soon()

    def _flush_soon(self) -> None:
        """Record the attempts in hand in a thread, unless a record is already on its way
        (then the next one takes what gathered meanwhile)."""
        if self.flushing is not None and not self.flushing.done():
            return
        records, self.records = self.records, []
        self.flushing = asyncio.ensure_future(self._record_in_thread(records))

    async def _record_in_thread(self, records: list[AttemptRecord]) -> None:
        try:
            await _in_thread(lambda: self.store.record_attempts(records))
        except Exception as exc:
            self.records[:0] = records  # kept in hand; `go` records them when it is back
            if isinstance(exc, StoreUnavailable):
                self.store_down = True
            else:
                self.fault = exc  # a fault, not an outage: the run stops, `go` raises it

    def _flush(self) -> None:
        """Record the attempts in hand; on StoreUnavailable they stay in hand."""
        if self.records:
            self.store.record_attempts(self.records)
            self.records = []

    async def _when_back(self, step: Callable[[], None]) -> None:
        """A store step that must not be dropped (recording what was sent, giving claims
        back): while the store is gone, wait for it (outbox/outage.py), until the shutdown's
        bound passes. Outside service (run_once) it does not wait. The step runs in a thread,
        like the claims and records during the run: on PostgreSQL it is several round trips
        that would otherwise hold up every other channel's connections on the event loop."""
        if not self.ctx.in_service:
            await _in_thread(step)
            return
        await self.ctx.outage.until_back(
            lambda: _in_thread(step), self.clock, give_up=self.ctx.past_shutdown
        )

    async def _attempt(self, claim: Claim) -> AttemptRecord | None:
        settlements: list[Settlement] = []
        untried: list[str] = []
        size = self.channel.max_recipients_per_message
        chunks = [claim.pending[i : i + size] for i in range(0, len(claim.pending), size)]
        for chunk in chunks:
            first = None if settlements else claim
            try:
                taken = None if self.stopped else self._take_budget(len(chunk), first)
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
                await self._mark_started(claim)
                if self.stopped:  # another connection disconnected or throttled meanwhile
                    return None
            cohort = self.ctx.concurrency.cohort(self.channel)
            started = time.perf_counter()
            result = await self._send(Envelope(claim.mail_from, chunk), claim.content)
            seconds = time.perf_counter() - started
            if self.ledger is not None and taken:
                self._finish_budget(taken, self.clock())
            now = self.clock()
            settlement = settle(
                result,
                pending=chunk,
                failures=claim.failures,
                policy=self.channel.retry,
                now=now,
                expires_at=claim.expires_at,
                rand=self.ctx.rand(),
            )
            settlements.append(settlement)
            outcomes = [str(r.outcome) for r in settlement.recipients]
            self.ctx.metrics.attempt(self.channel.id, seconds, outcomes)
            self._note_effect(settlement)
            self._pace(settlement, now, cohort)
        return self._record(claim, settlements, untried, self.clock())

    async def _mark_started(self, claim: Claim) -> None:
        """Commit that this message's transaction starts (before MAIL or the API call): if
        this worker dies now, whoever takes the message over flags it possible_duplicate.
        The marks go ahead of the connections by max_connections to 2 x max_connections
        messages (the next ones in the queue, a group at a time), so that one commit serves
        many transactions and is made before they need it; a budgeted channel's ledger marks
        each exactly as it takes the budget. Raises _LeaseLost when another worker has it."""
        size = self.channel.max_connections
        marked = 0  # marks are made in queue order: the marked messages lead the queue
        for queued in self.queue:
            if queued.seq not in self.marks:
                break
            marked += 1
        own = () if claim.seq in self.marks else (claim.seq,)
        group: tuple[int, ...] = ()
        if own or marked < size:
            wanted = max(2 * size - marked - len(own), 0)
            ahead = islice((c.seq for c in self.queue if c.seq not in self.marks), wanted)
            group = (*own, *ahead)
        if group:
            marking = asyncio.ensure_future(self.ctx.liveness.started(group, self.clock()))
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
            result = await self.ctx.transport.send(self.channel, credentials, envelope, content)
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
        credentials = await self.ctx.credentials(self.channel, rejected=rejected)
        self.credentials, self.asked = credentials, True
        return credentials

    def _take_budget(self, recipients: int, first: Claim | None) -> int | None:
        """The ledger id of a transaction allowed to start now (0 without budgets), or None
        when the budgets are spent for now. For a message's first transaction the ledger
        also marks it started; raises _LeaseLost when another worker has it."""
        if self.ledger is None:
            return 0
        start = (first.seq, self.ctx.options.worker) if first is not None else None
        taken, wait = self.ledger.take(self.clock(), recipients, start=start)
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

    def _pace(self, settlement: Settlement, now: Instant, cohort: int) -> None:
        """Move the run's gate with the channel's concurrency (`cohort`: the one the
        transaction started in). When a 421 lowered it, the channel's connections above the
        new width close (idle ones now, busy ones as their transaction ends; the one told
        421 is closed already), so the server sees fewer sessions, not idle ones kept open,
        and no transaction in flight is cut."""
        allowed = self.ctx.concurrency.settled(self.channel, settlement, now, started_in=cohort)
        if allowed == self.gate.limit:
            return
        if allowed < self.gate.limit:
            self.ctx.transport.narrow(self.channel.id, allowed)
        self.gate.resize(allowed)

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
            worker=self.ctx.options.worker,
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
        if self.effect in _PAUSES:
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
        await self.ctx.transport.forget(channel.id)
        await self.ctx.notify_disconnected(channel, self.effect_reply or "", now)
        log.warning("channel %s disconnected: %s", channel.id, self.effect_reply)

    def _throttle(self, now: Instant) -> None:
        """Pause the channel as domain/throttle.py escalates it (a server that could not be
        reached at all pauses it as a throttle: the rest of the claimed mail is not tried
        against a dead server)."""
        daily = None
        if self.effect is ChannelEffect.THROTTLE_DAILY:
            starts = None if self.ledger is None else self.ledger.log(now).times
            daily = daily_quota_wait(starts, now)
        level, wait = self.channel.throttle_level, self.effect_wait
        pause = escalate(level, retry_after=wait, daily_wait=daily)
        self.store.set_channel_throttle(self.channel.id, now + pause.seconds, pause.level)
        why = "unreachable" if self.effect is ChannelEffect.UNREACHABLE else "throttled"
        log.warning(
            "channel %s %s for %.0f s: %s", self.channel.id, why, pause.seconds, self.effect_reply
        )
