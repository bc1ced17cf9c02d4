"""A claim on PostgreSQL is one statement in autocommit (store/claims_pg.py): what it sends,
and that it keeps the claim's rules where several workers claim at once: rows another
transaction holds are skipped without waiting, claims made at the same moment are disjoint,
the oldest due go first whatever their state, a started lease taken over is flagged, and
recipients already settled are left as they were."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from mailvia.domain.errors import StoreUnavailable
from mailvia.domain.message import State
from mailvia.domain.replies import Outcome, Reply
from mailvia.store import open_store
from support.rows import LATER, T0, channel, grab, new, record, rows_of, seeded, sent

pytestmark = pytest.mark.postgres


def test_a_claim_is_one_statement_in_autocommit_committed_when_it_returns(pg_url: str) -> None:
    store = seeded(pg_url, channel("ch_a", "relay"))
    store.add_messages([new(f"m{i}") for i in range(3)])
    sent_: list[tuple[str, bool]] = []

    def before(conn: sa.Connection, _cursor: Any, sql: str, *_rest: Any) -> None:
        sent_.append((sql, bool(conn.connection.driver_connection.autocommit)))  # type: ignore[union-attr]

    event.listen(store._db.engine, "before_cursor_execute", before)
    try:
        claims = grab(store, limit=2)
    finally:
        event.remove(store._db.engine, "before_cursor_execute", before)
    assert [c.message_id for c in claims] == ["m0", "m1"]
    assert [autocommit for _, autocommit in sent_] == [True]  # no BEGIN, no COMMIT, no read
    leased = "SELECT id, state, lease_owner FROM messages ORDER BY id"
    assert rows_of(pg_url, leased) == [
        ("m0", "sending", "w1"),
        ("m1", "sending", "w1"),
        ("m2", "queued", None),
    ]


def test_a_failing_claim_leases_nothing(pg_url: str) -> None:
    """The statement is its own transaction: it fails whole (where the lease used to commit
    before a read that could fail, and had to be given back)."""
    store = seeded(pg_url, channel("ch_a", "relay"))
    store.add_messages([new("m1")])
    with store._db.write() as conn:
        conn.exec_driver_sql("ALTER TABLE message_contents RENAME TO message_contents_gone")
    with pytest.raises(StoreUnavailable):  # an outage, as any failing statement
        grab(store)
    assert rows_of(pg_url, "SELECT state, lease_owner FROM messages") == [("queued", None)]
    assert rows_of(pg_url, "SELECT state FROM recipients") == [("queued",)]
    with store._db.write() as conn:
        conn.exec_driver_sql("ALTER TABLE message_contents_gone RENAME TO message_contents")
    (claim,) = grab(store)
    assert claim.content == b"Subject: hi\r\n\r\nhello\r\n"


def test_rows_another_transaction_holds_are_skipped_without_waiting(pg_url: str) -> None:
    store = seeded(pg_url, channel("ch_a", "relay"))
    store.add_messages([new(f"m{i}") for i in range(3)])
    holder = sa.create_engine(pg_url)
    got: list[list[str]] = []
    try:
        with holder.begin() as conn:
            conn.exec_driver_sql("SELECT seq FROM messages WHERE id = 'm0' FOR UPDATE")
            # In a thread: were the claim to wait for m0's lock, it would wait for ever.
            claiming = threading.Thread(target=lambda: got.append(_ids(grab(store))))
            claiming.start()
            claiming.join(20)
            assert not claiming.is_alive()
        assert got == [["m1", "m2"]]
        assert _ids(grab(store, worker="w2")) == ["m0"]  # free once that transaction ended
    finally:
        holder.dispose()


def _ids(claims: list[Any]) -> list[str]:
    return [c.message_id for c in claims]


def _later(address: str) -> tuple[str, Outcome, Reply, State]:
    return (address, Outcome.RETRY, LATER, State.DEFERRED)


def test_claims_made_at_the_same_moment_are_disjoint(pg_url: str) -> None:
    """Eight stores (eight connections) claim together, round after round, queued, deferred
    and expired messages alike: no message goes to two of them, and none is left out."""
    store = seeded(pg_url, channel("ch_a", "relay"))
    store.add_messages([new(f"m{i:03}") for i in range(240)])
    grab(store, limit=40, worker="gone", lease=1)  # their leases run out at T0 + 1
    retried = grab(store, limit=40)
    store.record_attempts(
        [record(c, _later(c.pending[0]), state=State.DEFERRED, next_at=T0 + 1) for c in retried]
    )
    stores = [open_store(pg_url) for _ in range(8)]
    start = threading.Barrier(len(stores))
    taken: list[list[str]] = [[] for _ in stores]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            while True:
                start.wait(20)  # every round begins at once
                claims = grab(stores[index], now=T0 + 2, limit=9, worker=f"s{index}")
                taken[index].extend(_ids(claims))
                if not claims:
                    start.abort()  # the others stop at their next round
                    return
        except threading.BrokenBarrierError:
            return
        except BaseException as exc:  # reported below
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for s in stores:
        s.close()
    assert errors == []
    assert sum(1 for ids in taken if ids) > 1  # they did claim side by side
    # One store may find nothing while the others hold the last rows' locks: any left are
    # still claimable.
    every = [m for ids in taken for m in ids] + _ids(grab(store, now=T0 + 2, limit=240))
    assert sorted(every) == [f"m{i:03}" for i in range(240)]


def test_the_oldest_due_go_first_whatever_their_state(pg_url: str) -> None:
    """Queued, deferred and expired `sending` messages compete by due time (a leased
    message by its next attempt time), then by submission; a started lease taken over is
    flagged, one merely claimed is not; a settled recipient comes back settled and is not
    written; the others become `sending`."""
    store = seeded(pg_url, channel("ch_a", "relay"))
    store.add_messages(
        [
            new("started", at=T0 + 3),
            new("claimed", at=T0 + 3),
            new("retry", "ok@x.test", "slow@x.test", at=T0),
            new("fresh", at=T0 + 2),
            new("not_yet", at=T0 + 50),
        ]
    )
    (retry,) = grab(store, limit=1)
    store.record_attempts(
        [
            record(
                retry,
                sent("ok@x.test"),
                _later("slow@x.test"),
                state=State.DEFERRED,
                next_at=T0 + 4,
                failures=1,
            )
        ]
    )
    dead = grab(store, now=T0 + 3, limit=2, worker="dead", lease=2)  # its leases end at T0 + 5
    assert _ids(dead) == ["fresh", "started"]
    assert store.mark_started([dead[1].seq], "dead", T0 + 3) == [True]
    settled_row = "SELECT state, updated_at FROM recipients WHERE address = 'ok@x.test'"
    before = rows_of(pg_url, settled_row)

    claims = grab(store, now=T0 + 6, worker="w2")

    assert [(c.message_id, c.possible_duplicate) for c in claims] == [
        ("fresh", False),  # expired, its next attempt at T0 + 2
        ("started", True),  # expired, T0 + 3, seq 1
        ("claimed", False),  # queued, T0 + 3, seq 2
        ("retry", False),  # deferred, T0 + 4
    ]
    retried = claims[3]
    assert (retried.pending, retried.settled, retried.failures) == (
        ("slow@x.test",),
        (State.DELIVERED,),
        1,
    )
    assert rows_of(pg_url, settled_row) == before == [("delivered", before[0][1])]
    states = "SELECT m.id, r.state FROM recipients r JOIN messages m ON m.seq = r.message_seq"
    assert sorted(rows_of(pg_url, states)) == [
        ("claimed", "sending"),
        ("fresh", "sending"),
        ("not_yet", "queued"),
        ("retry", "delivered"),
        ("retry", "sending"),
        ("started", "sending"),
    ]
    owners = "SELECT id, lease_owner, lease_expires_at, started_at FROM messages ORDER BY id"
    assert rows_of(pg_url, owners) == [
        ("claimed", "w2", T0 + 306, None),
        ("fresh", "w2", T0 + 306, None),
        ("not_yet", None, None, None),
        ("retry", "w2", T0 + 306, None),
        ("started", "w2", T0 + 306, None),
    ]


PAUSE_KEY = 4_815_162  # the advisory lock a paused claim waits for between snapshot and picks


@contextmanager
def _paused_claim(store: Any, pg_url: str, *, now: float) -> Iterator[dict[str, list[Any]]]:
    """A claim by worker B whose statement takes its snapshot, then waits before its picks
    (for an advisory lock this test holds, taken in the open check), in a thread: what the
    `with` block commits lands between the snapshot and the locks. The lock is let go at the
    block's end; B's claims are then in the dict's "b". (The same statement as claims_pg's,
    but for the wait.)"""
    from mailvia.store import claims_pg
    from mailvia.store.engine import binary_rows

    paused = claims_pg._CLAIM.replace(
        "SELECT id FROM channels WHERE",
        f"SELECT id FROM channels, pg_advisory_xact_lock({PAUSE_KEY}) WHERE",
        1,
    )
    assert paused != claims_pg._CLAIM
    params = {"channel": "ch_a", "now": now, "limit": 10, "worker": "B", "until": now + 300}
    params["lease_id"] = 1
    out: dict[str, list[Any]] = {}

    def claim() -> None:
        with store._db.write_one() as conn:
            out["b"] = [claims_pg._claim(row, "B") for row in binary_rows(conn, paused, params)]

    holder = sa.create_engine(pg_url)
    thread = threading.Thread(target=claim)
    try:
        with holder.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PAUSE_KEY})")
            thread.start()
            _until_waiting_for_the_lock(conn)
            yield out
            conn.rollback()  # B's statement goes on to its picks
        thread.join(30)
        assert not thread.is_alive() and "b" in out, "the paused claim did not end"
    finally:
        holder.dispose()


def _until_waiting_for_the_lock(conn: sa.Connection) -> None:
    """Return once B's statement (snapshot taken) waits for the pause's lock."""
    waiting = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        f" AND objid = {PAUSE_KEY} AND database = (SELECT oid FROM pg_database"
        " WHERE datname = current_database())"
    )
    deadline = time.monotonic() + 30
    while not conn.exec_driver_sql(waiting).scalar_one():
        assert time.monotonic() < deadline, "the paused claim never reached its wait"
        time.sleep(0.01)


def test_recipients_settled_after_the_statement_began_come_back_settled(pg_url: str) -> None:
    """Another worker claims the message, delivers one recipient and defers it again, all
    between this claim's snapshot and its pick: the claim takes the message (its latest row
    is claimable) and must see that recipient as delivered, not lose it (a claim with one
    pending and nothing settled would make a later bounce of the other bounce the message)."""
    store = seeded(pg_url, channel("ch_a", "relay"))
    store.add_messages([new("m1", "ok@x.test", "slow@x.test")])
    (first,) = grab(store, worker="A")
    store.record_attempts(
        [
            record(
                first,
                _later("ok@x.test"),
                _later("slow@x.test"),
                state=State.DEFERRED,
                next_at=T0 + 2,
                worker="A",
            )
        ]
    )
    with _paused_claim(store, pg_url, now=T0 + 6) as out:
        (second,) = grab(store, T0 + 3, worker="C")
        store.record_attempts(
            [
                record(
                    second,
                    sent("ok@x.test"),
                    _later("slow@x.test"),
                    state=State.DEFERRED,
                    next_at=T0 + 4,
                    worker="C",
                )
            ]
        )
    (claim,) = out["b"]
    assert claim.pending == ("slow@x.test",)
    assert claim.settled == (State.DELIVERED,)
    assert rows_of(pg_url, "SELECT address, state FROM recipients ORDER BY position") == [
        ("ok@x.test", "delivered"),
        ("slow@x.test", "sending"),
    ]


def test_a_lease_marked_started_after_the_statement_began_is_flagged(pg_url: str) -> None:
    """The expired lease's holder marks the message started between this claim's snapshot
    and its pick: the leasing UPDATE sees the mark (the latest row) and flags the message."""
    store = seeded(pg_url, channel("ch_a", "relay"))
    store.add_messages([new("m1")])
    (first,) = grab(store, worker="A", lease=5)
    with _paused_claim(store, pg_url, now=T0 + 6) as out:
        store.mark_started([first.seq], "A", T0 + 5.5)
    (claim,) = out["b"]
    assert claim.possible_duplicate


@pytest.mark.parametrize(
    "shut",
    [
        {"state": "paused"},
        {"state": "disconnected"},
        {"budget_wait_until": T0 + 60},
        {"throttled_until": T0 + 60},
    ],
    ids=["paused", "disconnected", "budget-waiting", "throttled"],
)
def test_a_channel_not_open_gives_no_claim(pg_url: str, shut: dict[str, Any]) -> None:
    store = seeded(pg_url, channel("ch_a", "relay"))
    store.add_messages([new("m1")])
    with store._db.write() as conn:
        conn.execute(sa.text("UPDATE channels SET " + ", ".join(f"{k} = :{k}" for k in shut)), shut)
    assert grab(store) == []
    assert rows_of(pg_url, "SELECT state, lease_owner FROM messages") == [("queued", None)]
    if "state" not in shut:  # a wait that has passed opens it again
        assert _ids(grab(store, T0 + 61)) == ["m1"]
