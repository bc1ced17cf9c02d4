"""The webhook part of the store, on SQLite and on PostgreSQL: subscriptions, deliveries queued
from the event stream after each webhook's cursor, leases, settlement and the attempt log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailvia.domain.errors import InvalidInput, NotFound
from mailvia.outbox.records import Event
from mailvia.outbox.webhook_ports import Webhook, WebhookAttempt, WebhookJob
from mailvia.store import SqlStore, migrate, open_store

T0 = 1_700_000_000.0


@pytest.fixture
def store(migrated_store_url: str) -> Iterator[SqlStore]:
    migrate(migrated_store_url)
    s = open_store(migrated_store_url)
    s.create_organization("org_1", "acme", T0)
    s.create_organization("org_2", "globex", T0)
    yield s
    s.close()


def hook(webhook_id: str, org: str = "org_1", types: tuple[str, ...] | None = None) -> Webhook:
    return Webhook(webhook_id, org, f"https://hooks.test/{webhook_id}", types, T0)


def events(s: SqlStore, *types: str, org: str = "org_1", at: float = T0) -> list[str]:
    items = [Event(f"evt_{org}_{at}_{i}", org, t, at, {"n": i}) for i, t in enumerate(types)]
    s.add_events(items)
    return [e.id for e in items]


def claim(s: SqlStore, webhook_id: str, now: float = T0, limit: int = 10) -> list[WebhookJob]:
    return s.claim_webhook_deliveries(webhook_id, now=now, limit=limit, lease_until=now + 120)


def attempt(job: WebhookJob, outcome: str, at: float = T0 + 1, **kw: object) -> WebhookAttempt:
    fields: dict[str, object] = {
        "delivery_id": job.delivery_id,
        "webhook_id": job.webhook_id,
        "event_id": job.event.id,
        "event_type": job.event.type,
        "attempt": job.attempts + 1,
        "at": at,
        "status": 200 if outcome == "delivered" else 500,
        "error": None,
        "duration": 0.25,
        "outcome": outcome,
        "next_attempt_at": at + 10 if outcome == "retry" else None,
    }
    fields.update(kw)
    return WebhookAttempt(**fields)  # type: ignore[arg-type]


def test_webhooks_round_trip_and_keep_their_sealed_secret(store: SqlStore) -> None:
    store.add_webhook(hook("wh_1", types=("message.held",)), b"sealed-1")
    store.add_webhook(hook("wh_2", org="org_2"), b"sealed-2")
    assert store.get_webhook("wh_1") == hook("wh_1", types=("message.held",))
    assert [w.id for w in store.list_webhooks("org_1")] == ["wh_1"]
    assert [w.id for w in store.list_webhooks()] == ["wh_1", "wh_2"]
    assert store.webhook_secrets() == [("wh_1", b"sealed-1"), ("wh_2", b"sealed-2")]
    store.replace_secrets([], [("wh_1", b"resealed")])
    assert dict(store.webhook_secrets())["wh_1"] == b"resealed"
    with pytest.raises(NotFound):
        store.add_webhook(hook("wh_3", org="org_9"), b"x")
    store.remove_webhook("wh_1")
    with pytest.raises(NotFound):
        store.get_webhook("wh_1")
    with pytest.raises(NotFound):
        store.remove_webhook("wh_1")


def test_events_are_queued_once_after_the_cursor_and_by_type(store: SqlStore) -> None:
    events(store, "message.delivered")  # before the webhooks: never sent
    store.add_webhook(hook("wh_all"), b"s")
    store.add_webhook(hook("wh_held", types=("message.held",)), b"s")
    store.add_webhook(hook("wh_other", org="org_2"), b"s")
    ids = events(store, "message.delivered", "message.held", at=T0 + 1)
    assert store.queue_webhook_events(T0 + 1, limit=100, backlog=100) == 3
    assert store.queue_webhook_events(T0 + 2, limit=100, backlog=100) == 0
    assert store.webhooks_due(T0 + 1) == ["wh_all", "wh_held"]
    assert [j.event.id for j in claim(store, "wh_all", T0 + 1)] == ids
    (held,) = claim(store, "wh_held", T0 + 1)
    assert held.event.type == "message.held" and held.event.data == {"n": 1}
    assert held.url == "https://hooks.test/wh_held" and held.sealed_secret == b"s"


def test_queueing_stops_at_the_backlog_and_resumes(store: SqlStore) -> None:
    store.add_webhook(hook("wh_1"), b"s")
    events(store, *["message.delivered"] * 5, at=T0 + 1)
    assert store.queue_webhook_events(T0 + 1, limit=2, backlog=3) == 2
    assert store.queue_webhook_events(T0 + 1, limit=2, backlog=3) == 1
    assert store.queue_webhook_events(T0 + 1, limit=2, backlog=3) == 0
    for job in claim(store, "wh_1", T0 + 1):
        store.record_webhook_attempts([attempt(job, "delivered")])
    assert store.queue_webhook_events(T0 + 2, limit=10, backlog=3) == 2


def test_a_claim_is_leased_and_comes_back_when_the_lease_ends(store: SqlStore) -> None:
    store.add_webhook(hook("wh_1"), b"s")
    events(store, "message.delivered", "message.held", at=T0 + 1)
    store.queue_webhook_events(T0 + 1, limit=10, backlog=10)
    first = claim(store, "wh_1", T0 + 1, limit=1)
    assert len(first) == 1
    assert [j.delivery_id for j in claim(store, "wh_1", T0 + 1)] != [first[0].delivery_id]
    assert claim(store, "wh_1", T0 + 2) == []
    assert store.webhooks_due(T0 + 2) == []
    again = claim(store, "wh_1", T0 + 200)  # both leases ran out (a crashed dispatcher)
    assert len(again) == 2 and first[0].delivery_id in {j.delivery_id for j in again}


def test_attempts_settle_deliveries_and_are_listed_newest_first(store: SqlStore) -> None:
    store.add_webhook(hook("wh_1"), b"s")
    events(store, "message.delivered", at=T0 + 1)
    store.queue_webhook_events(T0 + 1, limit=10, backlog=10)
    (job,) = claim(store, "wh_1", T0 + 1)
    store.record_webhook_attempts([attempt(job, "retry", error="could not connect", status=None)])
    assert claim(store, "wh_1", T0 + 5) == []
    (retry,) = claim(store, "wh_1", T0 + 11)
    assert retry.attempts == 1
    store.record_webhook_attempts([attempt(retry, "delivered", at=T0 + 12)])
    store.record_webhook_attempts([attempt(retry, "delivered", at=T0 + 13)])  # ignored: settled
    assert store.webhooks_due(T0 + 10_000) == []
    page, cursor = store.list_webhook_attempts("wh_1", cursor=None, limit=1)
    assert [(a.outcome, a.attempt, a.at) for a in page] == [("delivered", 2, T0 + 12)]
    assert cursor is not None
    older, end = store.list_webhook_attempts("wh_1", cursor=cursor, limit=1)
    assert [(a.outcome, a.error, a.status) for a in older] == [("retry", "could not connect", None)]
    assert end is None
    with pytest.raises(InvalidInput):
        store.list_webhook_attempts("wh_1", cursor="nope", limit=1)


def test_an_attempt_for_a_removed_webhook_is_ignored(store: SqlStore) -> None:
    store.add_webhook(hook("wh_1"), b"s")
    events(store, "message.delivered", at=T0 + 1)
    store.queue_webhook_events(T0 + 1, limit=10, backlog=10)
    (job,) = claim(store, "wh_1", T0 + 1)
    store.remove_webhook("wh_1")
    store.record_webhook_attempts([attempt(job, "delivered")])
    assert store.list_webhook_attempts("wh_1", cursor=None, limit=10) == ([], None)


def test_two_stores_never_claim_the_same_delivery(store: SqlStore, migrated_store_url: str) -> None:
    store.add_webhook(hook("wh_1"), b"s")
    events(store, *["message.delivered"] * 20, at=T0 + 1)
    store.queue_webhook_events(T0 + 1, limit=100, backlog=100)
    other = open_store(migrated_store_url)
    try:
        seen: list[str] = []
        for _ in range(10):
            for s in (store, other):
                seen += [j.delivery_id for j in claim(s, "wh_1", T0 + 1, limit=3)]
        assert len(seen) == 20 and len(set(seen)) == 20
    finally:
        other.close()
