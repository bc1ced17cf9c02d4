"""A claim on SQLite chooses its messages in a read snapshot, then leases them under the write
lock (store/claim_sqlite.py): what another connection or process did in between is honoured.
A message another claim leased meanwhile is not leased twice (and the claim still comes back
full); one held, cancelled or whose channel was paused meanwhile is not leased; a claim that
finds nothing takes no write turn. Two processes claiming at once never share a message."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailvia.domain.channel import ChannelState
from mailvia.domain.message import State
from mailvia.domain.replies import Outcome
from mailvia.store import SqlStore, open_store
from mailvia.store import outbox as store_outbox
from mailvia.store.tables import messages
from support.rows import LATER, T0, channel, grab, new, record, seeded


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'mailvia.db'}"
    seeded(url, channel("ch_a", "relay")).close()
    yield url


@pytest.fixture
def two(url: str) -> Iterator[tuple[SqlStore, SqlStore]]:
    """Two stores on one file: each its own connections and its own writer queue, as two
    processes would have."""
    first, second = open_store(url), open_store(url)
    yield first, second
    first.close()
    second.close()


def between(monkeypatch: pytest.MonkeyPatch, action: Callable[[], object]) -> None:
    """Run `action` once, right after the next claim chose its messages and before it leases
    them."""
    choose = store_outbox._claimable
    pending = [action]

    def chosen_then(*args: object) -> list[tuple[float, int]]:
        chosen = choose(*args)  # type: ignore[arg-type]
        if pending:
            pending.pop()()
        return chosen

    monkeypatch.setattr(store_outbox, "_claimable", chosen_then)


def owners(store: SqlStore, ids: list[str]) -> list[tuple[State, str | None]]:
    """Each message's state and lease owner, as stored."""
    with store._db.read() as conn:
        query = sa.select(messages.c.id, messages.c.state, messages.c.lease_owner)
        rows = {
            message_id: (State(state), owner) for message_id, state, owner in conn.execute(query)
        }
    return [rows[message_id] for message_id in ids]


