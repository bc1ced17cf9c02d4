"""A PostgreSQL claim whose answer is lost (store/claims_pg.py, store/give_backs.py): the
connection drops after the server committed the claim's one statement, before the worker read
its answer (a proxy, support/pg_proxy.py, swallows the answer and closes the connection), or
while the server still ran it. The worker gives back the messages leased under that claim's
number: on a new connection right after, and before its later claims until the claim is seen
committed or its lease has run out (the database out of reach, the claim committed late); never a
message another claim has since taken, nor one marked started, nor one the lost claim took
over from a started lease."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from mailvia.domain.errors import StoreUnavailable
from mailvia.store import SqlStore, open_store
from support.pg_proxy import PgProxy
from support.rows import T0, channel, grab, new, rows_of, seeded

pytestmark = [
    pytest.mark.postgres,
    # The proxy's threads end quietly when a socket closes under them.
    pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
]

CLAIM = "WITH channel_open AS"  # the claim's statement (store/claims_pg.py)


@pytest.fixture
def direct(pg_url: str) -> Iterator[SqlStore]:
    """A store straight on the database, with three queued messages on ch_a."""
    store = seeded(pg_url, channel("ch_a", "relay"))
    store.add_messages([new(f"m{i}") for i in range(3)])
    yield store
    store.close()


@pytest.fixture
def proxied(pg_url: str, direct: SqlStore) -> Iterator[tuple[PgProxy, SqlStore]]:
    """A store on the same database through the proxy."""
    with PgProxy(pg_url) as proxy:
        store = open_store(proxy.url)
        yield proxy, store
        store.close()
    assert proxy.running() == []  # its sockets closed, its threads ended


LEASES = "SELECT id, state, lease_owner, lease_id IS NOT NULL FROM messages ORDER BY id"


def test_a_claim_whose_answer_is_lost_gives_its_messages_back_at_once(
    pg_url: str, direct: SqlStore, proxied: tuple[PgProxy, SqlStore]
) -> None:
    proxy, store = proxied
    proxy.cut(CLAIM)
    with pytest.raises(StoreUnavailable):
        grab(store, limit=2)
    assert proxy.cuts == 1
    # The claim had committed (the proxy swallowed its answer after the server's
    # ReadyForQuery), and the two it leased are queued again, their lease number cleared.
    assert rows_of(pg_url, LEASES) == [
        ("m0", "queued", None, False),
        ("m1", "queued", None, False),
        ("m2", "queued", None, False),
    ]
    assert rows_of(pg_url, "SELECT DISTINCT state FROM recipients") == [("queued",)]
    claims = grab(direct, limit=3, worker="w2")  # claimable at once, by anyone
    assert [(c.message_id, c.possible_duplicate) for c in claims] == [
        ("m0", False),
        ("m1", False),
        ("m2", False),
    ]


def test_out_of_reach_they_are_given_back_before_the_next_claim(
    pg_url: str, proxied: tuple[PgProxy, SqlStore]
) -> None:
    proxy, store = proxied
    proxy.cut(CLAIM, then_refuse=True)
    with pytest.raises(StoreUnavailable):
        grab(store, limit=2)
    with pytest.raises(StoreUnavailable):  # still out of reach: the claim fails as well
        grab(store, limit=2)
    assert [row[:3] for row in rows_of(pg_url, LEASES)] == [
        ("m0", "sending", "w1"),
        ("m1", "sending", "w1"),
        ("m2", "queued", None),
    ]
    proxy.refusing = False
    claims = grab(store, T0 + 1, limit=3)  # long before the lease's end (T0 + 300)
    assert [c.message_id for c in claims] == ["m0", "m1", "m2"]


def test_only_the_lost_claims_messages_not_started_nor_taken_since(
    pg_url: str, direct: SqlStore, proxied: tuple[PgProxy, SqlStore]
) -> None:
    """The lost claim leased m0, m1 and m2 to w1. Before the database is back in reach, m0's
    lease runs out and the same worker's next claim (elsewhere) takes it under a number of its
    own, and m1 is marked started by w1 (as a worker does for a message it has in hand from
    an earlier claim whose lease had run out). Only m2 is given back."""
    proxy, store = proxied
    proxy.cut(CLAIM, then_refuse=True)
    with pytest.raises(StoreUnavailable):
        grab(store, limit=3, lease=5)
    (again,) = grab(direct, T0 + 6, limit=1)  # w1, another claim: m0, its lease run out
    assert again.message_id == "m0"
    [(m1,)] = rows_of(pg_url, "SELECT seq FROM messages WHERE id = 'm1'")
    assert direct.mark_started([m1], "w1", T0 + 6) == [True]
    proxy.refusing = False
    # The give-back, then nothing. Dated before the lost claim's lease ends, or its number
    # is dropped (its messages are claimable by anyone then): this store process's clock
    # behind the other's (another claim takes a lost claim's message only once its lease
    # has run out, by the taker's clock).
    assert grab(store, T0 + 4, limit=1, ch="ch_none") == []
    rows = rows_of(pg_url, "SELECT id, state, lease_owner FROM messages ORDER BY id")
    assert rows == [("m0", "sending", "w1"), ("m1", "sending", "w1"), ("m2", "queued", None)]
    assert direct.mark_started([again.seq], "w1", T0 + 8) == [True]  # still w1's to send


def test_never_a_message_the_lost_claim_took_over_from_a_started_lease(
    pg_url: str, direct: SqlStore, proxied: tuple[PgProxy, SqlStore]
) -> None:
    """w1 holds m0 from claim A and is sending it (marked started); A's lease runs out (its
    beats failed); w1's next claim B takes m0 over (flagged possible_duplicate, its started
    mark cleared) and B's answer is lost. m0 may be in w1's hands: it is not given back (it
    would be sent again by w2 while w1 sends it), but left to B's lease."""
    proxy, store = proxied
    (a,) = grab(direct, limit=1, lease=5)
    assert direct.mark_started([a.seq], "w1", T0 + 1) == [True]
    proxy.cut(CLAIM)
    with pytest.raises(StoreUnavailable):
        grab(store, T0 + 6, limit=2)  # B: m0 taken over, m1 claimed; the answer lost
    rows = rows_of(
        pg_url, "SELECT id, state, lease_owner, possible_duplicate FROM messages ORDER BY id"
    )
    assert rows == [
        ("m0", "sending", "w1", True),
        ("m1", "queued", None, False),
        ("m2", "queued", None, False),
    ]
    assert [c.message_id for c in grab(direct, T0 + 7, worker="w2")] == ["m1", "m2"]


