"""A claim's leasing on SQLite, the part made under the write lock: messages chosen earlier,
in a read snapshot (`OutboxStore._lease_chosen`), leased to a worker by an UPDATE that re-checks
each one is still claimable, and their unfinished recipients made `sending`.

Why in two steps: an intake (a message being accepted, its caller waiting) waits for the
write transaction under way, and a claim that chose its messages under the lock held it
~2 ms longer (the channel's check and a query per state) for every claim (docs/benchmarks.md, branch
`claimlock`). Choosing in a snapshot is safe because the UPDATE's WHERE is the claim's rule
itself, checked on each row as it is now: a message another process leased, settled, held
or cancelled meanwhile is skipped, never leased twice (SQLite's write lock makes the UPDATE
one atomic step across processes).

Side effects: the messages' and recipients' rows (inside the caller's write transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from mailvia.domain.channel import ChannelState
from mailvia.domain.clock import Instant
from mailvia.domain.message import State
from mailvia.store.claim_reads import TERMINAL_SQL
from mailvia.store.rows import chunks, literal_seqs

_SENDING, _QUEUED, _DEFERRED = State.SENDING.value, State.QUEUED.value, State.DEFERRED.value
_ACTIVE = ChannelState.ACTIVE.value

# Claimable now: waiting and due, or `sending` under a lease that ran out; its channel active
# and not throttled or waiting for its budget. The `+` keeps SQLite on the seqs' rowids: with
# bare indexed columns in an OR it read every waiting message through the state indexes (a
# MULTI-INDEX OR, 5 ms for 200 seqs among 20,000 waiting, against 1.6 ms).
_STILL_CLAIMABLE = (
    f"((+state IN ('{_QUEUED}', '{_DEFERRED}') AND +next_attempt_at <= :now)"
    f" OR (+state = '{_SENDING}' AND +lease_expires_at <= :now))"
    f" AND EXISTS (SELECT 1 FROM channels WHERE id = :channel AND state = '{_ACTIVE}'"
    " AND (throttled_until IS NULL OR throttled_until <= :now)"
    " AND (budget_wait_until IS NULL OR budget_wait_until <= :now))"
)
# A lease that ran out while its transaction had started: the worker that held it may have
# sent the message (possible_duplicate). One merely claimed was never sent. SET reads the row
# as it was before the UPDATE.
_LEASE = (
    "UPDATE messages SET"
    f" possible_duplicate = (possible_duplicate OR (state = '{_SENDING}'"
    " AND started_at IS NOT NULL)),"
    f" state = '{_SENDING}', lease_owner = :worker, lease_expires_at = :until, started_at = NULL"
    f" WHERE seq IN %s AND +channel_id = :channel AND {_STILL_CLAIMABLE}"
)
_RECIPIENTS = (
    f"UPDATE recipients SET state = '{_SENDING}', updated_at = :now"
    f" WHERE message_seq IN %s AND state NOT IN ({TERMINAL_SQL})"
)


@dataclass(frozen=True)
class Lease:
    """Whose lease, on which channel's mail, claimable as of when, and until when."""

    worker: str
    channel_id: str
    now: Instant
    until: Instant


def lease_still_claimable(conn: sa.Connection, seqs: Sequence[int], lease: Lease) -> list[int]:
    """Lease those of `seqs` that are still claimable (as of `lease.now`) to the worker:
    `sending`, lease_owner and lease_expires_at set, started_at cleared. Returns those
    leased, in the order of `seqs`. The recipients are left to `recipients_sending`.

    No RETURNING when every one was leased (the common case): rows handed back one by one
    are a step each, and each step gives up the GIL, which another thread of the process
    (the store process runs four) may then hold for up to its switch interval, all while
    this transaction holds the write lock (200 rows RETURNING took 6.8 ms against 1.3 ms
    without, beside one busy thread). When fewer were, the UPDATE is undone to a savepoint
    and made again RETURNING which: the same rows (nothing else writes while the lock is
    held), and exactly this claim's, where reading back the leases would also find those
    an overlapping claim of the same worker and lease end had made."""
    params = {"worker": lease.worker, "until": lease.until, "channel": lease.channel_id}
    params["now"] = lease.now
    leased: list[int] = []
    for part in chunks(seqs):
        update = _LEASE % literal_seqs(part)
        conn.exec_driver_sql("SAVEPOINT lease")
        if conn.exec_driver_sql(update, params).rowcount == len(part):
            conn.exec_driver_sql("RELEASE lease")
            leased += part
            continue
        conn.exec_driver_sql("ROLLBACK TO lease")
        mine = {seq for (seq,) in conn.exec_driver_sql(update + " RETURNING seq", params)}
        conn.exec_driver_sql("RELEASE lease")
        leased += [seq for seq in part if seq in mine]
    return leased


def recipients_sending(conn: sa.Connection, seqs: Sequence[int], now: Instant) -> None:
    """The leased messages' unfinished recipients become `sending`."""
    for part in chunks(seqs):
        conn.exec_driver_sql(_RECIPIENTS % literal_seqs(part), {"now": now})
