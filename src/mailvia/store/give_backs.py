"""Claimed messages given back unsent: by their worker (`unclaim`), after a SQLite claim's
read failed, and after a PostgreSQL claim whose answer was lost (`LostClaims`: the claims
that may have leased messages their worker never learnt of, by the number each carried).

Side effects: the messages' and recipients' rows (inside the caller's write transaction).
"""

from __future__ import annotations

import threading

import sqlalchemy as sa

from mailvia.domain.clock import Instant
from mailvia.domain.message import State
from mailvia.store.rows import among, chunks
from mailvia.store.tables import messages, recipients

m, r = messages.c, recipients.c
Lost = dict[tuple[str, int], Instant]  # (worker, lease id) -> when the claim's lease ends


def give_back(
    conn: sa.Connection, worker: str, which: sa.ColumnElement[bool], state: State, now: Instant
) -> list[int]:
    """Those of the messages `which` selects that are still leased to `worker` (locked,
    then checked on their latest version) and their `sending` recipients become `state`,
    lease cleared, due when they were or now if that was later. Returns their seqs."""
    mine = (
        sa.select(m.seq)
        .where(which, m.state == State.SENDING.value, m.lease_owner == worker)
        .with_for_update()
    )
    held = list(conn.execute(mine).scalars())
    for part in chunks(held):
        _back(conn, list(part), state, now)
    return held


def _back(conn: sa.Connection, seqs: list[int], state: State, now: Instant) -> None:
    conn.execute(
        messages.update()
        .where(among(m.seq, seqs))
        .values(
            state=state.value,
            # Never pushed past now: a run that gives back claims (at shutdown, or its budget
            # spent) must not put them behind mail submitted since.
            next_attempt_at=sa.case(
                (
                    sa.and_(m.next_attempt_at.is_not(None), m.next_attempt_at < now),
                    m.next_attempt_at,
                ),
                else_=now,
            ),
            lease_owner=None,
            lease_expires_at=None,
            started_at=None,
            lease_id=None,
        )
    )
    conn.execute(
        recipients.update()
        .where(among(r.message_seq, seqs), r.state == State.SENDING.value)
        .values(state=state.value, updated_at=now)
    )


def give_back_lost(conn: sa.Connection, lost: Lost, now: Instant) -> tuple[int, Lost]:
    """The messages still leased to their worker under the lost claims `lost`, and not marked
    started, queued again: none is in a worker's hands. Not one those claims took over from a
    started lease (it may be in the hands of the worker that held it: the claim set no lease
    id on it), nor one a later claim took (it carries that claim's number), nor one marked
    started since (its worker held it from an earlier claim). Returns how many were given
    back, and the claims to try again: those not seen to have committed (the connection may
    have dropped while the server still ran the claim, which may commit later)."""
    count, again = 0, dict(lost)
    for worker in {worker for worker, _ in lost}:
        mine = [lease_id for each, lease_id in lost if each == worker]
        held = sa.and_(
            m.lease_id.in_(mine), m.state == State.SENDING.value, m.lease_owner == worker
        )
        # Seen before the give-back: a claim that commits between the two is tried again.
        for lease_id in conn.execute(sa.select(m.lease_id).where(held).distinct()).scalars():
            del again[(worker, lease_id)]
        which = sa.and_(m.lease_id.in_(mine), m.started_at.is_(None))
        count += len(give_back(conn, worker, which, State.QUEUED, now))
    return count, again


class LostClaims:
    """The claims of this store whose outcome is unknown (the connection was lost with the
    statement maybe sent), until their messages are given back or their leases have run out
    (the messages are then claimable by anyone). Thread-safe: a store process makes several
    calls at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lost: Lost = {}

    def add(self, worker: str, lease_id: int, until: Instant) -> None:
        with self._lock:
            self._lost[(worker, lease_id)] = until

    def take(self, now: Instant) -> Lost:
        """Every lost claim whose lease has not run out at `now`, now this caller's to give
        back (or to `keep` again); the others are dropped."""
        with self._lock:
            lost, self._lost = self._lost, {}
        return {claim: until for claim, until in lost.items() if until > now}

    def keep(self, lost: Lost) -> None:
        """Lost claims to try again."""
        with self._lock:
            self._lost.update(lost)

    def __bool__(self) -> bool:
        return bool(self._lost)
