"""A leased message's claim read back: its row's columns a claim needs, its recipients
(pending, or settled as they were), and its contents. Used after a SQLite claim's commit and
for a message added already leased (`add_leased`, both databases); PostgreSQL's claim reads
its claims within its one statement (store/claims_pg.py).

Side effects: none (reads).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mailvia.domain.message import TERMINAL, State
from mailvia.outbox.ports import Claim
from mailvia.store.engine import binary_rows
from mailvia.store.rows import among, chunks, literal_seqs
from mailvia.store.tables import message_contents, messages, recipients

_TERMINAL = sorted(s.value for s in TERMINAL)
m, r, mc = messages.c, recipients.c, message_contents.c


def read_claims(conn: sa.Connection, seqs: list[int], worker: str) -> list[Claim]:
    """Claims for leased messages, in the order of `seqs`: their rows (the LEASED columns),
    their recipients and their contents (one query each per BATCH, however many)."""
    pending: dict[int, list[str]] = defaultdict(list)
    settled: dict[int, list[State]] = defaultdict(list)
    contents: dict[int, bytes] = {}
    rows: dict[int, Any] = {}
    for part in chunks(seqs):
        for row in conn.execute(sa.select(*_LEASED_COLUMNS).where(among(m.seq, part))):
            rows[row.seq] = row
        contents.update(_contents(conn, part))
        query = (
            sa.select(r.message_seq, r.address, r.state)
            .where(among(r.message_seq, part))
            .order_by(r.message_seq, r.position)
        )
        for seq, address, state in conn.execute(query):
            if state in _TERMINAL:
                settled[seq].append(State(state))
            else:
                pending[seq].append(address)
    return [claim_of(rows[seq], pending[seq], settled[seq], contents[seq], worker) for seq in seqs]


# What a claim reads of a leased message's row, in this order (here, and in PostgreSQL's claim
# statement, store/claims_pg.py), unpacked as a tuple (a Row's attribute look-up by name costs
# about half a microsecond each, 13 per claimed message).
LEASED = (
    "id",
    "seq",
    "organization_id",
    "channel_id",
    "mail_from",
    "failures",
    "created_at",
    "expires_at",
    "possible_duplicate",
)
_LEASED_COLUMNS = [messages.c[name] for name in LEASED]
# The terminal states as an SQL list, for the claims' statements written as text.
TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL, key=lambda s: s.value))


def claim_of(
    row: Sequence[Any],
    pending: Sequence[str],
    settled: Sequence[State],
    content: bytes,
    worker: str,
) -> Claim:
    """A leased message's claim: its row's LEASED columns, in that order, its pending
    addresses and settled recipients' states (by position), its contents."""
    message_id, seq, organization_id, channel_id, mail_from, *rest = row
    failures, created_at, expires_at, possible_duplicate = rest
    return Claim(
        message_id=message_id,
        seq=seq,
        organization_id=organization_id,
        channel_id=channel_id,
        mail_from=mail_from,
        pending=tuple(pending),
        settled=tuple(settled),
        content=content,
        failures=failures,
        created_at=created_at,
        expires_at=expires_at,
        possible_duplicate=bool(possible_duplicate),
        worker=worker,
    )


def _contents(conn: sa.Connection, seqs: Sequence[int]) -> dict[int, bytes]:
    """The messages' bytes, by seq (on PostgreSQL read in binary: `binary_rows`)."""
    if conn.dialect.name == "postgresql":
        sql = "SELECT message_seq, content FROM message_contents WHERE message_seq IN "
        sql += literal_seqs(seqs)
        return {seq: bytes(content) for seq, content in binary_rows(conn, sql)}
    query = sa.select(mc.message_seq, mc.content).where(among(mc.message_seq, seqs))
    return {seq: bytes(content) for seq, content in conn.execute(query)}
