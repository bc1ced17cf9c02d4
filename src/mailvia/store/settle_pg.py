"""Recording attempts on PostgreSQL: each table's writes for a group of records in one
statement over arrays (`unnest`), so a group of 100 records is six statements (the messages,
their recipients, the untried recipients, the attempts, the events' advisory lock, the
events), not two hundred (an executemany of the attempts' and the events' rows ran one INSERT
per row on the server, each parsed, planned and executed: most of PostgreSQL's CPU for a
record). This module holds the messages' UPDATE; the others are store/settle.py's and
store/events.py's, the array helpers store/pg_arrays.py's.

The lease check is the messages' UPDATE itself: it sets the new states only where the message
is still leased to the record's worker (the rows it locks and changes are the ones whose
lease held, on the latest version of each row), ORs possible_duplicate with the stored flag,
and returns the seqs it changed; only those records' recipients, attempts and events are
written. Same outcome as reading the owners under FOR UPDATE first, one round trip fewer.

Side effects: the records' writes, in the caller's write transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import sqlalchemy as sa

from mailvia.outbox.ports import AttemptRecord
from mailvia.store.pg_arrays import arrays, typed, unnest_arrays
from mailvia.store.tables import messages

# What settling sets on a message, written once for both databases (settle.py's UPDATE on
# SQLite is built from it too): (column, bind parameter, PostgreSQL type from the table); a
# row gives the values, then the key. On PostgreSQL the lease owner rides along, for the
# lease check.
MESSAGE_KEY = typed(messages, seq="b_seq")
MESSAGE_SET = typed(
    messages,
    state="b_state",
    next_attempt_at="b_next",
    failures="b_failures",
    possible_duplicate="b_duplicate",
)
MESSAGE_CLEARED = ("lease_owner", "lease_expires_at", "started_at", "lease_id")
_LEASED = (*MESSAGE_KEY, *typed(messages, lease_owner="b_worker"), *MESSAGE_SET)


def _settle_messages() -> str:
    """The messages' UPDATE over arrays; possible_duplicate once true stays true."""
    unnest, binds = unnest_arrays(_LEASED)
    sets = [
        f"{column} = messages.{column} OR v.{bind}"
        if column == "possible_duplicate"
        else f"{column} = v.{bind}"
        for column, bind, _ in MESSAGE_SET
    ]
    sets += [f"{column} = NULL" for column in MESSAGE_CLEARED]
    return (
        f"UPDATE messages SET {', '.join(sets)}"
        f" FROM {unnest} AS v({binds})"
        " WHERE messages.seq = v.b_seq AND messages.lease_owner = v.b_worker"
        " RETURNING messages.seq"
    )


_SETTLE_MESSAGES = _settle_messages()


def settle_leased(
    conn: sa.Connection, records: Sequence[AttemptRecord], rows: list[tuple[Any, ...]]
) -> list[AttemptRecord]:
    """The messages' new states (`rows`: state, next_attempt_at, failures, the record's
    possible_duplicate, then seq, one per record) where each is still leased to its
    record's worker; the lease cleared. Returns the records whose message that was.

    The rows go in seq order, so the UPDATE meets and locks the messages in that order (as
    the read of the sorted seqs FOR UPDATE it replaced did, and as the marks go): two
    workers' groups never wait for each other's locks in a cycle (a deadlock)."""
    leased = sorted(
        ((seq, rec.worker, *values) for (*values, seq), rec in zip(rows, records, strict=True)),
        key=itemgetter(0),
    )
    kept = {seq for (seq,) in conn.exec_driver_sql(_SETTLE_MESSAGES, arrays(leased, _LEASED))}
    return [rec for rec in records if rec.claim.seq in kept]
