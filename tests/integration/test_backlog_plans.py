"""A large backlog stays cheap: every statement the dispatcher runs to find, claim and
expire mail reads an index range, never the whole messages table, on SQLite and PostgreSQL
(EXPLAIN; on PostgreSQL with sequential scans priced out, so a small test table still shows
whether an index can serve), also after an ANALYZE that saw only queued mail (SQLite then
prices an index on `state` as useless). Full-size timings: bench/backlog.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from mailvia.domain.message import State
from mailvia.store import SqlStore, migrate, open_store
from support.plans import statements, whole_table_reads
from support.rows import T0, channel, new


@pytest.fixture
def store(migrated_store_url: str) -> Iterator[SqlStore]:
    from mailvia.domain.tenancy import Role, User

    migrate(migrated_store_url)
    s = open_store(migrated_store_url)
    s.create_organization("org_1", "acme", T0)
    s.create_team("team_1", "org_1", "sales", T0)
    s.create_user(
        User("usr_1", "org_1", "team_1", "j@acme.test", Role.ADMIN), password_hash="h", now=T0
    )
    s.add_channel(channel("ch_a", "relay"), None, T0)
    s.add_messages([new(f"m{i}", at=T0 + i % 7) for i in range(300)])
    with s._db.engine.begin() as conn:  # statistics that say every message is queued
        conn.exec_driver_sql("ANALYZE")
    yield s
    s.close()


@pytest.mark.parametrize(
    "name", ["channels_due", "next_due_at", "claim", "expire_due", "unclaim", "start_worker"]
)
def test_the_dispatchers_queries_read_index_ranges(store: SqlStore, name: str) -> None:
    now = T0 + 100
    claims = store.claim(channel_id="ch_a", now=now, limit=20, lease_until=now + 30, worker="w")
    calls: dict[str, Callable[[], object]] = {
        "channels_due": lambda: store.channels_due(now),
        "next_due_at": store.next_due_at,
        "claim": lambda: store.claim(
            channel_id="ch_a", now=now, limit=20, lease_until=now + 30, worker="w"
        ),
        "expire_due": lambda: store.expire_due(now, "w"),
        "unclaim": lambda: store.unclaim(claims, state=State.QUEUED, now=now),
        "start_worker": lambda: store.start_worker("w", now, host="h", pid=1),
    }
    seen = statements(store, calls[name])
    assert seen, "no statement ran"
    assert whole_table_reads(store, seen, ("messages",)) == []