def test_a_claim_that_commits_after_its_give_back_is_given_back_on_a_later_claim(
    pg_url: str, proxied: tuple[PgProxy, SqlStore]
) -> None:
    """The connection drops while the server still runs the claim (it waits for a lock held
    elsewhere): the give-back right after finds nothing; the claim then commits. Its number is
    kept, and the messages are given back before the worker's next claim, long before the
    lease's end."""
    proxy, store = proxied
    locker = sa.create_engine(pg_url)
    try:
        with locker.connect() as hold, hold.begin():
            hold.exec_driver_sql("SELECT * FROM recipients FOR UPDATE").all()
            proxy.cut(CLAIM, at_once=True)
            with pytest.raises(StoreUnavailable):
                grab(store, limit=2)
            assert [row[1] for row in rows_of(pg_url, LEASES)] == ["queued"] * 3
        # The lock released, the claim goes on and commits, leasing m0 and m1 to w1.
        deadline = time.monotonic() + 10
        while [row[1] for row in rows_of(pg_url, LEASES)][:2] != ["sending"] * 2:
            assert time.monotonic() < deadline, rows_of(pg_url, LEASES)
            time.sleep(0.05)
    finally:
        locker.dispose()
    claims = grab(store, T0 + 1, limit=3)  # the lease ends at T0 + 300
    assert [c.message_id for c in claims] == ["m0", "m1", "m2"]


GIVE_BACK = "SELECT DISTINCT messages.lease_id"  # give_back_lost's first statement


def test_a_give_back_that_keeps_failing_fails_no_claim(
    pg_url: str, proxied: tuple[PgProxy, SqlStore]
) -> None:
    """The lost claim's give-back loses its connection each time it is tried: the worker's
    claims go on meanwhile (the lost claim's messages stay leased), and once it can run it
    gives them back."""
    proxy, store = proxied
    proxy.cut(CLAIM, then_refuse=True)
    with pytest.raises(StoreUnavailable):
        grab(store, limit=2)
    proxy.refusing = False
    proxy.cut(GIVE_BACK)
    assert [c.message_id for c in grab(store, T0 + 1, limit=3)] == ["m2"]
    proxy.cut(GIVE_BACK)
    assert grab(store, T0 + 2, limit=3) == []
    assert proxy.cuts == 3
    assert [c.message_id for c in grab(store, T0 + 3, limit=3)] == ["m0", "m1"]


def test_a_refused_connection_leaves_nothing_to_give_back(
    proxied: tuple[PgProxy, SqlStore],
) -> None:
    """The database out of reach, a claim that could not connect sent nothing: no give-back
    is tried (it would double each claim's wait for the connection)."""
    proxy, store = proxied
    proxy.refusing = True
    for at in (T0, T0 + 1):
        with pytest.raises(StoreUnavailable):
            grab(store, at, limit=2)
    assert proxy.refused == 2  # the claims' connections, none for a give-back


def test_the_broken_connection_is_not_put_back_in_the_pool(
    proxied: tuple[PgProxy, SqlStore], caplog: pytest.LogCaptureFixture
) -> None:
    """The claim's statement, read in binary past SQLAlchemy (engine.binary_rows), breaks its
    connection: it is invalidated, as SQLAlchemy does for its own statements, not returned to
    the pool to fail its reset there."""
    proxy, store = proxied
    proxy.cut(CLAIM)
    caplog.set_level(logging.WARNING, logger="sqlalchemy.pool")
    with pytest.raises(StoreUnavailable):
        grab(store, limit=2)
    pool = [r.getMessage() for r in caplog.records if r.name.startswith("sqlalchemy.pool")]
    assert pool == []  # not "Exception during reset or similar"


def test_an_error_the_server_answered_leaves_nothing_to_give_back(
    pg_url: str, direct: SqlStore
) -> None:
    """A claim the server itself refused (here its statement timeout, the messages'
    recipients locked by another transaction) leased nothing: no give-back is kept for it
    (each later claim would pay a write for it until the lease ran out)."""
    sep = "&" if "?" in pg_url else "?"
    store = open_store(f"{pg_url}{sep}options=-c%20statement_timeout%3D300")
    holder = sa.create_engine(pg_url)
    try:
        with holder.connect() as conn:
            conn.exec_driver_sql("SELECT 1 FROM recipients FOR UPDATE").all()
            with pytest.raises(StoreUnavailable, match="statement timeout"):
                grab(store, limit=2)
        assert not store._lost_claims
        assert [c.message_id for c in grab(store, T0 + 1, limit=3)] == ["m0", "m1", "m2"]
    finally:
        holder.dispose()
        store.close()
