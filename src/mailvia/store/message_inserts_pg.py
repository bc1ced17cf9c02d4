"""A group of new messages on PostgreSQL: each table's rows in one statement over arrays
(`INSERT ... SELECT FROM unnest(...) WITH ORDINALITY ORDER BY n`), every array sent in binary
(`%(name)b`, the contents as one `bytea[]`), three statements for a group instead of one
executemany per table (each row of which the server parsed, planned and executed) and a read
of the seqs: the messages' INSERT returns them.

A bind value may not exceed 1 GB on PostgreSQL: a group is written in parts of at most
`PART_BYTES` of contents (at least one message each), in order, so the seqs still rise in
the group's order.

Side effects: the rows, in the caller's write transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from mailvia.outbox.ports import NewMessage
from mailvia.store.pg_arrays import arrays, insert_unnest, typed
from mailvia.store.tables import message_contents, messages, recipients

PART_BYTES = 8 * 1024 * 1024  # a part's contents, well under PostgreSQL's 1 GB bind value

# Each table's columns filled from a group, in its rows' order, written once:
# message_inserts.py's SQLite INSERTs take the column names from here.
MESSAGE_COLUMNS = typed(
    messages,
    id="b_id",
    organization_id="b_org",
    user_id="b_user",
    channel_id="b_channel",
    mail_from="b_from",
    size="b_size",
    state="b_state",
    created_at="b_created",
    expires_at="b_expires",
    idempotency_key="b_key",
    request_hash="b_hash",
    test="b_test",
    subject="b_subject",
    next_attempt_at="b_next",
    failures="b_failures",
    possible_duplicate="b_duplicate",
)
CONTENT_COLUMNS = typed(message_contents, message_seq="b_seq", content="b_content")
RECIPIENT_COLUMNS = typed(
    recipients,
    message_seq="b_seq",
    position="b_position",
    address="b_address",
    state="b_state",
    updated_at="b_updated",
)
_INSERT_MESSAGES = insert_unnest("messages", MESSAGE_COLUMNS) + " RETURNING id, seq"
_INSERT_CONTENTS = insert_unnest("message_contents", CONTENT_COLUMNS)
_INSERT_RECIPIENTS = insert_unnest("recipients", RECIPIENT_COLUMNS)


def insert_arrays(
    conn: sa.Connection,
    msgs: Sequence[NewMessage],
    rows: Sequence[tuple[Any, ...]],
    recipient_rows: Callable[[list[int], Sequence[NewMessage]], list[tuple[Any, ...]]],
) -> list[int]:
    """Insert the messages (`rows`: each message's values in `MESSAGE_COLUMNS`' order),
    their contents and recipients (`recipient_rows(seqs, msgs)`: their rows in
    `RECIPIENT_COLUMNS`' order); their seqs, in order."""
    seqs: list[int] = []
    for start, end in _parts(msgs):
        part = msgs[start:end]
        found = conn.exec_driver_sql(_INSERT_MESSAGES, arrays(rows[start:end], MESSAGE_COLUMNS))
        seq_of = {message_id: int(seq) for message_id, seq in found}
        part_seqs = [seq_of[msg.id] for msg in part]
        contents = [(seq, msg.content) for seq, msg in zip(part_seqs, part, strict=True)]
        conn.exec_driver_sql(_INSERT_CONTENTS, arrays(contents, CONTENT_COLUMNS))
        recipients = recipient_rows(part_seqs, part)
        if recipients:
            conn.exec_driver_sql(_INSERT_RECIPIENTS, arrays(recipients, RECIPIENT_COLUMNS))
        seqs.extend(part_seqs)
    return seqs


def _parts(msgs: Sequence[NewMessage]) -> Iterator[tuple[int, int]]:
    """Consecutive (start, end) slices whose contents total at most PART_BYTES (a larger
    message alone)."""
    start, size = 0, 0
    for i, msg in enumerate(msgs):
        if i > start and size + len(msg.content) > PART_BYTES:
            yield start, i
            start, size = i, 0
        size += len(msg.content)
    if start < len(msgs):
        yield start, len(msgs)
