"""Connection slots in SQL: a channel's `max_connections` shared by every worker.

A worker holds one row per connection it may have open to a channel. Taking slots frees
first those of workers that stopped beating (no beat since `alive_after`, or no row: they
went with their claims), then takes the lowest free numbers, no more than the worker's fair
share, all under the channel's row lock (PostgreSQL) or the write lock (SQLite), so two
workers never take the same room. The share is `limit` divided among the live workers at a
run's start (any of them may be about to ask), and among those that hold slots of the channel
or ask for them when a run grows (the others have shown they do not want it now).

A worker refused below its share leaves an ask: a row with a negative slot number, never
counted as a slot, refreshed each time it is refused and dropped once it has its share. A
worker holding more than its share among the workers that hold or ask sees it
(`excess_slots`) and gives the rest back (outbox/slots.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from mailvia.domain.clock import Instant
from mailvia.store.engine import Database
from mailvia.store.tables import channels, connection_slots, workers

cs, wk = connection_slots.c, workers.c


class SlotStore:
    """The connection-slot methods of the store (outbox/slots.py's port)."""

    _db: Database

    def take_slots(
        self,
        channel_id: str,
        worker: str,
        *,
        want: int,
        limit: int,
        now: Instant,
        alive_after: Instant,
        growing: bool = False,
        asked_after: Instant | None = None,
    ) -> list[int]:
        """Up to `want` more connection slots of the channel for `worker`, keeping every
        worker's together within `limit`, and this worker's within its fair share (`limit`
        divided among the live workers, rounded up), so that one busy worker does not keep
        the others from the channel. `growing` (a run that has mail for more connections
        than it holds): the share is counted among the live workers that hold slots of the
        channel or asked for some since `asked_after`, not every live one, so a worker alone
        with the channel's mail grows to `limit`. Refused below its share (others hold the
        rest), the worker leaves an ask; given its share, its ask goes. Returns the slot
        numbers taken (maybe none)."""
        with self._db.write() as conn:
            _lock_and_sweep(conn, channel_id, worker, alive_after)
            rows = _rows(conn, channel_id)
            taken = {slot for slot, _, _ in rows if slot >= 0}
            mine = sum(1 for slot, owner, _ in rows if slot >= 0 and owner == worker)
            if growing:  # the slots of dead workers were deleted above: holders are live
                live = len(_wanting(rows, worker, asked_after))
            else:
                live = _live_others(conn, worker, alive_after)
            share = -(-limit // (live + 1))  # each live worker's fair share, rounded up
            room = max(min(want, limit - len(taken), share - mine), 0)
            free = [n for n in range(limit) if n not in taken][:room]
            _insert_slots(conn, channel_id, worker, free, now)
            refused = len(free) < min(want, share - mine)
            _ask(conn, channel_id, worker, rows, now if refused else None)
            return free

    def excess_slots(
        self,
        channel_id: str,
        worker: str,
        *,
        limit: int,
        alive_after: Instant,
        asked_after: Instant,
    ) -> int:
        """How many of its slots of the channel `worker` holds beyond its fair share, when
        another live worker asked for slots since `asked_after` (else 0): `limit` divided
        among the live workers that hold slots of the channel or ask for them, this one
        too. A read."""
        with self._db.read() as conn:
            rows = _rows(conn, channel_id, alive_after=alive_after)
        if not any(slot < 0 and owner != worker and at >= asked_after for slot, owner, at in rows):
            return 0
        mine = sum(1 for slot, owner, _ in rows if slot >= 0 and owner == worker)
        share = -(-limit // (len(_wanting(rows, worker, asked_after)) + 1))
        return max(mine - share, 0)

    def give_slots(self, channel_id: str, worker: str, slots: Sequence[int]) -> None:
        """`worker` no longer holds these slots of the channel."""
        if not slots:
            return
        with self._db.write() as conn:
            conn.execute(
                connection_slots.delete().where(
                    cs.channel_id == channel_id, cs.worker == worker, cs.slot.in_(list(slots))
                )
            )


def _rows(
    conn: sa.Connection, channel_id: str, *, alive_after: Instant | None = None
) -> list[tuple[int, str, float]]:
    """The channel's slots and asks: (slot, worker, taken_at); an ask has slot < 0. With
    `alive_after`, only those of workers that beat since then."""
    query = sa.select(cs.slot, cs.worker, cs.taken_at).where(cs.channel_id == channel_id)
    if alive_after is not None:
        query = query.where(cs.worker.in_(sa.select(wk.id).where(wk.beat_at >= alive_after)))
    return [(int(slot), str(owner), float(at)) for slot, owner, at in conn.execute(query)]


def _wanting(
    rows: list[tuple[int, str, float]], worker: str, asked_after: Instant | None
) -> set[str]:
    """The other workers that hold slots of the channel or asked for some since
    `asked_after` (the asks of dead workers are deleted with their slots)."""
    return {
        owner
        for slot, owner, at in rows
        if owner != worker and (slot >= 0 or (asked_after is not None and at >= asked_after))
    }


def _ask(
    conn: sa.Connection,
    channel_id: str,
    worker: str,
    rows: list[tuple[int, str, float]],
    now: Instant | None,
) -> None:
    """Leave (or refresh) `worker`'s ask for slots of the channel as of `now`; None: drop it."""
    asks = {slot for slot, _, _ in rows if slot < 0}
    mine = [slot for slot, owner, _ in rows if slot < 0 and owner == worker]
    if mine and now is not None:
        conn.execute(
            connection_slots.update()
            .where(cs.channel_id == channel_id, cs.slot == mine[0])
            .values(taken_at=now)
        )
    elif mine:
        conn.execute(
            connection_slots.delete().where(cs.channel_id == channel_id, cs.slot.in_(mine))
        )
    elif now is not None:
        number = next(n for n in range(-1, -len(asks) - 2, -1) if n not in asks)
        row = {"channel_id": channel_id, "slot": number, "worker": worker, "taken_at": now}
        conn.execute(connection_slots.insert(), [row])


def forget_slots(conn: sa.Connection, worker: str) -> None:
    """Every slot of `worker` (it starts again, or stopped)."""
    conn.execute(connection_slots.delete().where(cs.worker == worker))


def _lock_and_sweep(
    conn: sa.Connection, channel_id: str, worker: str, alive_after: Instant
) -> None:
    """Lock the channel's row (PostgreSQL; SQLite's write lock is held already), then free
    the slots of the workers that stopped beating."""
    conn.execute(sa.select(channels.c.id).where(channels.c.id == channel_id).with_for_update())
    alive = sa.select(wk.id).where(wk.beat_at >= alive_after)
    conn.execute(
        connection_slots.delete().where(
            cs.channel_id == channel_id, cs.worker != worker, cs.worker.not_in(alive)
        )
    )


def _live_others(conn: sa.Connection, worker: str, alive_after: Instant) -> int:
    """How many other workers beat since `alive_after`."""
    count = conn.execute(
        sa.select(sa.func.count()).where(wk.beat_at >= alive_after, wk.id != worker)
    ).scalar_one()
    return int(count)


def _insert_slots(
    conn: sa.Connection, channel_id: str, worker: str, slots: list[int], now: Instant
) -> None:
    """Take the free `slots` of the channel for `worker` (none: no statement)."""
    if slots:
        conn.execute(
            connection_slots.insert(),
            [
                {"channel_id": channel_id, "slot": n, "worker": worker, "taken_at": now}
                for n in slots
            ],
        )
