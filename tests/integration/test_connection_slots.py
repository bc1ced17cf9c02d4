"""Connection slots in the store (store/slots.py), on SQLite and PostgreSQL: a channel's
max_connections shared by every worker, each within its fair share; a worker that stopped
beating loses its slots; a start or a clean stop drops the worker's own; a worker refused
below its share asks, and one holding more than its share then gives the excess back (at
the end of its run, which ends early for it). And a given-back
claim keeps its place in the queue (outbox `unclaim`)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailvia.domain.channel import Auth, Security
from mailvia.domain.clock import SteppingClock
from mailvia.domain.message import State
from mailvia.outbox.slots import ASK_SECONDS, SharedConnections
from mailvia.store import SqlStore
from mailvia.testserver import TestServer
from support.databases import migrated_sqlite_file
from support.rows import T0, channel, grab, new, seeded
from support.world import World

LEASE = 30.0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The databases only: slots are the SQL store's (the memory store serves one process)."""
    if request.param == "sqlite":
        return f"sqlite:///{migrated_sqlite_file(tmp_path / 'mailvia.db')}"
    return str(request.getfixturevalue("migrated_pg_url"))


@pytest.fixture
def store(backend: str) -> Iterator[SqlStore]:
    s = seeded(backend, channel("ch_a", "relay"), channel("ch_b", "backup"))
    yield s
    s.close()


def take(s: SqlStore, worker: str, want: int, *, now: float = T0, limit: int = 4) -> list[int]:
    return s.take_slots("ch_a", worker, want=want, limit=limit, now=now, alive_after=now - LEASE)


def beat(s: SqlStore, worker: str, now: float = T0) -> None:
    s.beat(worker, now, lease_until=now + LEASE, seqs=[], host="h", pid=1)


@pytest.fixture
def slots(store: SqlStore) -> Iterator[SqlStore]:
    beat(store, "w1")
    beat(store, "w2")
    yield store


def test_two_live_workers_share_a_channel_within_its_limit(slots: SqlStore) -> None:
    assert take(slots, "w1", 4) == [0, 1]  # its fair share: 4 among 2 live workers
    assert take(slots, "w2", 4) == [2, 3]
    assert take(slots, "w1", 2) == []  # all four are taken
    slots.give_slots("ch_a", "w2", [2])
    assert take(slots, "w1", 2) == []  # w1 already holds its share
    assert take(slots, "w2", 1) == [2]


def test_a_lone_worker_takes_the_whole_limit(store: SqlStore) -> None:
    beat(store, "w1")
    assert take(store, "w1", 9) == [0, 1, 2, 3]


def test_a_worker_that_stopped_beating_loses_its_slots(slots: SqlStore) -> None:
    assert take(slots, "w1", 4) == [0, 1]
    later = T0 + LEASE + 1
    beat(slots, "w2", later)  # w1 beat last at T0: dead by now
    assert take(slots, "w2", 4, now=later) == [0, 1, 2, 3]


def test_a_start_or_a_clean_stop_drops_the_workers_own_slots(slots: SqlStore) -> None:
    assert take(slots, "w1", 4) == [0, 1]
    slots.start_worker("w1", T0 + 1, host="h", pid=2)  # its previous run's connections are gone
    assert take(slots, "w2", 4) == [0, 1]
    slots.stop_worker("w2")
    assert take(slots, "w1", 4, now=T0 + 2) == [0, 1, 2, 3]  # alone now: the whole limit


def grow(s: SqlStore, worker: str, want: int, *, now: float = T0, limit: int = 4) -> list[int]:
    return s.take_slots(
        "ch_a",
        worker,
        want=want,
        limit=limit,
        now=now,
        alive_after=now - LEASE,
        growing=True,
        asked_after=now - ASK_SECONDS,
    )


def test_a_growing_run_counts_only_the_workers_that_hold_slots(slots: SqlStore) -> None:
    """w2 is alive but has no mail for the channel (it holds none of its slots): a run of w1
    with more mail than connections grows past its first share to the whole limit."""
    assert take(slots, "w1", 4) == [0, 1]  # a run's start: any live worker may ask
    assert grow(slots, "w1", 2) == [2, 3]


