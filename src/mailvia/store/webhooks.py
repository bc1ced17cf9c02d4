"""Webhooks in SQL: subscriptions with their sealed secrets, the deliveries queued from each
organization's event stream (one per webhook and event), leases on due deliveries, and the
log of every attempt.

A webhook's `last_event_seq` is how far it has read the events table; queuing moves it
forward in the same transaction that inserts the deliveries, so an event is queued once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mailvia.domain.clock import Instant
from mailvia.domain.cursors import CursorSeal
from mailvia.domain.errors import InvalidInput, NotFound
from mailvia.domain.ids import make_id
from mailvia.outbox.records import Event
from mailvia.outbox.webhook_ports import Webhook, WebhookAttempt, WebhookJob
from mailvia.store.engine import Database
from mailvia.store.oauth import OAuthSecret, replace_oauth_secrets
from mailvia.store.tables import channels, events, webhook_attempts, webhook_deliveries, webhooks

_CURSOR = "wha"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
_STATE_AFTER = {"delivered": DELIVERED, "failed": FAILED}
w, d, a, e = webhooks.c, webhook_deliveries.c, webhook_attempts.c, events.c


def _webhook(row: Any) -> Webhook:
    types = None if row.event_types is None else tuple(json.loads(row.event_types))
    return Webhook(row.id, row.organization_id, row.url, types, row.created_at)


def _attempt(row: Any) -> WebhookAttempt:
    return WebhookAttempt(
        delivery_id=row.delivery_id,
        webhook_id=row.webhook_id,
        event_id=row.event_id,
        event_type=row.event_type,
        attempt=row.attempt,
        at=row.at,
        status=row.status,
        error=row.error,
        duration=row.duration,
        outcome=row.outcome,
        next_attempt_at=row.next_attempt_at,
    )


def _queue_one(conn: sa.Connection, webhook_id: str, now: Instant, limit: int, backlog: int) -> int:
    """Queue one webhook's new events (at most `limit`, and only while fewer than `backlog`
    of its deliveries are pending)."""
    hook = conn.execute(sa.select(webhooks).where(w.id == webhook_id).with_for_update()).first()
    if hook is None:
        return 0
    pending = conn.execute(
        sa.select(sa.func.count()).where(d.webhook_id == webhook_id, d.state == PENDING)
    ).scalar_one()
    room = min(limit, backlog - int(pending))
    if room <= 0:
        return 0
    rows = conn.execute(
        sa.select(e.seq, e.id, e.type)
        .where(e.organization_id == hook.organization_id, e.seq > hook.last_event_seq)
        .order_by(e.seq)
        .limit(room)
    ).all()
    if not rows:
        return 0
    wanted = _webhook(hook).event_types
    queued = [
        {
            "id": make_id("whd", now, os.urandom(10)),
            "webhook_id": webhook_id,
            "event_id": row.id,
            "event_seq": row.seq,
            "attempts": 0,
            "state": PENDING,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for row in rows
        if wanted is None or row.type in wanted
    ]
    if queued:
        conn.execute(webhook_deliveries.insert(), queued)
    conn.execute(webhooks.update().where(w.id == webhook_id).values(last_event_seq=rows[-1].seq))
    return len(queued)


def _events(conn: sa.Connection, ids: list[str]) -> dict[str, Event]:
    query = sa.select(events).where(e.id.in_(ids))
    return {
        row.id: Event(row.id, row.organization_id, row.type, row.created_at, json.loads(row.data))
        for row in conn.execute(query)
    }


class WebhookStore:
    """Webhook methods (the WebhookStore port), plus secrets for key rotation."""

    _db: Database
    _cursors: CursorSeal

    def add_webhook(self, webhook: Webhook, sealed_secret: bytes) -> Webhook:
        """Insert a webhook that will get the organization's events from now on. Raises
        NotFound when the organization does not exist, Conflict for a reused id."""
        types = None if webhook.event_types is None else json.dumps(list(webhook.event_types))
        with self._db.write(missing=f"no organization {webhook.organization_id!r}") as conn:
            last = conn.execute(sa.select(sa.func.coalesce(sa.func.max(e.seq), 0))).scalar_one()
            conn.execute(
                webhooks.insert().values(
                    id=webhook.id,
                    organization_id=webhook.organization_id,
                    url=webhook.url,
                    event_types=types,
                    secret=sealed_secret,
                    last_event_seq=int(last),
                    created_at=webhook.created_at,
                )
            )
        return webhook

    def get_webhook(self, webhook_id: str) -> Webhook:
        """The webhook. Raises NotFound."""
        with self._db.read() as conn:
            row = conn.execute(sa.select(webhooks).where(w.id == webhook_id)).first()
        if row is None:
            raise NotFound(f"no webhook {webhook_id!r}")
        return _webhook(row)

    def list_webhooks(self, org_id: str | None = None) -> list[Webhook]:
        """The organization's webhooks (every one when None), oldest first."""
        query = sa.select(webhooks).order_by(w.created_at, w.id)
        if org_id is not None:
            query = query.where(w.organization_id == org_id)
        with self._db.read() as conn:
            return [_webhook(row) for row in conn.execute(query)]

    def remove_webhook(self, webhook_id: str) -> None:
        """Delete the webhook with its deliveries and their log. Raises NotFound."""
        with self._db.write() as conn:
            conn.execute(webhook_attempts.delete().where(a.webhook_id == webhook_id))
            conn.execute(webhook_deliveries.delete().where(d.webhook_id == webhook_id))
            if conn.execute(webhooks.delete().where(w.id == webhook_id)).rowcount == 0:
                raise NotFound(f"no webhook {webhook_id!r}")

    def queue_webhook_events(self, now: Instant, *, limit: int, backlog: int) -> int:
        """Queue a pending delivery, due now, for each webhook's events since its cursor
        (of its types), at most `limit` per webhook and only while fewer than `backlog` of
        its deliveries are pending. One transaction per webhook with news; returns how many
        deliveries were queued."""
        news = sa.exists().where(e.organization_id == w.organization_id, e.seq > w.last_event_seq)
        with self._db.read() as conn:
            ids = list(conn.execute(sa.select(w.id).where(news).order_by(w.id)).scalars())
        queued = 0
        for webhook_id in ids:
            with self._db.write() as conn:
                queued += _queue_one(conn, webhook_id, now, limit, backlog)
        return queued

    def webhooks_due(self, now: Instant) -> list[str]:
        """The webhooks with a pending delivery due at `now`."""
        query = (
            sa.select(d.webhook_id)
            .where(d.state == PENDING, d.next_attempt_at <= now)
            .group_by(d.webhook_id)
            .order_by(d.webhook_id)
        )
        with self._db.read() as conn:
            return list(conn.execute(query).scalars())

    def claim_webhook_deliveries(
        self, webhook_id: str, *, now: Instant, limit: int, lease_until: Instant
    ) -> list[WebhookJob]:
        """Lease up to `limit` of the webhook's due deliveries (earliest due first) until
        `lease_until`: another claim skips them until then, so a crashed dispatcher's deliveries
        come back. Returns them with their event and the webhook's URL and sealed secret."""
        with self._db.write() as conn:
            rows = conn.execute(
                sa.select(d.id, d.event_id, d.attempts, d.created_at)
                .where(d.webhook_id == webhook_id, d.state == PENDING, d.next_attempt_at <= now)
                .order_by(d.next_attempt_at, d.event_seq)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return []
            conn.execute(
                webhook_deliveries.update()
                .where(d.id.in_([row.id for row in rows]))
                .values(next_attempt_at=lease_until)
            )
            hook = conn.execute(sa.select(w.url, w.secret).where(w.id == webhook_id)).one()
            found = _events(conn, [row.event_id for row in rows])
        return [
            WebhookJob(
                delivery_id=row.id,
                webhook_id=webhook_id,
                url=hook.url,
                sealed_secret=bytes(hook.secret),
                event=found[row.event_id],
                attempts=row.attempts,
                created_at=row.created_at,
            )
            for row in rows
            if row.event_id in found
        ]

    def record_webhook_attempts(self, attempts: Sequence[WebhookAttempt]) -> None:
        """Settle each attempt's delivery (delivered, failed, or pending again at its
        `next_attempt_at`) and log the attempt; one transaction. An attempt whose delivery is
        gone (its webhook was removed) or already settled is ignored."""
        with self._db.write() as conn:
            for item in attempts:
                settled = conn.execute(
                    webhook_deliveries.update()
                    .where(d.id == item.delivery_id, d.state == PENDING)
                    .values(
                        attempts=item.attempt,
                        state=_STATE_AFTER.get(item.outcome, PENDING),
                        next_attempt_at=item.next_attempt_at,
                        last_status=item.status,
                        last_error=item.error,
                        last_duration=item.duration,
                        updated_at=item.at,
                    )
                )
                if settled.rowcount:
                    conn.execute(webhook_attempts.insert().values(**vars(item)))

    def list_webhook_attempts(
        self, webhook_id: str, *, cursor: str | None, limit: int
    ) -> tuple[list[WebhookAttempt], str | None]:
        """Up to `limit` of the webhook's attempts, newest first, after `cursor`; the next
        cursor is None on the last page. Raises InvalidCursor for a foreign cursor."""
        if limit < 1:
            raise InvalidInput("limit: must be at least 1")
        query = sa.select(webhook_attempts).where(a.webhook_id == webhook_id)
        if cursor is not None:
            query = query.where(a.seq < self._cursors.open(_CURSOR, webhook_id, cursor))
        with self._db.read() as conn:
            rows = conn.execute(query.order_by(a.seq.desc()).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = self._cursors.seal(_CURSOR, webhook_id, rows[-1].seq) if more else None
        return [_attempt(row) for row in rows], next_cursor

    def webhook_secrets(self) -> list[tuple[str, bytes]]:
        """Every webhook's sealed secret with its id (for re-sealing under a new key)."""
        with self._db.read() as conn:
            rows = conn.execute(sa.select(w.id, w.secret).order_by(w.id))
            return [(row.id, bytes(row.secret)) for row in rows]

    def replace_secrets(
        self,
        channel_secrets: Sequence[tuple[str, bytes]],
        webhook_secrets: Sequence[tuple[str, bytes]],
        oauth_secrets: Sequence[OAuthSecret] = (),
    ) -> None:
        """Replace channels', webhooks' and OAuth's sealed secrets, all in one transaction (a
        key rotation that stops halfway leaves every secret under one key). Missing ids are
        skipped: their rows were removed meanwhile."""
        with self._db.write() as conn:
            replace_oauth_secrets(conn, oauth_secrets)
            for table, pairs in ((channels, channel_secrets), (webhooks, webhook_secrets)):
                if pairs:
                    conn.execute(
                        table.update()
                        .where(table.c.id == sa.bindparam("b_id"))
                        .values(secret=sa.bindparam("b_secret")),
                        [{"b_id": i, "b_secret": s} for i, s in pairs],
                    )
