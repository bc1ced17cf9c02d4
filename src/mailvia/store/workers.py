"""Dispatchers' heartbeats and the marks of started transactions, in SQL.

A worker's beat keeps its row's `beat_at` and extends the lease of every claim it has in
hand, so a claim lasts as long as its worker beats (and `lease_seconds` after the last beat). A
worker restarting under the same id gives its previous incarnation's claims back at once.
A message whose transaction has started (`started_at`) is flagged `possible_duplicate` when
another worker takes it over; one that was merely claimed is not.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from mailvia.domain.clock import Instant
from mailvia.domain.message import State
from mailvia.outbox.ports import AttemptRecord, WorkerView
from mailvia.store.engine import Database
from mailvia.store.rows import among, chunks, literal_seqs, marker
from mailvia.store.settle import record_in
from mailvia.store.slots import forget_slots
from mailvia.store.tables import messages, workers

m, wk = messages.c, workers.c
_SENDING = State.SENDING.value


def _upsert(
    conn: sa.Connection, worker: str, now: Instant, *, host: str, pid: int, restart: bool
) -> None:
    values: dict[str, object] = {"beat_at": now, "host": host, "pid": pid}
    if restart:
        values["started_at"] = now
    done = conn.execute(workers.update().where(wk.id == worker).values(**values))
    if not done.rowcount:
        conn.execute(workers.insert().values({"id": worker, "started_at": now, **values}))


class WorkerStore:
    """The worker methods of the Store port."""

    _db: Database

    def start_worker(self, worker: str, now: Instant, *, host: str, pid: int) -> int:
        """A dispatcher (re)starts as `worker`: its row is (re)made, and the messages its
        previous incarnation still held become claimable now (their lease ends now; a claim
        flags those whose transaction had started). Returns how many were given back."""
        with self._db.write() as conn:
            _upsert(conn, worker, now, host=host, pid=pid, restart=True)
            forget_slots(conn, worker)  # its previous run's connections are gone
            given = conn.execute(
                messages.update()
                .where(m.state == _SENDING, m.lease_owner == worker)
                .values(lease_expires_at=now)
            )
            return int(given.rowcount or 0)

    def beat(
        self,
        worker: str,
        now: Instant,
        *,
        lease_until: Instant,
        seqs: Sequence[int],
        host: str,
        pid: int,
    ) -> int:
        """The worker is alive at `now`: its row's beat_at, and the leases it still holds on
        `seqs` (the claims it has in hand) last until `lease_until`. A claim it no longer has
        in hand (lost to an error) is not extended and runs out. Returns how many leases
        were extended."""
        kept = 0
        with self._db.write() as conn:
            _upsert(conn, worker, now, host=host, pid=pid, restart=False)
            for part in chunks(sorted(set(seqs))):
                done = conn.execute(
                    messages.update()
                    .where(among(m.seq, part), m.state == _SENDING, m.lease_owner == worker)
                    .values(lease_expires_at=lease_until)
                )
                kept += int(done.rowcount or 0)
        return kept

    def stop_worker(self, worker: str) -> None:
        """The worker stopped cleanly (its claims were given back): forget its row."""
        with self._db.write() as conn:
            conn.execute(workers.delete().where(wk.id == worker))
            forget_slots(conn, worker)

    def list_workers(self) -> list[WorkerView]:
        """Every worker row, most recent beat first."""
        query = sa.select(wk.id, wk.host, wk.pid, wk.started_at, wk.beat_at).order_by(
            wk.beat_at.desc(), wk.id
        )
        with self._db.read() as conn:
            return [WorkerView(*row) for row in conn.execute(query)]

    def mark_started(
        self,
        seqs: Sequence[int],
        worker: str,
        now: Instant,
        *,
        records: Sequence[AttemptRecord] = (),
    ) -> list[bool]:
        """Mark that `worker` is about to start a transaction for each message (before SMTP
        MAIL or the API call), in one transaction, with `records` recorded in it too (as
        `record_attempts` does: one commit for a worker's marks and its records of the
        moment). Returns, per seq, whether the worker still holds the message's lease (if
        not, another worker has it: do not send)."""
        if not seqs and not records:
            return []
        if not records:
            # Marks alone: each statement marks its part and commits it (a part's marks
            # need not commit with another's); on PostgreSQL one round trip, not three.
            with self._db.write_one() as conn:
                held = mark_started(conn, seqs, worker, now)
            return [seq in held for seq in seqs]
        with self._db.write() as conn:
            record_in(conn, records)
            held = mark_started(conn, seqs, worker, now) if seqs else set()
        return [seq in held for seq in seqs]


def mark_started(conn: sa.Connection, seqs: Sequence[int], worker: str, now: Instant) -> set[int]:
    """Set started_at on the messages still leased to `worker`; returns their seqs. (Driver
    SQL: a statement per group of marks, made for every few messages sent.)"""
    held: set[int] = set()
    mark = marker(conn)
    for part in chunks(sorted(set(seqs))):
        marked = (
            f"UPDATE messages SET started_at = {mark} WHERE seq IN {literal_seqs(part)}"
            f" AND state = '{_SENDING}' AND lease_owner = {mark} RETURNING seq"
        )
        held.update(seq for (seq,) in conn.exec_driver_sql(marked, (now, worker)))
    return held