def test_a_growing_run_leaves_a_worker_with_slots_its_share(slots: SqlStore) -> None:
    assert take(slots, "w1", 4) == [0, 1]
    assert take(slots, "w2", 1) == [2]  # w2 wants the channel too
    assert grow(slots, "w1", 2) == []  # 4 among the 2 holding slots: w1 has its 2
    beat(slots, "w3")
    assert take(slots, "w3", 4) == [3]  # the cap holds across every worker
    assert grow(slots, "w1", 2) == grow(slots, "w2", 3) == []


def excess(s: SqlStore, worker: str, *, now: float = T0, limit: int = 4) -> int:
    return s.excess_slots(
        "ch_a", worker, limit=limit, alive_after=now - LEASE, asked_after=now - ASK_SECONDS
    )


def test_a_worker_refused_below_its_share_asks_and_the_one_above_it_sees_its_excess(
    slots: SqlStore,
) -> None:
    assert take(slots, "w1", 4) == [0, 1]
    assert grow(slots, "w1", 2) == [2, 3]  # w2 had not asked: w1 grew to the whole limit
    assert excess(slots, "w1") == 0  # nobody asks
    assert take(slots, "w2", 4, now=T0 + 1) == []  # refused below its share: it asks
    assert excess(slots, "w1", now=T0 + 1) == 2  # 4 among the two that want the channel
    assert excess(slots, "w2", now=T0 + 1) == 0
    assert excess(slots, "w1", now=T0 + 1 + ASK_SECONDS + 1) == 0  # an ask left long ago
    beat(slots, "w1", T0 + 1)
    gone = dict(limit=4, alive_after=T0 + 0.5, asked_after=T0)  # w2 last beat at T0
    assert slots.excess_slots("ch_a", "w1", **gone) == 0  # a worker that stopped beating
    slots.give_slots("ch_a", "w1", [2, 3])
    assert take(slots, "w2", 4, now=T0 + 2) == [2, 3]  # its share: the ask is gone ...
    assert excess(slots, "w1", now=T0 + 2) == 0
    beat(slots, "w3")
    assert take(slots, "w3", 4, now=T0 + 2) == []  # ... and the cap holds with asks about
    assert grow(slots, "w1", 2, now=T0 + 2) == grow(slots, "w2", 2, now=T0 + 2) == []


def test_a_growing_run_leaves_a_worker_that_asks_its_share(slots: SqlStore) -> None:
    """w2 asked while the slots were another's: they come free, and w1, growing, leaves
    w2's share to it (without the ask w2 holds none and w1 would take all four)."""
    beat(slots, "w3")
    assert take(slots, "w1", 2) == [0, 1]
    assert take(slots, "w3", 2) == [2, 3]
    assert take(slots, "w2", 2) == []  # asks
    slots.give_slots("ch_a", "w3", [2, 3])
    assert grow(slots, "w1", 2) == []  # 4 among w1 and w2 (the one that asked)
    assert take(slots, "w2", 2) == [2, 3]


async def test_a_worker_above_its_share_gives_the_excess_back_at_its_next_run(
    slots: SqlStore,
) -> None:
    """w1 grew to the whole limit and keeps its slots across back-to-back runs; w2 starts
    wanting the channel: refused, it asks, and w1's next run closes its idle connections and
    gives back what is beyond its share, which w2 then takes. The cap holds throughout."""
    closed: list[str] = []

    async def close_idle(channel_id: str) -> None:
        closed.append(channel_id)

    def shared(worker: str) -> SharedConnections:
        return SharedConnections(slots, worker=worker, lease_seconds=LEASE, close_idle=close_idle)

    w1, w2 = shared("w1"), shared("w2")
    box = channel("ch_a", "relay", max_connections=4)
    assert await w1.take(box, T0) == 2  # its share among the two live workers
    assert await w1.grow(box, T0) == 4  # w2 has no mail for the channel yet
    w1.done(box.id, keep=False)  # kept for its next run
    assert await w2.take(box, T0 + 1) == 0  # all four are w1's: w2 asks
    w2.done(box.id, keep=False)
    assert await w1.take(box, T0 + 2) == 2 and closed == [box.id]
    assert await w2.take(box, T0 + 2) == 2
    assert sorted(w1.held[box.id] + w2.held[box.id]) == [0, 1, 2, 3]
    assert await w1.excess(box, T0 + 3) == await w2.excess(box, T0 + 3) == 0


