"""`Database.snapshot()` (store/engine.py): its read transaction begins with its first read
(one that reads nothing begins none), nested ones share it, an exception inside rolls it
back and leaves the thread free for a fresh one, and `read_one()` inside it reads in it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from mailvia.store import migrate, open_store
from mailvia.store.engine import Database

pytestmark = pytest.mark.timeout(60)
SELECT = sa.text("SELECT 1")


class Boom(Exception):
    pass


@pytest.fixture
def db(migrated_store_url: str) -> Iterator[Database]:
    migrate(migrated_store_url)
    store = open_store(migrated_store_url)
    yield store._db
    store.close()


@pytest.fixture
def seen(db: Database) -> Iterator[list[str]]:
    """The transactions' begins, commits and rollbacks, in order."""
    happened: list[str] = []
    listeners = {
        name: (lambda conn, _name=name: happened.append(_name))
        for name in ("begin", "commit", "rollback")
    }
    for name, listener in listeners.items():
        event.listen(db.engine, name, listener)
    yield happened
    for name, listener in listeners.items():
        event.remove(db.engine, name, listener)


def test_a_snapshot_that_reads_nothing_begins_nothing(db: Database, seen: list[str]) -> None:
    with db.snapshot(), db.snapshot():
        pass
    assert seen == []


def test_a_nested_snapshot_whose_inner_one_reads_first_shares_one_transaction(
    db: Database, seen: list[str]
) -> None:
    with db.snapshot():
        with db.snapshot(), db.read() as inner:
            inner.execute(SELECT)
        with db.read() as outer:
            outer.execute(SELECT)
        assert outer is inner
        assert seen == ["begin"]  # the inner snapshot's end did not end it
    assert seen[0] == "begin" and len(seen) == 2


def test_read_one_inside_a_snapshot_reads_in_its_transaction(db: Database, seen: list[str]) -> None:
    with db.snapshot():
        with db.read_one() as first:  # the first read: begins the snapshot's transaction
            first.execute(SELECT)
        with db.read() as then:
            then.execute(SELECT)
        with db.read_one() as last:
            last.execute(SELECT)
    assert first is then is last
    assert seen[0] == "begin" and len(seen) == 2


def test_an_exception_inside_a_snapshot_rolls_it_back_and_clears_the_thread(
    db: Database, seen: list[str]
) -> None:
    with pytest.raises(Boom), db.snapshot():
        with db.read() as failed:
            failed.execute(SELECT)
        raise Boom
    assert seen == ["begin", "rollback"]
    assert getattr(db._pinned, "opened", None) is None
    assert getattr(db._pinned, "conn", None) is None
    with db.read() as fresh:  # a transaction of its own, not the rolled-back one
        fresh.execute(SELECT)
        assert fresh is not failed and fresh.in_transaction()
    assert seen[2] == "begin"
    with db.snapshot(), db.read() as again:
        again.execute(SELECT)
        assert again is not failed
