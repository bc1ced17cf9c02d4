"""Messages over HTTP: submit one or a batch, read, list, cancel; and explain a route.

Members see and cancel their own messages; admins their organization's. Another
organization's message is 404, like one that does not exist.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from mailvia.domain.errors import MailviaError, NotFound
from mailvia.domain.message import State
from mailvia.domain.tenancy import User
from mailvia.ingress.api.auth import CallerDep, ServicesDep
from mailvia.ingress.api.errors import problem_for, problems
from mailvia.ingress.api.intake import (
    Idempotency,
    canonical,
    idempotency,
    submission,
)
from mailvia.ingress.api.params import ChannelFilter, Cursor, IdempotencyKey, Limit, Ref
from mailvia.ingress.api.rejections import count_rejected
from mailvia.ingress.api.schemas import (
    BatchIn,
    BatchOut,
    MessageIn,
    MessageOut,
    MessagePage,
    RouteOut,
)
from mailvia.ingress.api.schemas import Receipt as ReceiptOut
from mailvia.ingress.views import message_view, receipt_view, route_view
from mailvia.outbox.addresses import check_address
from mailvia.outbox.ports import MessageFilter, MessageView
from mailvia.outbox.services import Services
from mailvia.outbox.submit import Receipt, Submission

router = APIRouter(prefix="/v1", tags=["messages"])

_REPLAYED: dict[int | str, dict[str, Any]] = {
    200: {"model": ReceiptOut, "description": "An Idempotency-Key replay: the earlier message."}
}


@router.post(
    "/messages",
    status_code=202,
    response_model=ReceiptOut,
    responses=_REPLAYED | problems(400, 401, 403, 409, 413, 422, 503),
    summary="Submit a message",
)
def submit_message(
    body: MessageIn,
    response: Response,
    services: ServicesDep,
    user: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Validate, route and commit one message: 202 once it is in the outbox (200 when an
    Idempotency-Key replays an earlier one)."""
    now = time.time()
    key = idempotency(idempotency_key, user, "message", canonical(body))
    receipt = services.submitter.submit(
        user, [submission(services, user, body, now, key)], now=now
    )[0]
    if not receipt.created:
        response.status_code = 200
    return receipt_view(receipt)


@router.post(
    "/messages/batch",
    response_model=BatchOut,
    responses=problems(400, 401, 409, 413, 422, 503),
    summary="Submit up to 1,000 messages",
)
def submit_batch(
    body: BatchIn,
    services: ServicesDep,
    user: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """One result per message, in order: a receipt, or the problem that kept it out (the
    others are committed together). A body that does not fit the schema fails as a whole."""
    now = time.time()
    key = idempotency(idempotency_key, user, "batch", canonical(body))
    items: list[Submission | MailviaError] = []
    for index, message in enumerate(body.messages):
        item_key = Idempotency(f"{key.key}#{index}", key.digest) if key else None
        try:
            items.append(submission(services, user, message, now, item_key))
        except MailviaError as exc:
            items.append(exc)
    accepted = [(user, item) for item in items if isinstance(item, Submission)]
    outcomes = iter(services.submitter.submit_each(accepted, now=now) if accepted else [])
    results = [next(outcomes) if isinstance(item, Submission) else item for item in items]
    count_rejected(services.metrics, (r for r in results if isinstance(r, MailviaError)))
    return {"data": [_result(result) for result in results]}


def _result(result: Receipt | Exception) -> dict[str, Any]:
    """One message's entry in a batch's answer: its receipt or the problem that kept it out."""
    if isinstance(result, Receipt):
        return {"status": 202 if result.created else 200, "receipt": receipt_view(result)}
    if not isinstance(result, MailviaError):
        raise result  # a fault, not a refusal: the whole request fails (500, logged)
    problem = problem_for(result)
    return {"status": problem.status, "problem": problem}


@router.get(
    "/messages",
    response_model=MessagePage,
    responses=problems(401, 422, 503),
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
    channel_id = None
    if channel is not None:
        named = services.store.find_channel(user.organization_id, channel)
        channel_id = named.id if named is not None else channel
    query = MessageFilter(
        organization_id=user.organization_id,
        user_id=None if user.is_admin else user.id,
        state=state,
        channel_id=channel_id,
        limit=limit,
        cursor=cursor,
    )
    views, next_cursor = services.store.list_messages(query)
    return {"data": [message_view(v) for v in views], "next_cursor": next_cursor}


def _visible(services: Services, user: User, message_id: str) -> MessageView:
    """The message if the caller may see it; NotFound otherwise (never saying which)."""
    try:
        view = services.store.get_message(message_id)
    except NotFound:
        view = None
    if (
        view is None
        or view.organization_id != user.organization_id
        or not (user.is_admin or view.user_id == user.id)
    ):
        raise NotFound(f"no message {message_id!r}")
    return view


@router.get(
    "/messages/{id}",
    response_model=MessageOut,
    responses=problems(401, 404, 422, 503),
    summary="One message with its recipients and attempts",
)
def get_message(id: Ref, services: ServicesDep, user: CallerDep) -> dict[str, Any]:
    return message_view(_visible(services, user, id))


@router.post(
    "/messages/{id}/cancel",
    response_model=MessageOut,
    responses=problems(401, 404, 409, 422, 503),
    summary="Cancel a message's undelivered recipients",
)
def cancel_message(id: Ref, services: ServicesDep, user: CallerDep) -> dict[str, Any]:
    """Cancel the recipients still queued, deferred or held; 409 while the message is being
    sent or once it is finished."""
    view = _visible(services, user, id)
    return message_view(services.store.cancel_message(view.id, time.time()))


@router.get(
    "/route",
    response_model=RouteOut,
    responses=problems(401, 422, 503),
    tags=["channels"],
    summary="Which channel mail From this address takes, and why",
)
def explain_route(
    services: ServicesDep,
    user: CallerDep,
    from_: Annotated[str, Query(alias="from", max_length=998)],
) -> dict[str, Any]:
    address = check_address(from_, "from")
    return route_view(services.submitter.explain(user, address))
