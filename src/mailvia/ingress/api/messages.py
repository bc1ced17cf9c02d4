"""Messages over HTTP: read, list, cancel; and explain a route (submitting: submit.py).

Members see and cancel their own messages; admins their organization's (the Messages use
case says so). Another organization's message is 404, like one that does not exist.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query

from mailvia.domain.message import State
from mailvia.ingress.api.auth import CallerDep, ServicesDep
from mailvia.ingress.api.errors import problems
from mailvia.ingress.api.params import ChannelFilter, Cursor, Limit, Ref
from mailvia.ingress.api.schemas import (
    MessageOut,
    MessagePage,
    RouteOut,
)
from mailvia.ingress.payloads import message_payloads, one_message_payload, route_payload
from mailvia.outbox.addresses import check_address

router = APIRouter(prefix="/v1", tags=["messages"])


@router.get(
    "/messages",
    response_model=MessagePage,
    responses=problems(400, 401, 422, 503),
    summary="List messages, newest first",
)
def list_messages(
    services: ServicesDep,
    user: CallerDep,
    state: State | None = None,
    channel: ChannelFilter = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The caller's messages (an admin's: the organization's), `limit` at a time."""
    views, next_cursor = services.messages.page(
        user, state=state, channel=channel, limit=limit, cursor=cursor
    )
    return {"data": message_payloads(views, services.backlog), "next_cursor": next_cursor}


@router.get(
    "/messages/{id}",
    response_model=MessageOut,
    responses=problems(401, 404, 422, 503),
    summary="One message with its recipients and attempts",
)
def get_message(id: Ref, services: ServicesDep, user: CallerDep) -> dict[str, Any]:
    return one_message_payload(services.messages.visible(user, id), services.backlog)


@router.post(
    "/messages/{id}/cancel",
    response_model=MessageOut,
    responses=problems(401, 404, 409, 422, 503),
    summary="Cancel a message's undelivered recipients",
)
def cancel_message(id: Ref, services: ServicesDep, user: CallerDep) -> dict[str, Any]:
    """Cancel the recipients still queued, deferred or held; 409 while the message is being
    sent or once it is finished."""
    return one_message_payload(services.messages.cancel(user, id, time.time()), services.backlog)


@router.get(
    "/route",
    response_model=RouteOut,
    responses=problems(401, 403, 422, 503),
    tags=["channels"],
    summary="Which channel mail From this address takes, and why",
)
def explain_route(
    services: ServicesDep,
    user: CallerDep,
    from_: Annotated[str, Query(alias="from", max_length=998)],
) -> dict[str, Any]:
    """403 for an address the caller may not send From (what a message From it gets)."""
    address = check_address(from_, "from")
    services.submitter.check_sender(user, address)
    return route_payload(services.submitter.explain(user, address))