def test_a_given_back_claim_keeps_its_place_in_the_queue(store: SqlStore) -> None:
    store.add_messages([new("m1", at=T0), new("m2", at=T0 + 1)])
    [first, second] = grab(store, now=T0 + 10, limit=2)
    store.unclaim([first], state=State.QUEUED, now=T0 + 20)
    store.add_messages([new("m3", at=T0 + 15)])
    store.unclaim([second], state=State.QUEUED, now=T0 + 20)
    order = [c.message_id for c in grab(store, now=T0 + 30, limit=3)]
    assert order == ["m1", "m2", "m3"]  # not behind m3, submitted after they were claimed


async def test_a_run_that_starts_while_kept_slots_are_given_back_keeps_its_own(
    store: SqlStore,
) -> None:
    """The kept slots leave hand before their idle connections are closed: a run of the
    channel that starts during that wait takes slots of its own from the store, and the
    give-back that follows does not give those away."""
    beat(store, "w1")
    closing, go_on = asyncio.Event(), asyncio.Event()

    async def close_idle(_channel_id: str) -> None:
        closing.set()
        await go_on.wait()

    shared = SharedConnections(
        store, worker="w1", lease_seconds=LEASE, close_idle=close_idle, hold=0.0
    )
    box = channel("ch_a", "relay", max_connections=2)
    assert await shared.take(box, T0) == 2
    shared.done(box.id, keep=True)
    await closing.wait()  # the kept slots are on their way back
    await shared.take(box, T0)  # a new run meanwhile (none yet: they are still ours in the store)
    mine = list(shared.held.get(box.id, []))
    go_on.set()
    await asyncio.sleep(0.05)
    assert shared.held.get(box.id, []) == mine  # what the run holds stays in hand ...
    assert set(take(store, "w2", 2)) <= {0, 1} - set(mine)  # ... and nobody else's


async def test_taking_slots_writes_in_a_thread_while_the_loop_goes_on(
    store: SqlStore,
) -> None:
    """The store's write for a run's slots is made off the event loop: while it waits (a
    busy SQLite writer, a PostgreSQL round trip), the loop keeps every other connection
    going."""
    beat(store, "w1")
    loop_thread, writers = threading.get_ident(), []
    go_on = threading.Event()

    class SlowSlots:
        def take_slots(self, *args: Any, **kwargs: Any) -> list[int]:
            writers.append(threading.get_ident())
            assert go_on.wait(5)
            return store.take_slots(*args, **kwargs)

        def give_slots(self, *args: Any) -> None:
            store.give_slots(*args)

    async def close_idle(_channel_id: str) -> None:
        return None

    shared = SharedConnections(SlowSlots(), worker="w1", lease_seconds=LEASE, close_idle=close_idle)
    taking = asyncio.ensure_future(shared.take(channel("ch_a", "relay", max_connections=2), T0))
    for _ in range(500):  # the loop runs on while the write waits
        if writers:
            break
        await asyncio.sleep(0.01)
    assert writers and writers[0] != loop_thread
    assert not taking.done()
    go_on.set()
    assert await taking == 2


async def test_a_clean_stop_drops_the_slots_in_one_write(tmp_path: Path, backend: str) -> None:
    """At a clean stop the kept slots are not given back channel by channel and then forgotten
    again by the stop: the stop's one write (`stop_worker`) drops them all."""
    world = World(tmp_path / "data", None if backend.startswith("sqlite") else backend)
    given: list[tuple[str, list[int]]] = []
    give_slots = world.store.give_slots

    def counted(channel_id: str, worker: str, slots: Any) -> None:
        given.append((channel_id, list(slots)))
        give_slots(channel_id, worker, slots)

    world.store.give_slots = counted  # type: ignore[method-assign]
    try:
        async with TestServer(maildir=tmp_path / "caught") as server:
            channel = world.channel(server.port, security=Security.NONE, auth=Auth.NONE)
            world.send(count=3)
            stop = asyncio.Event()
            dispatcher = world.services.dispatcher
            task = asyncio.create_task(dispatcher.run_forever(time.time, stop))
            await server.wait_for(3)
            assert dispatcher.connections.held[channel.id]  # in a run, or kept 2 s after it
            stop.set()
            await task
        assert given == []  # no give-back of its own ...
        worker = dispatcher.options.worker
        limit = channel.max_connections
        assert take_for(world.store, channel.id, "w9", limit) == list(range(limit))
        assert worker not in {w.id for w in world.store.list_workers()}  # ... the stop's
    finally:
        await world.close()


