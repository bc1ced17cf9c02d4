"""A channel run's records: each attempt's result made an AttemptRecord (the message's new
state, its next attempt, its events), and the records written to the store in the background
as they gather, or at the run's end, waiting for the store to come back if it is gone.

Side effects: records attempts and their events in the store (with the worker's started
marks, in a worker thread).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from mailvia.domain.clock import Instant
from mailvia.domain.delivery import ChannelEffect, RecipientSettlement, Settlement
from mailvia.domain.errors import StoreUnavailable
from mailvia.domain.message import State, message_state
from mailvia.outbox.liveness import Rider
from mailvia.outbox.ports import AttemptRecord, Claim, Event
from mailvia.outbox.run_context import RunState, in_thread, new_event

_EVENT_FOR = {
    State.DELIVERED: "message.delivered",
    State.BOUNCED: "message.bounced",
    State.EXPIRED: "message.expired",
    State.DEFERRED: "message.deferred",
    State.HELD: "message.held",
}


class RunRecords(RunState):
    """Recording for a channel run."""

    def _flush_soon(self) -> None:
        """Record the attempts in hand in the background, unless a record is already on its
        way (then the next one takes what gathered meanwhile). With `records_with_marks`
        they go in the worker's next commit of started marks (outbox/liveness.py): one
        transaction for both, with the attempts gathered until that commit starts; without
        it, in a transaction of their own in a thread."""
        if self.flushing is not None and not self.flushing.done():
            return
        self.flushing = asyncio.ensure_future(self._record_soon(Rider(self._take)))

    def _take(self) -> list[AttemptRecord]:
        records, self.records = self.records, []
        return records

    async def _record_soon(self, rider: Rider) -> None:
        try:
            if self.ctx.options.records_with_marks:
                await self.ctx.liveness.record(rider)
            else:
                rider.taken = rider.take()
                await in_thread(lambda: self.store.record_attempts(rider.taken))
        except Exception as exc:
            self.records[:0] = rider.taken  # kept in hand; `go` records them when it is back
            if isinstance(exc, StoreUnavailable):
                self.store_down = True
            else:
                self.fault = exc  # a fault, not an outage: the run stops, `go` raises it

    async def _flush(self) -> None:
        """Record the attempts in hand at the run's end (waiting for the store while it is
        gone: `_when_back`). They are taken out of hand here, on the event loop, and the
        store is given that list in a thread; if it is not recorded they are put back in
        front of any gathered meanwhile (and the error raised)."""
        if not self.records:
            return
        records, self.records = self.records, []
        try:
            await self._when_back(lambda: self.store.record_attempts(records))
        except BaseException:
            self.records[:0] = records
            raise

    async def _when_back(self, step: Callable[[], None]) -> None:
        """A store step that must not be dropped (recording what was sent, giving claims
        back): while the store is gone, wait for it (outbox/outage.py), until the shutdown's
        bound passes. Outside service (run_once) it does not wait. The step runs in a thread,
        like the claims and records during the run: on PostgreSQL it is several round trips
        that would otherwise hold up every other channel's connections on the event loop."""
        if not self.ctx.in_service:
            await in_thread(step)
            return
        await self.ctx.outage.until_back(
            lambda: in_thread(step), self.clock, give_up=self.ctx.past_shutdown
        )

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
