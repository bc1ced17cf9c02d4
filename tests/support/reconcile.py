"""Reconciliation, the end of every reliability test: every accepted message is delivered,
bounced, expired or still pending in the store; every delivered one reached the receiving
server; and every copy the server got twice is of a message flagged possible_duplicate.

What the server got is read from the project's test server's `received.jsonl` (each line
names the stored file) by Message-ID; what the store says is read from its tables (the
Message-ID from each message's stored bytes). A copy is a duplicate only when it went to a
recipient that already had one: a message whose recipients were accepted in two
transactions (one deferred at RCPT, sent later) arrives twice, each once per recipient.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

PENDING = ("queued", "deferred", "held", "sending")
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def message_id_of(content: bytes) -> str:
    header = content.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    return str(_HEADERS.parsebytes(header).get("Message-ID", "")).strip()


def received_ids(maildir: Path) -> Counter[str]:
    """How often the test server stored each Message-ID (from its received.jsonl)."""
    counts: Counter[str] = Counter()
    for message_id, _ in _received(maildir):
        counts[message_id] += 1
    return counts


def received_copies(maildir: Path) -> Counter[tuple[str, str]]:
    """How many copies each (Message-ID, recipient) got at the test server."""
    counts: Counter[tuple[str, str]] = Counter()
    for message_id, rcpt_to in _received(maildir):
        for address in rcpt_to:
            counts[(message_id, address.lower())] += 1
    return counts


def _received(maildir: Path) -> list[tuple[str, list[str]]]:
    log = maildir / "received.jsonl"
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            path = Path(entry["file"])
            path = path if path.is_absolute() else maildir / path
            found.append((message_id_of(path.read_bytes()), list(entry["rcpt_to"])))
    return found


@dataclass(frozen=True)
class Stored:
    id: str
    state: str
    possible_duplicate: bool
    message_id: str


def stored_messages(db_url: str) -> dict[str, Stored]:
    """Every message in the store, by mailvia id (read straight from the tables)."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT id, state, possible_duplicate, content FROM messages"
                    " JOIN message_contents ON message_seq = seq"
                )
            ).all()
    finally:
        engine.dispose()
    return {
        row.id: Stored(row.id, row.state, bool(row.possible_duplicate), message_id_of(row.content))
        for row in rows
    }


@dataclass
class Reconciliation:
    accepted: int
    delivered: int
    bounced: int
    expired: int
    pending: int
    received: int  # copies at the server
    duplicates: int  # copies beyond the first, per recipient
    flagged: int  # accepted messages flagged possible_duplicate
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = (
            f"accepted {self.accepted} = delivered {self.delivered} + bounced {self.bounced} "
            f"+ expired {self.expired} + pending {self.pending}; received {self.received} "
            f"copies, {self.duplicates} duplicates, {self.flagged} flagged"
        )
        return "\n".join([head, *self.problems[:20]])


def reconcile(accepted: Iterable[str], db_url: str, maildir: Path) -> Reconciliation:
    """Account for every accepted message (its mailvia id). `problems` lists what does not
    add up: a message missing from the store or in another state, a delivered one the server
    never got, a copy of something never accepted, an unflagged duplicate."""
    ids = list(accepted)
    stored = stored_messages(db_url)
    got = received_ids(maildir)
    copies = received_copies(maildir)
    states = Counter(stored[i].state if i in stored else "missing" for i in ids)
    result = Reconciliation(
        accepted=len(ids),
        delivered=states["delivered"],
        bounced=states["bounced"],
        expired=states["expired"],
        pending=sum(states[s] for s in PENDING),
        received=sum(got.values()),
        duplicates=sum(n - 1 for n in copies.values() if n > 1),
        flagged=sum(1 for i in ids if i in stored and stored[i].possible_duplicate),
    )
    counted = result.delivered + result.bounced + result.expired + result.pending
    if counted != result.accepted:
        result.problems.append(f"unaccounted states: {dict(states)}")
    by_message_id = {stored[i].message_id: stored[i] for i in ids if i in stored}
    for message in by_message_id.values():
        if message.state == "delivered" and not got[message.message_id]:
            result.problems.append(f"lost: {message.id} is delivered but never arrived")
    for message_id in got:
        if message_id not in by_message_id:
            result.problems.append(f"arrived but never accepted: {message_id}")
    for (message_id, address), n in copies.items():
        message = by_message_id.get(message_id)
        if message is not None and n > 1 and not message.possible_duplicate:
            result.problems.append(
                f"unflagged duplicate: {message.id} arrived {n} times for {address}"
            )
    return result
