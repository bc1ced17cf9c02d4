"""A claim on PostgreSQL in one statement: the channel's open check, the claimable messages
locked (FOR UPDATE SKIP LOCKED, one pick per state, each on its index), the lease set on the
oldest due of them, their unfinished recipients made `sending`, and the claims read back
(the messages' rows, their recipients, their contents), all one statement sent in autocommit:
one round trip, where the claim was twelve, a write transaction of eight (BEGIN, the
channel, three picks, the leasing UPDATE, the recipients' UPDATE, COMMIT) and a read
transaction of four (BEGIN, the recipients, the contents, COMMIT).
The answer comes in binary (`binary_rows`): the contents as their bytes, the recipients'
addresses as arrays.

Why the answer is right although every part of one statement sees the same snapshot:
- The picks lock the latest version of each row and check it again (READ COMMITTED); the
  leasing UPDATE works on that locked version, so `possible_duplicate` sees a started mark
  committed after the statement began.
- The recipients, pending and settled, are all the recipients' UPDATE's own rows (RETURNING),
  each on its latest version: the settled ones are written unchanged to be read so. (Read
  from the snapshot, a recipient that another worker's claim and settlement had delivered
  between this statement's start and its pick, its message deferred again, came back as
  neither pending nor settled: tests/integration/test_pg_claims.py.)

An error the server answered means nothing was leased (the statement is its own
transaction). A connection lost after the server committed, before the answer was read,
leaves the messages leased to a worker that never learns of them: each claim carries a
number its worker picked (`lease_id`, set on every message it leases but those it takes over
from a lease whose transaction had started: they may be in the hands of the worker that
held them, this one too), and on such an error the worker gives back the messages still
leased to it under that number and not marked started since (`give_back_lost`): right
after, and before its later claims until the claim is seen committed or its lease has run
out (the connection may have dropped while the server still ran it: `LostClaims`).

Side effects: the leases and the recipients' states, committed before the claims return.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from mailvia.domain.channel import ChannelState
from mailvia.domain.clock import Instant
from mailvia.domain.message import State
from mailvia.outbox.ports import Claim
from mailvia.store.claim_reads import LEASED, TERMINAL_SQL, claim_of
from mailvia.store.engine import binary_rows

_SENDING = State.SENDING.value
_RETURNED = ", ".join(f"messages.{name}" for name in LEASED)
_ANSWERED = ", ".join(f"l.{name}" for name in LEASED)


def _pick(state: State, due: str, order: str) -> str:
    """The channel's claimable messages in one state, oldest due first, locked; at most
    the limit (the open check is one test for the whole statement, made before the scan)."""
    return (
        f"SELECT seq, {order} AS due FROM messages"
        f" WHERE channel_id = %(channel)s AND state = '{state.value}' AND {due} <= %(now)s"
        " AND EXISTS (SELECT FROM channel_open)"
        f" ORDER BY {due}, seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
    )


def _claim_sql() -> str:
    waiting, late = State.QUEUED, State.DEFERRED
    return (
        "WITH channel_open AS ("
        " SELECT id FROM channels WHERE id = %(channel)s"
        f" AND state = '{ChannelState.ACTIVE.value}'"
        " AND (throttled_until IS NULL OR throttled_until <= %(now)s)"
        " AND (budget_wait_until IS NULL OR budget_wait_until <= %(now)s)),"
        f" waiting AS ({_pick(waiting, 'next_attempt_at', 'next_attempt_at')}),"
        f" late AS ({_pick(late, 'next_attempt_at', 'next_attempt_at')}),"
        f" expired AS ({_pick(State.SENDING, 'lease_expires_at', 'coalesce(next_attempt_at, 0)')}),"
        " picked AS (SELECT seq, due FROM"
        " (TABLE waiting UNION ALL TABLE late UNION ALL TABLE expired) AS c"
        " ORDER BY due, seq LIMIT %(limit)s),"
        # A lease that ran out while its transaction had started: the worker that held it
        # may have sent the message. One merely claimed was never sent.
        " leased AS (UPDATE messages SET possible_duplicate = messages.possible_duplicate"
        f" OR (messages.state = '{_SENDING}' AND messages.started_at IS NOT NULL),"
        # Taken over from a started lease, it may be in its worker's hands (the same worker's
        # too): no lease id, so never given back should this claim's answer be lost.
        f" state = '{_SENDING}', lease_owner = %(worker)s, lease_id = CASE"
        f" WHEN messages.state = '{_SENDING}' AND messages.started_at IS NOT NULL"
        " THEN NULL ELSE %(lease_id)s END,"
        " lease_expires_at = %(until)s, started_at = NULL"
        " FROM picked WHERE messages.seq = picked.seq"
        f" RETURNING {_RETURNED}, picked.due),"
        # Every recipient of the picked messages, on its latest version: the unfinished made
        # `sending`, the settled left as they are (a no-op write) and read back as they are.
        f" touched AS (UPDATE recipients SET state = CASE WHEN state IN ({TERMINAL_SQL})"
        f" THEN state ELSE '{_SENDING}' END, updated_at = CASE WHEN state IN ({TERMINAL_SQL})"
        " THEN updated_at ELSE %(now)s END"
        " WHERE message_seq IN (SELECT seq FROM picked)"
        " RETURNING message_seq, position, address, state)"
        f" SELECT {_ANSWERED}, t.addresses, t.states, mc.content"
        " FROM leased AS l"
        " LEFT JOIN (SELECT message_seq,"
        " array_agg(address ORDER BY position)"
        f" FILTER (WHERE state NOT IN ({TERMINAL_SQL})) AS addresses,"
        f" array_agg(state ORDER BY position) FILTER (WHERE state IN ({TERMINAL_SQL})) AS states"
        " FROM touched GROUP BY message_seq) AS t ON t.message_seq = l.seq"
        " LEFT JOIN message_contents AS mc ON mc.message_seq = l.seq"
        " ORDER BY l.due, l.seq"
    )


_CLAIM = _claim_sql()


def claim_leased(
    conn: sa.Connection,
    *,
    channel_id: str,
    now: Instant,
    limit: int,
    lease_until: Instant,
    worker: str,
    lease_id: int,
) -> list[Claim]:
    """Lease up to `limit` claimable messages of the channel to `worker`, under `lease_id`,
    and return their claims, oldest due first (as `OutboxStore.claim` says), in one
    statement on `conn` (an autocommit connection: the statement commits by itself)."""
    params = {
        "channel": channel_id,
        "now": float(now),
        "limit": int(limit),
        "worker": worker,
        "until": float(lease_until),
        "lease_id": int(lease_id),
    }
    return [_claim(row, worker) for row in binary_rows(conn, _CLAIM, params)]


def _claim(row: tuple[Any, ...], worker: str) -> Claim:
    """A row of the answer: the LEASED columns, then the pending addresses, the settled
    states and the contents."""
    addresses, states, content = row[len(LEASED) :]
    settled = [State(state) for state in states or ()]
    return claim_of(row[: len(LEASED)], addresses or (), settled, bytes(content), worker)
