"""One channel's share of a dispatch pass: deliver its claimed mail over up to
`max_connections` connections (fewer at once after a 421: its concurrency,
outbox/concurrency.py), within its budgets, and settle what came back.

This module runs the connections: each takes the next claim in turn, within the run's
concurrency gate, and the run asks for more connection slots while more mail waits than it
has connections, and goes on while mail trickles in (in service). The rest is in the parts
ChannelRun is made of, each over the run's state (run_context.py): claiming (run_claims.py),
attempts (run_attempts.py), recording (run_records.py), the effects on the channel
(run_effects.py).

Side effects: claims, settles and gives back messages in the store; records budget use;
disconnects, throttles or budget-waits the channel; records events.
"""

from __future__ import annotations

import asyncio

from mailvia.domain.clock import Instant
from mailvia.domain.errors import StoreUnavailable
from mailvia.outbox.run_attempts import LeaseLost, RunAttempts
from mailvia.outbox.run_claims import REFILL_PAUSE, RunClaims
from mailvia.outbox.run_effects import RunEffects
from mailvia.outbox.slots import GROW_SECONDS


class ChannelRun(RunAttempts, RunClaims, RunEffects):
    """Delivers one channel's claimed mail; `go()` returns the number of attempts. Every
    time it acts on is read from the context's clock as it goes."""

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
                await self._flush()
                await self._apply_effect(self.clock())
            finally:
                self.ctx.liveness.holding.difference_update(self.claimed)
        if self.fault is not None:
            raise self.fault
        return self.attempts

    async def _all_working(self) -> None:
        """Wait for every connection of the run, those added as it grows too. A connection
        that fails (a fault: not a lost lease or an outage, which it handles) stops the run:
        its error becomes the run's fault (`go` raises it), and the others end the attempt
        they are in, so that what they sent is recorded. At a cancellation, or any other
        error here, every connection is cancelled and waited for before this returns."""
        waited = 0
        try:
            while waited < len(self.working):
                batch = self.working[waited:]
                for task in batch:
                    task.add_done_callback(self._connection_done)
                await asyncio.gather(*batch, return_exceptions=True)
                waited += len(batch)
        except BaseException:
            for task in self.working:  # those added after the gather began too
                task.cancel()
            await asyncio.gather(*self.working, return_exceptions=True)
            raise

    def _connection_done(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if isinstance(error, Exception) and self.fault is None:
            self.fault = error  # the run stops at once: its other connections see `stopped`

    def _grow_soon(self, now: Instant) -> None:
        """Ask for more connection slots in a task, every GROW_SECONDS while more mail is
        waiting than the run has connections (another worker that wants the channel keeps
        its share: store/slots.py); or, when it cannot grow, whether another worker asks
        for the slots it holds beyond its share."""
        if not self.queue:
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
            if slots <= self.slots and await self.ctx.connections.excess(self.channel, now):
                self.yielding = True
                return
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

    async def _next(self) -> bool:
        """Whether there is a claim to take: when the queue is empty, the claim on its way
        (if any) is waited for. In service, while mail trickles in (the last claim brought
        some), an empty queue is claimed for again REFILL_PAUSE later, the attempts in hand
        recorded meanwhile: the run goes on until a claim comes back empty (or for
        RUN_SECONDS: a steady stream still sees its channel's changes), rather than
        end and have the dispatcher look for due channels, read the channel and start a new
        run for every few messages."""
        while True:
            if self.yielding:
                return False
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
        """In service, with mail trickling in, for up to RUN_SECONDS."""
        return self.ctx.in_service and self.trickling and self.young()

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
            except LeaseLost:
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
