"""The organization's event stream over HTTP (`GET /v1/events?cursor=`), oldest first.

Admins see every event; members those about their own messages and the channels they may
see, so a member's page may hold fewer than `limit` events while the cursor still advances.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter

from mailvia.domain.clock import to_iso
from mailvia.domain.errors import NotFound
from mailvia.domain.tenancy import User
from mailvia.ingress.api.auth import CallerDep, ServicesDep
from mailvia.ingress.api.errors import problems
from mailvia.ingress.api.params import Cursor, Limit
from mailvia.ingress.api.schemas import EventPage
from mailvia.outbox.ports import Event
from mailvia.outbox.services import Services

router = APIRouter(prefix="/v1", tags=["events"])


@router.get(
    "/events",
    response_model=EventPage,
    responses=problems(400, 401, 422, 503),
    summary="Events after a cursor",
)
def list_events(
    services: ServicesDep, user: CallerDep, cursor: Cursor = None, limit: Limit = 50
) -> dict[str, Any]:
    """`{"id", "type", "created_at", "data"}` per event; pass `next_cursor` to continue."""
    events, next_cursor = services.store.list_events(
        user.organization_id, cursor=cursor, limit=limit
    )
    if not user.is_admin:
        events = _members_share(services, user, events)
    return {
        "data": [
            {"id": e.id, "type": e.type, "created_at": to_iso(e.created_at), "data": e.data}
            for e in events
        ],
        "next_cursor": next_cursor,
    }


def _members_share(services: Services, user: User, events: Sequence[Event]) -> list[Event]:
    channels = {c.id for c in services.channels.visible(user)}
    owners: dict[str, str | None] = {}
    kept = []
    for event in events:
        message_id = event.data.get("message_id")
        if isinstance(message_id, str):
            if message_id not in owners:
                owners[message_id] = _owner_of(services, message_id)
            if owners[message_id] == user.id:
                kept.append(event)
        elif event.data.get("channel_id") in channels:
            kept.append(event)
    return kept


def _owner_of(services: Services, message_id: str) -> str | None:
    try:
        return services.store.get_message(message_id).user_id
    except NotFound:
        return None