def test_messages_another_claim_leased_meanwhile_are_not_leased_twice(
    two: tuple[SqlStore, SqlStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = two
    ids = [f"m{i}" for i in range(6)]
    first.add_messages([new(message_id, at=T0 + i) for i, message_id in enumerate(ids)])
    taken: list[str] = []
    between(monkeypatch, lambda: taken.extend(c.message_id for c in grab(second, T0 + 9, 2, "w2")))
    claims = grab(first, now=T0 + 9, limit=4, worker="w1")
    assert taken == ["m0", "m1"]
    # m0 and m1 were chosen by the first claim too: skipped, and it chose again for two more.
    assert [c.message_id for c in claims] == ["m2", "m3", "m4", "m5"]
    assert owners(first, ids) == [(State.SENDING, "w2")] * 2 + [(State.SENDING, "w1")] * 4


def test_an_expired_lease_taken_over_meanwhile_is_not_taken_again(
    two: tuple[SqlStore, SqlStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = two
    first.add_messages([new("m1")])
    (gone,) = grab(first, now=T0, worker="w0", lease=10)
    assert first.mark_started([gone.seq], "w0", T0 + 1) == [True]
    taken: list[bool] = []
    between(
        monkeypatch,
        lambda: taken.extend(c.possible_duplicate for c in grab(second, T0 + 20, worker="w2")),
    )
    assert grab(first, now=T0 + 20, worker="w1") == []
    assert taken == [True]  # w2 took it over (flagged: w0 had started it), w1 did not
    assert owners(first, ["m1"]) == [(State.SENDING, "w2")]


def _budget_wait(store: SqlStore, until: float) -> None:
    with store._db.write() as conn:
        conn.execute(sa.text("UPDATE channels SET budget_wait_until = :t"), {"t": until})


@pytest.mark.parametrize("meanwhile", ["cancel", "hold", "pause", "throttle", "budget"])
def test_mail_that_stopped_being_claimable_meanwhile_is_not_leased(
    two: tuple[SqlStore, SqlStore], monkeypatch: pytest.MonkeyPatch, meanwhile: str
) -> None:
    first, second = two
    first.add_messages([new("m1"), new("m2")])
    actions: dict[str, Callable[[], object]] = {
        "cancel": lambda: second.cancel_message("m1", T0 + 1),
        "hold": lambda: second.hold_channel("ch_a", T0 + 1),
        "pause": lambda: second.set_channel_state("ch_a", ChannelState.PAUSED, None, T0 + 1),
        "throttle": lambda: second.set_channel_throttle("ch_a", T0 + 60, 1),
        "budget": lambda: _budget_wait(second, T0 + 60),
    }
    between(monkeypatch, actions[meanwhile])
    claims = grab(first, now=T0 + 2)
    if meanwhile == "cancel":
        assert [c.message_id for c in claims] == ["m2"]
        assert first.get_message("m1").state is State.CANCELLED
        return
    assert claims == []
    waiting = State.HELD if meanwhile == "hold" else State.QUEUED
    assert owners(first, ["m1", "m2"]) == [(waiting, None)] * 2
    assert [r.state for r in first.get_message("m1").recipients] == [waiting]


def test_a_claim_that_finds_nothing_takes_no_write_turn(
    two: tuple[SqlStore, SqlStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = two
    queue = first._db._queue
    assert queue is not None
    turns: list[bool] = []
    take = queue.turn

    def counted(**kwargs: bool):  # type: ignore[no-untyped-def]
        turns.append(True)
        return take(**kwargs)

    monkeypatch.setattr(queue, "turn", counted)
    assert grab(first) == []
    assert turns == []
    first.add_messages([new("m1")])
    assert [c.message_id for c in grab(first)] == ["m1"]
    assert len(turns) == 2  # the intake's and the lease's


def _claim_all(url: str, worker: str, go: multiprocessing.synchronize.Event) -> list[str]:
    store = open_store(url)
    go.wait(30)
    taken: list[str] = []
    while claims := grab(store, now=T0 + 9, limit=7, worker=worker):
        taken.extend(c.message_id for c in claims)
    store.close()
    return taken


def test_two_processes_claiming_at_once_never_share_a_message(url: str) -> None:
    store = open_store(url)
    ids = [f"m{i:03}" for i in range(400)]
    store.add_messages([new(message_id) for message_id in ids])
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(2) as pool:
        go = manager.Event()
        runs = [pool.apply_async(_claim_all, (url, f"w{k}", go)) for k in range(2)]
        go.set()
        taken = [run.get(60) for run in runs]
    assert sorted(taken[0] + taken[1]) == ids
    assert all(taken)  # both took part
    leased = {message_id: f"w{k}" for k, mine in enumerate(taken) for message_id in mine}
    assert owners(store, ids) == [(State.SENDING, leased[m]) for m in ids]
    store.close()


def test_an_overlapping_claim_of_the_same_worker_and_lease_end_is_not_mistaken_for_this_one(
    two: tuple[SqlStore, SqlStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another claim by the same worker, with the same lease end, leases what this one chose:
    this one leased none of them and must not hand them out again (reading the leases back
    would find them "mine")."""
    first, second = two
    first.add_messages([new("m1"), new("m2")])
    taken: list[str] = []
    between(monkeypatch, lambda: taken.extend(c.message_id for c in grab(second, T0 + 9)))
    assert grab(first, T0 + 9) == []
    assert taken == ["m1", "m2"]


def test_what_is_chosen_again_under_the_lock_keeps_the_oldest_due_first(
    two: tuple[SqlStore, SqlStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = two
    first.add_messages([new("m5", at=T0 + 5), new("m6", at=T0 + 6)])

    def meanwhile() -> None:
        assert [c.message_id for c in grab(second, T0 + 9, 1, "w2")] == ["m5"]
        second.add_messages([new("m_early", at=T0 + 1)])

    between(monkeypatch, meanwhile)
    assert [c.message_id for c in grab(first, T0 + 9, 2)] == ["m_early", "m6"]


def test_a_message_deferred_to_later_meanwhile_is_not_leased_early(
    two: tuple[SqlStore, SqlStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = two
    first.add_messages([new("m1", "b@x.test")])

    def meanwhile() -> None:
        (claim,) = grab(second, T0 + 1, worker="w2")
        later = ("b@x.test", Outcome.RETRY, LATER, State.DEFERRED)
        second.record_attempts(
            [record(claim, later, state=State.DEFERRED, next_at=T0 + 600, worker="w2")]
        )

    between(monkeypatch, meanwhile)
    assert grab(first, T0 + 9) == []
    assert owners(first, ["m1"]) == [(State.DEFERRED, None)]


def test_a_lease_taken_over_is_no_longer_marked_started(url: str) -> None:
    store = open_store(url)
    try:
        store.add_messages([new("m1")])
        (gone,) = grab(store, T0, worker="w0", lease=10)
        assert store.mark_started([gone.seq], "w0", T0 + 1) == [True]
        (claim,) = grab(store, T0 + 20, worker="w1")
        assert claim.possible_duplicate
        with store._db.read() as conn:
            started = conn.execute(sa.select(messages.c.started_at)).scalar_one()
        assert started is None  # its new holder has not started it
    finally:
        store.close()
