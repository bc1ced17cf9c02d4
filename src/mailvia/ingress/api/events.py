"""The organization's event stream over HTTP (`GET /v1/events?cursor=`), oldest first.

Admins see every event; members those about their own messages and the channels they may
see (the Messages use case says so), so a member's page may hold fewer than `limit` events
while the cursor still advances.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mailvia.domain.clock import to_iso
from mailvia.ingress.api.auth import CallerDep, ServicesDep
from mailvia.ingress.api.errors import problems
from mailvia.ingress.api.params import Cursor, Limit
from mailvia.ingress.api.schemas import EventPage

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
    events, next_cursor = services.messages.events(user, cursor=cursor, limit=limit)
    return {
        "data": [
            {"id": e.id, "type": e.type, "created_at": to_iso(e.created_at), "data": e.data}
            for e in events
        ],
        "next_cursor": next_cursor,
    }
