"""A channel's `max_connections` across every worker process and machine: connection slots
in the store, one per connection a worker may hold open.

A channel run takes slots before it claims (none free: it claims nothing and the dispatcher
looks again on a later pass) and uses one connection per slot. Its first take is its fair
share among the live workers (any of them may be about to ask); while it has more mail than
connections it asks again every `GROW_SECONDS`, then counted among the workers that hold
slots of the channel, so a worker alone with the channel's mail grows to `max_connections`
while two with mail keep a share each. A worker refused below its share leaves an ask in the
store; then a worker holding more than its share (among the workers that hold or ask) ends
its run (`excess`, checked every GROW_SECONDS) and, as the next run starts, closes its idle
connections and gives the excess back, so a second worker gets slots within seconds
rather than when the first one's stream pauses. When the run ends its slots
are kept `HOLD_SECONDS` with the pool's idle connections, so the next run of the channel
here reuses both; then the idle connections are closed and the slots given back. Slots are
tied to the worker's heartbeat: a worker that stops beating loses them with its claims, and
a restarted or stopped worker holds none (store/workers.py). See docs/architecture.md
("Connection caps across workers").

Side effects: slot rows in the store; closes the channel's idle connections (the transport).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from mailvia.domain.channel import Channel
from mailvia.domain.clock import Instant
from mailvia.domain.errors import StoreUnavailable

log = logging.getLogger(__name__)

HOLD_SECONDS = 2.0  # slots (and idle connections) kept after a run for the next one
RETRY_SECONDS = 0.5  # a run that found no free slot ends after about this long (jittered)
# A run with more mail than connections asks for more slots this often. Longer than a
# dispatcher's look for mail from other processes (IDLE_POLL, 1 s), so that another worker
# with mail for the channel has asked (and holds its share) before a run grows past it.
GROW_SECONDS = 2.0
# A worker refused slots asks again on the dispatcher's next pass (RETRY_SECONDS, then up to
# IDLE_POLL): an ask older than this is from a worker that no longer wants the channel.
ASK_SECONDS = 3.0


class SlotStore(Protocol):
    """The store side (store/slots.py)."""

    def take_slots(
        self,
        channel_id: str,
        worker: str,
        *,
        want: int,
        limit: int,
        now: Instant,
        alive_after: Instant,
        growing: bool = False,
        asked_after: Instant | None = None,
    ) -> list[int]: ...

    def excess_slots(
        self,
        channel_id: str,
        worker: str,
        *,
        limit: int,
        alive_after: Instant,
        asked_after: Instant,
    ) -> int: ...

    def give_slots(self, channel_id: str, worker: str, slots: Sequence[int]) -> None: ...


class Connections(Protocol):
    """How many connections a channel run may open (the dispatcher's `connections`)."""

    async def take(self, channel: Channel, now: Instant) -> int: ...

    async def grow(self, channel: Channel, now: Instant) -> int: ...

    async def excess(self, channel: Channel, now: Instant) -> int: ...

    def retry_after(self) -> float: ...

    def done(self, channel_id: str, *, keep: bool) -> None: ...

    async def aclose(self, *, give_back: bool = True) -> None: ...


class LocalConnections:
    """Each process on its own: `max_connections` per process (no store)."""

    async def take(self, channel: Channel, now: Instant) -> int:
        return channel.max_connections

    async def grow(self, channel: Channel, now: Instant) -> int:
        return channel.max_connections

    async def excess(self, channel: Channel, now: Instant) -> int:
        return 0

    def retry_after(self) -> float:
        return RETRY_SECONDS

    def done(self, channel_id: str, *, keep: bool) -> None:
        return None

    async def aclose(self, *, give_back: bool = True) -> None:
        return None


class SharedConnections:
    """Connection slots shared through the store by every worker."""

    def __init__(
        self,
        store: SlotStore,
        *,
        worker: str,
        lease_seconds: float,
        close_idle: Callable[[str], Awaitable[None]],
        hold: float = HOLD_SECONDS,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.rand = rand
        self.store = store
        self.worker = worker
        self.lease_seconds = lease_seconds
        self.close_idle = close_idle
        self.hold = hold
        self.held: dict[str, list[int]] = {}  # channel id -> slots, in a run or kept
        self._release: dict[str, asyncio.Task[None]] = {}  # kept slots' pending release

    async def take(self, channel: Channel, now: Instant) -> int:
        """Slots for a run of `channel` (those kept from its last run, and more up to its
        `max_connections` among every worker). Returns how many; 0: every slot is another
        worker's for now. The store's write runs in a thread (the event loop keeps every
        other channel's connections going meanwhile); what is in hand is settled on the
        loop, before it. Raises StoreUnavailable."""
        release = self._release.pop(channel.id, None)
        if release is not None:
            release.cancel()  # the kept slots serve this run
        slots = self.held.setdefault(channel.id, [])
        want = channel.max_connections - len(slots)
        if slots and await self._give_excess(channel, now):
            return len(self.held[channel.id])  # another worker asks: this run keeps its share
        if want > 0:
            await self._more(channel, want, now, growing=False)
        elif want < 0:  # the channel's cap was lowered
            extra, self.held[channel.id] = slots[want:], slots[:want]
            await asyncio.to_thread(self.store.give_slots, channel.id, self.worker, extra)
        return len(self.held.get(channel.id, ()))

    async def grow(self, channel: Channel, now: Instant) -> int:
        """More slots for a run of `channel` that has more mail than connections, up to its
        `max_connections`, this worker's share now counted among the workers holding slots
        of the channel (store/slots.py). Returns how many the run holds now. Raises
        StoreUnavailable."""
        want = channel.max_connections - len(self.held.get(channel.id, ()))
        if want > 0:
            await self._more(channel, want, now, growing=True)
        return len(self.held.get(channel.id, ()))

    async def excess(self, channel: Channel, now: Instant) -> int:
        """How many of the channel's slots this worker holds beyond its share while another
        worker asks for some (0 if none asks). A read, in a thread. Raises StoreUnavailable."""
        if len(self.held.get(channel.id, ())) < 2:
            return 0  # a share is at least one slot
        return await asyncio.to_thread(
            self.store.excess_slots,
            channel.id,
            self.worker,
            limit=channel.max_connections,
            alive_after=now - self.lease_seconds,
            asked_after=now - ASK_SECONDS,
        )

    async def _give_excess(self, channel: Channel, now: Instant) -> bool:
        """Between runs, give back the slots beyond this worker's share that another worker
        asks for, its idle connections closed first. Whether any were given back."""
        excess = await self.excess(channel, now)
        if not excess:
            return False
        slots = self.held[channel.id]
        extra, self.held[channel.id] = slots[-excess:], slots[:-excess]
        await self.close_idle(channel.id)  # no connection stays open without its slot
        await self._give(channel.id, extra)
        return True

    async def _more(self, channel: Channel, want: int, now: Instant, *, growing: bool) -> None:
        taken = await asyncio.to_thread(
            self.store.take_slots,
            channel.id,
            self.worker,
            want=want,
            limit=channel.max_connections,
            now=now,
            alive_after=now - self.lease_seconds,
            growing=growing,
            asked_after=now - ASK_SECONDS,
        )
        self.held.setdefault(channel.id, []).extend(taken)

    def retry_after(self) -> float:
        """Seconds before a channel whose slots were all taken is tried again (so the
        dispatcher does not ask the store in a busy loop), jittered among workers."""
        return RETRY_SECONDS * (0.5 + self.rand())

    def done(self, channel_id: str, *, keep: bool) -> None:
        """The run of the channel ended: keep its slots for `hold` seconds (`keep`: in the
        event loop of run_forever), or until the next run (run_once, which tests drive with
        a fixed time: one dispatcher, and no store call per pass)."""
        if not self.held.get(channel_id):
            self.held.pop(channel_id, None)  # a run that got none: nothing to keep
        elif keep:
            self._release[channel_id] = asyncio.ensure_future(self._later(channel_id))

    async def _later(self, channel_id: str) -> None:
        await asyncio.sleep(self.hold)
        self._release.pop(channel_id, None)
        await self._close_and_give(channel_id)

    async def _close_and_give(self, channel_id: str) -> None:
        # Out of hand before the wait: a run that starts meanwhile must not take these (they
        # are about to be given back) but ask the store for its own. The idle connections
        # close first: no connection stays open without its slot.
        slots = self.held.pop(channel_id, [])
        await self.close_idle(channel_id)
        await self._give(channel_id, slots)

    async def _give(self, channel_id: str, slots: list[int]) -> None:
        try:  # a store write: off the loop, like taking them
            await asyncio.to_thread(self.store.give_slots, channel_id, self.worker, slots)
        except StoreUnavailable as exc:
            # Still ours in the store: freed when this worker stops or starts again, or
            # when it stops beating. Take them back into hand so the next run uses them.
            log.info("channel %s: connection slots not given back (%s)", channel_id, exc)
            self.held.setdefault(channel_id, []).extend(slots)

    async def aclose(self, *, give_back: bool = True) -> None:
        """Close the idle connections and let go of every kept slot: given back to the
        store (`give_back`), or not when the caller's clean stop is about to drop every slot
        of this worker in one write (`stop_worker`; if that fails, they go with the worker's
        heartbeat), so as not to write each channel's twice."""
        for task in self._release.values():
            task.cancel()
        self._release.clear()
        for channel_id in list(self.held):
            if give_back:
                with contextlib.suppress(StoreUnavailable):
                    await self._close_and_give(channel_id)
            else:
                self.held.pop(channel_id, None)
                await self.close_idle(channel_id)
