"""On SQLite, a worker's long writes let a waiting intake go first: a claim leases, and a
group of records settles, in parts, and when an intake (here: another 'process', its sign held
on a queue of its own) waits, each part commits and the rest follows in a new transaction;
the claim still returns the whole batch and every record and started mark is written. With
no intake waiting, one transaction as before."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from mailvia.domain.message import State
from mailvia.store import SqlStore
from mailvia.store.rows import INTAKE_PART, RECORDS_PART
from mailvia.store.writer_queue import WriterQueue
from support.databases import migrated_sqlite_file
from support.rows import T0, channel, new, record, seeded, sent


def _store(tmp_path: Path) -> tuple[SqlStore, Path]:
    db_file = migrated_sqlite_file(tmp_path / "mailvia.db")
    return seeded(f"sqlite:///{db_file}", channel("ch_a", "relay")), db_file


@contextmanager
def _intake_waiting(db_file: Path) -> Iterator[None]:
    """Another process's intake, signed as waiting for the whole block."""
    other = WriterQueue(db_file, give_way=0.001)
    other._sign(+1)
    try:
        yield
    finally:
        other._sign(-1)
        other.close()


@contextmanager
def _write_commits(store: SqlStore) -> Iterator[list[str]]:
    begun: list[str] = []

    def begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get("mailvia_write"):
            begun.append("write")

    event.listen(store._db.engine, "begin", begin)
    try:
        yield begun
    finally:
        event.remove(store._db.engine, "begin", begin)


def test_a_claim_commits_part_by_part_while_an_intake_waits(tmp_path: Path) -> None:
    store, db_file = _store(tmp_path)
    count = 2 * INTAKE_PART + 5
    store.add_messages([new(f"m{i}") for i in range(count)])
    with _intake_waiting(db_file), _write_commits(store) as begun:
        claims = store.claim(
            channel_id="ch_a", now=T0, limit=count, lease_until=T0 + 60, worker="w1"
        )
    assert [c.message_id for c in claims] == [f"m{i}" for i in range(count)]  # oldest first
    assert len(begun) == 3  # a transaction per part: the intake waited for one at a time
    assert all(store.get_message(f"m{i}").state is State.SENDING for i in range(count))
    store.close()


def test_a_claim_is_one_transaction_when_no_intake_waits(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    count = 2 * INTAKE_PART + 5
    store.add_messages([new(f"m{i}") for i in range(count)])
    with _write_commits(store) as begun:
        claims = store.claim(
            channel_id="ch_a", now=T0, limit=count, lease_until=T0 + 60, worker="w1"
        )
    assert len(claims) == count
    assert begun == ["write"]
    store.close()


def test_records_commit_part_by_part_while_an_intake_waits_the_marks_with_the_last(
    tmp_path: Path,
) -> None:
    store, db_file = _store(tmp_path)
    count = 2 * RECORDS_PART + 1
    store.add_messages([new(f"m{i}") for i in range(count + 1)])
    claims = store.claim(
        channel_id="ch_a", now=T0, limit=count + 1, lease_until=T0 + 60, worker="w1"
    )
    *done, ahead = claims
    store.mark_started([c.seq for c in done], "w1", T0)
    records = [record(c, sent("bob@example.test"), state=State.DELIVERED) for c in done]
    with _intake_waiting(db_file), _write_commits(store) as begun:
        held = store.mark_started([ahead.seq], "w1", T0 + 1, records=records)
    assert held == [True]
    assert len(begun) == 3
    assert all(store.get_message(c.message_id).state is State.DELIVERED for c in done)
    with store._db.read() as conn:
        attempts = conn.exec_driver_sql("SELECT count(*) FROM attempts").scalar_one()
        started = conn.exec_driver_sql(
            "SELECT started_at FROM messages WHERE seq = ?", (ahead.seq,)
        ).scalar_one()
    assert attempts == count
    assert started == T0 + 1
    store.close()
