"""Heartbeat expiry through the dispatcher's use case, with a driven clock: a beating
dispatcher keeps its claims past their first lease; once it stops beating another one takes
them LEASE_SECONDS after the last beat, flagging only the message whose transaction had
started. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from mailvia.app import wire
from mailvia.domain.channel import Auth, Security
from support.world import World


async def test_a_beating_dispatcher_keeps_its_claims_and_a_silent_one_loses_them(
    tmp_path: Path, migrated_store_url: str
) -> None:
    world = World(tmp_path / "data", db_url=migrated_store_url)
    other = wire(replace(world.settings, worker_id="other"))
    try:
        channel = world.channel(9, security=Security.NONE, auth=Auth.NONE)
        started, merely = world.send(count=2)
        mine, store = world.services.dispatcher, world.store
        lease, t0 = mine.options.lease_seconds, time.time()
        assert mine.liveness.start(t0) == 0
        claims = store.claim(
            channel_id=channel.id,
            now=t0,
            limit=10,
            lease_until=t0 + lease,
            worker=mine.options.worker,
        )
        mine.liveness.holding.update(c.seq for c in claims)
        assert store.mark_started([claims[0].seq], mine.options.worker, t0) == [True]
        last = t0
        every = mine.liveness.every
        for beat in range(1, int(2 * lease / every) + 1):  # beats for twice the lease
            now = t0 + beat * every
            assert not await mine.liveness.beat_aside(now - every / 2)  # not yet due
            assert await mine.liveness.beat_aside(now)
            last = now
            assert other.store.channels_due(now) == []
        assert other.store.channels_due(last + lease - 0.01) == []  # the last beat holds
        taken = other.store.claim(
            channel_id=channel.id,
            now=last + lease,
            limit=10,
            lease_until=last + 2 * lease,
            worker="other",
        )
        assert [(c.message_id, c.possible_duplicate) for c in taken] == [
            (started.id, True),
            (merely.id, False),
        ]
        [row] = [w for w in store.list_workers() if w.id == mine.options.worker]
        assert row.beat_at == last
    finally:
        await other.services.aclose()
        await world.close()


async def test_a_beat_leaves_the_event_loop_to_the_connections(tmp_path: Path) -> None:
    """The dispatcher's beat is a write (on SQLite it waits for the write lock, which the
    store process's claims and marks hold for ms at a time, and for an fsync): it goes in a
    thread, so the connections on the event loop go on meanwhile. Here a beat takes 0.3 s and
    a task on the loop keeps ticking through it (on the loop it ticked not once)."""
    world = World(tmp_path / "data")
    dispatcher = world.services.dispatcher
    beat = world.store.beat
    beating = threading.Event()
    slow = threading.Event()  # set once a slow beat has been seen through by the ticker
    ticks: list[int] = []

    def slow_beat(*args: Any, **kwargs: Any) -> int:
        beating.set()
        time.sleep(0.3)
        beating.clear()
        return beat(*args, **kwargs)

    async def ticker() -> None:
        while not slow.is_set():
            await asyncio.sleep(0.01)
            if beating.is_set():
                ticks.append(1)
                if len(ticks) >= 5:
                    slow.set()

    world.store.beat = slow_beat  # type: ignore[method-assign]
    dispatcher.liveness.every = 0.0  # a beat every pass
    stop = asyncio.Event()
    try:
        task = asyncio.create_task(dispatcher.run_forever(time.time, stop))
        await asyncio.wait_for(ticker(), timeout=10)
        stop.set()
        await task
        assert len(ticks) >= 5
    finally:
        await world.close()
