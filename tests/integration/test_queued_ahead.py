"""A receipt's `queued_ahead` without a COUNT per submit: the submitter counts a channel's
waiting messages in the store at most once a second, and adds what it commits itself in
between; another process's submissions and the deliveries show at the next count. On
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailvia.domain.clock import SteppingClock
from mailvia.domain.message import State
from mailvia.outbox.submit import Submitter
from mailvia.store import SqlStore
from support.rows import T0, channel, record, seeded, sent, submission


@pytest.fixture
def store(migrated_store_url: str) -> Iterator[SqlStore]:
    s = seeded(migrated_store_url, channel("ch_a", "relay"))
    yield s
    s.close()


def test_queued_ahead_counts_once_a_second_and_sees_others_at_the_next_count(
    store: SqlStore,
) -> None:
    counts: list[str] = []
    waiting_count = store.waiting_count

    def counted(channel_id: str) -> int:
        counts.append(channel_id)
        return waiting_count(channel_id)

    store.waiting_count = counted  # type: ignore[method-assign]
    user = store.get_user("usr_1")
    clock = SteppingClock(0.0)  # the submitters' monotonic clock: a count's age
    serve = Submitter(store, pool=lambda: None, ahead_clock=clock)
    other = Submitter(store, pool=lambda: None, ahead_clock=clock)
    ahead = [r.queued_ahead for r in serve.submit(user, [submission()] * 3, now=T0)]
    assert ahead == [0, 1, 2]
    clock.at(0.5)
    [fourth] = serve.submit(user, [submission()], now=T0 + 0.5)
    assert fourth.queued_ahead == 3 and counts == ["ch_a"]  # its own three, not counted again

    clock.at(0.6)
    other.submit(user, [submission()] * 2, now=T0 + 0.6)  # another process: 2 more
    clock.at(0.9)
    [fifth] = serve.submit(user, [submission()], now=T0 + 0.9)
    assert fifth.queued_ahead == 4  # not seen yet
    clock.at(1.0)
    [sixth] = serve.submit(user, [submission()], now=T0 + 1.0)
    assert sixth.queued_ahead == 7 and len(counts) == 3  # counted: 4 + 2 + its fifth

    claims = store.claim(channel_id="ch_a", now=T0 + 2, limit=5, lease_until=T0 + 60, worker="w1")
    store.record_attempts(
        [record(c, sent("bob@example.test"), state=State.DELIVERED, at=T0 + 2) for c in claims]
    )
    clock.at(2.5)
    [seventh] = serve.submit(user, [submission()], now=T0 + 2.5)
    assert seventh.queued_ahead == 8 - 5  # the five delivered left the queue
