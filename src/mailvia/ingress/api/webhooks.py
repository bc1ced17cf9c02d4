"""Webhooks over HTTP (admins only): list, add (the answer shows the signing secret, once),
remove, and the log of delivery attempts. Another organization's webhook is 404."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response

from mailvia.domain.clock import to_iso
from mailvia.ingress.api.auth import CallerDep, JsonCallerDep, ServicesDep
from mailvia.ingress.api.errors import problems
from mailvia.ingress.api.params import Cursor, Limit, Ref
from mailvia.ingress.api.webhook_schemas import (
    WebhookAttemptPage,
    WebhookCreated,
    WebhookIn,
    WebhookList,
)
from mailvia.outbox.webhook_ports import Webhook, WebhookAttempt
from mailvia.outbox.webhooks import EVENT_TYPES

router = APIRouter(prefix="/v1", tags=["webhooks"])


def _payload(webhook: Webhook) -> dict[str, Any]:
    return {
        "id": webhook.id,
        "url": webhook.url,
        "events": list(webhook.event_types or EVENT_TYPES),
        "created_at": to_iso(webhook.created_at),
    }


def _attempt_payload(attempt: WebhookAttempt) -> dict[str, Any]:
    return {
        "at": to_iso(attempt.at),
        "event_id": attempt.event_id,
        "event_type": attempt.event_type,
        "attempt": attempt.attempt,
        "outcome": attempt.outcome,
        "status": attempt.status,
        "error": attempt.error,
        "duration_ms": round(attempt.duration * 1000),
        "next_attempt_at": to_iso(attempt.next_attempt_at),
    }


@router.get(
    "/webhooks",
    response_model=WebhookList,
    responses=problems(401, 403, 503),
    summary="The organization's webhooks (admins)",
)
def list_webhooks(services: ServicesDep, user: CallerDep) -> dict[str, Any]:
    return {"data": [_payload(w) for w in services.webhooks.visible(user)]}


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookCreated,
    responses=problems(400, 401, 403, 413, 422, 503),
    summary="Send the organization's events to a URL (admins)",
)
def add_webhook(body: WebhookIn, services: ServicesDep, user: JsonCallerDep) -> dict[str, Any]:
    """The answer holds the signing secret (`whsec_...`): it is never shown again. Events
    from now on are POSTed signed per the Standard Webhooks specification."""
    made = services.webhooks.add(user, body.url, body.events, time.time())
    return {**_payload(made.webhook), "secret": made.secret}


@router.delete(
    "/webhooks/{id}",
    status_code=204,
    response_class=Response,
    responses=problems(401, 403, 404, 422, 503),
    summary="Remove a webhook and its delivery log (admins)",
)
def remove_webhook(id: Ref, services: ServicesDep, user: CallerDep) -> Response:
    services.webhooks.remove(user, id)
    return Response(status_code=204)


@router.get(
    "/webhooks/{id}/deliveries",
    response_model=WebhookAttemptPage,
    responses=problems(400, 401, 403, 404, 422, 503),
    summary="Each attempt to deliver an event to the webhook, newest first (admins)",
)
def list_deliveries(
    id: Ref, services: ServicesDep, user: CallerDep, cursor: Cursor = None, limit: Limit = 50
) -> dict[str, Any]:
    attempts, next_cursor = services.webhooks.attempts(user, id, cursor=cursor, limit=limit)
    return {"data": [_attempt_payload(a) for a in attempts], "next_cursor": next_cursor}
