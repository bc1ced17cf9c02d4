"""Connection slots in SQL: a channel's `max_connections` shared by every worker.

A worker holds one row per connection it may have open to a channel. Taking slots frees
first those of workers that stopped beating (no beat since `alive_after`, or no row: they
went with their claims), then takes the lowest free numbers, no more than the worker's fair
share, all under the channel's row lock (PostgreSQL) or the write lock (SQLite), so two
workers never take the same room. The share is `limit` divided among the live workers at a
run's start (any of them may be about to ask), and among those that hold slots of the channel
when a run grows (the others have shown they do not want it now).
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
    ) -> list[int]:
        """Up to `want` more connection slots of the channel for `worker`, keeping every
        worker's together within `limit`, and this worker's within its fair share (`limit`
        divided among the live workers, rounded up), so that one busy worker does not keep
        the others from the channel. `growing` (a run that has mail for more connections
        than it holds): the share is counted among the live workers that hold slots of the
        channel, not every live one, so a worker alone with the channel's mail grows to
        `limit`. Returns the slot numbers taken (maybe none)."""
        with self._db.write() as conn:
            conn.execute(
                sa.select(channels.c.id).where(channels.c.id == channel_id).with_for_update()
            )
            alive = sa.select(wk.id).where(wk.beat_at >= alive_after)
            conn.execute(
                connection_slots.delete().where(
                    cs.channel_id == channel_id, cs.worker != worker, cs.worker.not_in(alive)
                )
            )
            held = sa.select(cs.slot, cs.worker).where(cs.channel_id == channel_id)
            rows = conn.execute(held).all()
            taken = {slot for slot, _ in rows}
            mine = sum(1 for _, owner in rows if owner == worker)
            if growing:  # the slots of dead workers were deleted above: holders are live
                live = len({owner for _, owner in rows if owner != worker})
            else:
                live = conn.execute(
                    sa.select(sa.func.count()).where(wk.beat_at >= alive_after, wk.id != worker)
                ).scalar_one()
            share = -(-limit // (int(live) + 1))  # each live worker's fair share, rounded up
            room = max(min(want, limit - len(taken), share - mine), 0)
            free = [n for n in range(limit) if n not in taken][:room]
            if free:
                conn.execute(
                    connection_slots.insert(),
                    [
                        {"channel_id": channel_id, "slot": n, "worker": worker, "taken_at": now}
                        for n in free
                    ],
                )
            return free

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


def forget_slots(conn: sa.Connection, worker: str) -> None:
    """Every slot of `worker` (it starts again, or stopped)."""
    conn.execute(connection_slots.delete().where(cs.worker == worker))