def take_for(
    s: SqlStore, channel_id: str, worker: str, limit: int, now: float | None = None
) -> list[int]:
    now = time.time() if now is None else now
    beat(s, worker, now)
    return s.take_slots(
        channel_id, worker, want=limit, limit=limit, now=now, alive_after=now - LEASE
    )


async def test_a_run_alone_with_the_mail_grows_to_max_connections(
    tmp_path: Path, backend: str
) -> None:
    """Another worker is alive but takes none of the channel's mail: the run starts with its
    share (2 of 4), then, its mail waiting for more connections, grows to all 4."""
    world = World(tmp_path / "data", None if backend.startswith("sqlite") else backend)
    try:
        async with TestServer(
            maildir=tmp_path / "caught", faults=["data-end=stall:0.02"]
        ) as server:
            world.channel(server.port, security=Security.NONE, auth=Auth.NONE, max_connections=4)
            world.send(count=60)
            now = time.time()
            beat(world.store, "w2", now)
            clock = SteppingClock(now, step=0.02)  # GROW_SECONDS pass as the run reads it
            assert await world.services.dispatcher.run_once(clock) == 60
            await server.wait_for(60)
            assert len(server.sessions) == 4, len(server.sessions)
    finally:
        await world.close()


async def test_a_run_above_its_share_ends_when_another_worker_asks(
    tmp_path: Path, backend: str
) -> None:
    """w1's run grew to all 4 slots; w2 starts wanting the channel and asks: the run starts
    no more attempts and ends (the claims in its hand go back to the queue, none lost), and
    w1's next run gives back what is beyond its share, so w2 gets 2 slots at once."""
    world = World(tmp_path / "data", None if backend.startswith("sqlite") else backend)
    try:
        async with TestServer(
            maildir=tmp_path / "caught", faults=["data-end=stall:0.02"]
        ) as server:
            channel = world.channel(
                server.port, security=Security.NONE, auth=Auth.NONE, max_connections=4
            )
            world.send(count=300)
            clock = SteppingClock(time.time(), step=0.02)  # GROW_SECONDS pass as runs read it
            beat(world.store, "w2", clock.now)
            dispatcher = world.services.dispatcher
            held = dispatcher.connections.held  # type: ignore[attr-defined]

            async def w2_asks() -> None:
                now = clock.now
                beat(world.store, dispatcher.options.worker, now)  # both alive
                refused = await asyncio.to_thread(take_for, world.store, channel.id, "w2", 4, now)
                assert refused == []  # all four are w1's: w2 asks (again on each retry)

            async def once_grown() -> None:
                for _ in range(1000):
                    if len(held.get(channel.id, ())) == 4:
                        return await w2_asks()
                    await asyncio.sleep(0.005)
                raise AssertionError("w1 did not grow to 4 slots")

            asking = asyncio.ensure_future(once_grown())
            first = await world.services.dispatcher.run_once(clock)
            await asking
            assert 0 < first < 300  # the run ended early ...
            assert len(held[channel.id]) == 4  # ... its slots kept for its next run
            await w2_asks()

            async def w2_takes() -> list[int]:  # retrying, as w2 would, until it has some
                for _ in range(1000):
                    if len(held.get(channel.id, ())) == 2:  # on their way back to the store
                        now = clock.now
                        beat(world.store, dispatcher.options.worker, now)
                        taken = await asyncio.to_thread(
                            take_for, world.store, channel.id, "w2", 4, now
                        )
                        if taken:
                            return taken
                    await asyncio.sleep(0.002)
                raise AssertionError("w1 did not give back the slots beyond its share")

            taking = asyncio.ensure_future(w2_takes())
            second = await world.services.dispatcher.run_once(clock)
            assert len(await taking) == 2  # w2's share, at once
            assert len(held[channel.id]) == 2  # w1 did not grow back past it
            assert first + second == 300
            await server.wait_for(300)
            assert len(server.received) == 300
    finally:
        await world.close()
