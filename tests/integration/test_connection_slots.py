"""Connection slots in the store (store/slots.py), on SQLite and PostgreSQL: a channel's
max_connections shared by every worker, each within its fair share; a worker that stopped
beating loses its slots; a start or a clean stop drops the worker's own. And a given-back
claim keeps its place in the queue (outbox `unclaim`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_store_contract import T0, grab, new, store  # noqa: F401

from mailvia.domain.message import State
from mailvia.store import SqlStore

LEASE = 30.0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The databases only: slots are the SQL store's (the memory store serves one process)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mailvia.db'}"
    return str(request.getfixturevalue("pg_url"))


def take(s: SqlStore, worker: str, want: int, *, now: float = T0, limit: int = 4) -> list[int]:
    return s.take_slots("ch_a", worker, want=want, limit=limit, now=now, alive_after=now - LEASE)


def beat(s: SqlStore, worker: str, now: float = T0) -> None:
    s.beat(worker, now, lease_until=now + LEASE, seqs=[], host="h", pid=1)


@pytest.fixture
def slots(store: SqlStore) -> Iterator[SqlStore]:  # noqa: F811
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


def test_a_lone_worker_takes_the_whole_limit(store: SqlStore) -> None:  # noqa: F811
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


def test_a_given_back_claim_keeps_its_place_in_the_queue(store: SqlStore) -> None:  # noqa: F811
    store.add_messages([new("m1", at=T0), new("m2", at=T0 + 1)])
    [first, second] = grab(store, now=T0 + 10, limit=2)
    store.unclaim([first], state=State.QUEUED, now=T0 + 20)
    store.add_messages([new("m3", at=T0 + 15)])
    store.unclaim([second], state=State.QUEUED, now=T0 + 20)
    order = [c.message_id for c in grab(store, now=T0 + 30, limit=3)]
    assert order == ["m1", "m2", "m3"]  # not behind m3, submitted after they were claimed


async def test_a_run_that_starts_while_kept_slots_are_given_back_keeps_its_own(
    store: SqlStore,  # noqa: F811
) -> None:
    """The kept slots leave hand before their idle connections are closed: a run of the
    channel that starts during that wait takes slots of its own from the store, and the
    give-back that follows does not give those away."""
    from test_store_contract import channel

    from mailvia.outbox.slots import SharedConnections

    beat(store, "w1")
    closing, go_on = asyncio.Event(), asyncio.Event()

    async def close_idle(_channel_id: str) -> None:
        closing.set()
        await go_on.wait()

    shared = SharedConnections(
        store, worker="w1", lease_seconds=LEASE, close_idle=close_idle, hold=0.0
    )
    box = channel("ch_a", "relay", max_connections=2)
    assert shared.take(box, T0) == 2
    shared.done(box.id, keep=True)
    await closing.wait()  # the kept slots are on their way back
    shared.take(box, T0)  # a new run meanwhile (none yet: they are still ours in the store)
    mine = list(shared.held.get(box.id, []))
    go_on.set()
    await asyncio.sleep(0.05)
    assert shared.held.get(box.id, []) == mine  # what the run holds stays in hand ...
    assert set(take(store, "w2", 2)) <= {0, 1} - set(mine)  # ... and nobody else's
