"""The dispatcher's look for mail due (`channels_due`, `next_due_at`: serve wakes its worker
process after every intake's commit, and each wake makes it): statements built once, the
time bound at each call, on SQLite and PostgreSQL. Built anew per call, building and keying
them took about three times as long as running them on SQLite (the look's CPU 3.1 ms built per
call, 0.83 ms built once: docs/benchmarks.md, branch `look`, session 12)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from mailvia.store import SqlStore
from support.rows import T0, channel, new, seeded


@pytest.fixture
def store(migrated_store_url: str) -> Iterator[SqlStore]:
    s = seeded(migrated_store_url, channel("ch_a", "relay"))
    s.add_messages([new(f"m{i}", at=T0 + 10 + i) for i in range(3)])  # due T0+10 .. T0+12
    yield s
    s.close()


def _executed(store: SqlStore, *calls: Any) -> list[list[Any]]:
    """The statement objects each call executed."""
    seen: list[Any] = []

    def note(conn: Any, clause: Any, *args: Any) -> None:
        seen.append(clause)

    per_call = []
    sa.event.listen(store._db.engine, "before_execute", note)
    try:
        for call in calls:
            seen.clear()
            call()
            per_call.append(list(seen))
    finally:
        sa.event.remove(store._db.engine, "before_execute", note)
    return per_call


def test_the_look_runs_the_same_statements_at_every_call(store: SqlStore) -> None:
    first, second = _executed(
        store, lambda: store.channels_due(T0), lambda: store.channels_due(T0 + 20)
    )
    assert first and all(a is b for a, b in zip(first, second, strict=True))
    first, second = _executed(store, store.next_due_at, store.next_due_at)
    assert first and all(a is b for a, b in zip(first, second, strict=True))


def test_the_look_answers_for_the_time_it_is_given(store: SqlStore) -> None:
    assert store.channels_due(T0) == []
    assert store.channels_due(T0 + 10) == ["ch_a"]
    assert store.channels_due(T0 + 9.5) == []  # not the time of an earlier call
    assert store.next_due_at() == T0 + 10
    store.set_channel_throttle("ch_a", T0 + 50, 1)
    assert store.channels_due(T0 + 20) == []  # throttled then
    assert store.channels_due(T0 + 50) == ["ch_a"]
    assert store.channels_due(T0 + 49) == []
    assert store.next_due_at() == T0 + 50  # the throttle's end, not the mail's due time
