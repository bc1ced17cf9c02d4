"""A long history stays cheap for intake: every statement that accepting a message runs (the
token, the sender's rights and route, the channel's backlog and budget window, idempotency
keys, the insert) and that settling it runs (the budget ledger, the attempt and its event)
reads an index range, never a whole table that grows with the mail delivered, on SQLite and
PostgreSQL (EXPLAIN; on PostgreSQL with sequential scans priced out, so a small test table
still shows whether an index can serve). Full-size timings: bench/api.py --history."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from mailvia.domain.channel import Budget, Unit
from mailvia.domain.message import State
from mailvia.outbox.submit import Submitter
from mailvia.outbox.tokens import ApiTokens
from mailvia.store import SqlStore
from support.plans import statements, whole_table_reads
from support.rows import T0, channel, new, record, seeded, sent, submission

# The tables that grow with every message delivered.
HISTORY = ("messages", "recipients", "attempts", "events", "channel_usage", "budget_windows")
BUDGETS = (Budget(10_000, 86_400.0), Budget(500, 3_600.0, Unit.RECIPIENTS))


@pytest.fixture
def store(migrated_store_url: str) -> Iterator[SqlStore]:
    s = seeded(migrated_store_url, channel("ch_a", "relay", budgets=BUDGETS))
    # A history: delivered messages with idempotency keys, their attempts and events.
    s.add_messages(
        [new(f"old{i}", at=T0 + i, idempotency_key=f"k{i}", request_hash="h") for i in range(200)]
    )
    claims = s.claim(channel_id="ch_a", now=T0 + 300, limit=200, lease_until=T0 + 400, worker="w1")
    s.record_attempts(
        [record(c, sent("bob@example.test"), state=State.DELIVERED, at=T0 + 301) for c in claims]
    )
    yield s
    s.close()


def submitter(store: SqlStore) -> Submitter:
    return Submitter(store, pool=lambda: None)


def test_accepting_a_message_reads_index_ranges(store: SqlStore) -> None:
    user = store.get_user("usr_1")
    token = ApiTokens(store).create("jane@acme.test", "api", T0)
    now = T0 + 600

    def accept() -> None:
        ApiTokens(store).authenticate(token)
        submitter(store).check_sender(user, "jane@acme.test")
        submitter(store).submit(user, [submission("fresh"), submission()], now=now)
        submitter(store).submit(user, [submission("fresh")], now=now)  # a replay

    seen = statements(store, accept)
    assert any("idempotency_key" in s for s, _ in seen), "the key lookup did not run"
    assert any("count(" in s.lower() for s, _ in seen), "the backlog count did not run"
    assert any("budget_end" in s for s, _ in seen), "the budget window was not read"
    assert whole_table_reads(store, seen, HISTORY) == []


def test_settling_a_message_reads_index_ranges(store: SqlStore) -> None:
    user = store.get_user("usr_1")
    now = T0 + 600
    submitter(store).submit(user, [submission()], now=now)
    ledger = store.budget_ledger("ch_a", BUDGETS)

    def settle() -> None:
        [claim] = store.claim(
            channel_id="ch_a", now=now, limit=10, lease_until=now + 30, worker="w2"
        )
        seq, wait = ledger.take(now, 1, start=(claim.seq, "w2"))
        assert seq is not None and wait is None
        store.record_attempts(
            [record(claim, sent("bob@example.test"), state=State.DELIVERED, worker="w2")]
        )
        ledger.finish([(seq, now + 1)])

    seen = statements(store, settle)
    assert any("channel_usage" in s for s, _ in seen), "the ledger did not run"
    assert whole_table_reads(store, seen, HISTORY) == []


def test_a_submit_looks_everything_up_in_one_read_transaction(store: SqlStore) -> None:
    """Routing, the sender's rights, the backlog and the budget window: one snapshot, then
    the commit (each transaction costs a BEGIN and a COMMIT, per message over the API)."""
    user = store.get_user("usr_1")
    begun: list[str] = []

    def begin(conn: sa.Connection) -> None:
        begun.append("write" if conn.get_execution_options().get("mailvia_write") else "read")

    event.listen(store._db.engine, "begin", begin)
    try:
        [receipt] = submitter(store).submit(user, [submission("one")], now=T0 + 600)
    finally:
        event.remove(store._db.engine, "begin", begin)
    assert receipt.created and receipt.queued_ahead == 0
    assert begun == ["read", "write"]
