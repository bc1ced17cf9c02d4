"""What a channel run's replies do to its channel at the run's end: a disconnect holds its
mail and tells the owner; a throttle (or an unreachable server) pauses it as
domain/throttle.py escalates; a delivery clears an earlier throttle. The claims left in hand
are given back.

Side effects: gives claims back, sets the channel's state or throttle, holds its mail and
records the event in the store; forgets the channel's connections; notifies.
"""

from __future__ import annotations

import logging

from mailvia.domain.clock import Instant
from mailvia.domain.delivery import ChannelEffect
from mailvia.domain.errors import NotFound
from mailvia.domain.message import State
from mailvia.domain.throttle import daily_quota_wait, escalate
from mailvia.outbox.disconnects import disconnect
from mailvia.outbox.ports import Claim
from mailvia.outbox.run_records import RunRecords

log = logging.getLogger(__name__)

# Effects that pause the whole channel for a while (an unreachable server as a throttle).
_PAUSES = (ChannelEffect.THROTTLE, ChannelEffect.THROTTLE_DAILY, ChannelEffect.UNREACHABLE)


class RunEffects(RunRecords):
    """The effects of a channel run on its channel."""

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
        """Disconnect the channel (disconnects.py); the mail this run held waits with the
        channel's queue. If the channel changed since the run read it (another party
        disconnected it; it was reconnected, resumed or edited: the refusal was met with
        what it had then), it is not disconnected here: if it is active now the mail this
        run held is queued again, else it stays held and is recorded held message by
        message (the other party's event counted none of it)."""
        if leftovers:  # claimed by this run: held here, counted with the channel's queue
            self.store.unclaim(leftovers, state=State.HELD, now=now)
        held = len(leftovers) + self.held
        done = await disconnect(
            self.store,
            self.ctx.transport,
            self.ctx.notify_disconnected,
            self.channel,
            self.effect_reply or "",
            now,
            held=held,
            refusal=self.effect_refusal if self.effect is ChannelEffect.DISCONNECT else None,
        )
        if done is None and held and self._release_if_active(now) is None:
            self._record_held(leftovers, now)

    def _record_held(self, leftovers: list[Claim], now: Instant) -> None:
        """The mail this run held stays held, but another party's `channel.disconnected`
        did not count it (the run had it claimed then): a `message.held` for each, as the
        messages the run tried have in their records."""
        events = [e for claim in leftovers for e in self._events(claim, State.HELD, (), now)]
        if events:
            self.store.add_events(events)

    def _release_if_active(self, now: Instant) -> int | None:
        """Queue the channel's held mail again if it is active now (the store releases it
        only while the channel is as read here: a disconnect in between keeps it held).
        Returns how many, or None when it is not active."""
        try:
            seen = self.store.get_channel(self.channel.id)
        except NotFound:
            return None
        return self.store.release_if_active(seen, now)

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
