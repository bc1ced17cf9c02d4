"""Submitting over HTTP: one message, or a batch with one result per message.

Each request is held to its caps and its token's recipient limit before the work of
checking its messages, and all of that work (reading the JSON, validating it, composing,
checking addresses, committing, writing the answer) runs in a worker thread, so that other
callers keep their latency.

Both routes are `IntakeRoute`s (intake_route.py): the endpoints below declare each operation
(its OpenAPI document) and are what plain FastAPI would run; the route runs `_one` and
`_batch` itself, with the same checks in the same order, without FastAPI's dependency
solving and, for a small body, in one worker-thread call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pydantic_core
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from mailvia.domain.errors import MailviaError
from mailvia.domain.tenancy import User
from mailvia.ingress.api.answers import batch_answer
from mailvia.ingress.api.auth import CallerDep, RecipientLimit, RecipientLimitDep, ServicesDep
from mailvia.ingress.api.bodies import (
    Batch,
    Body,
    batch_body,
    batch_messages,
    json_body,
    message_body,
    read_body,
    recipients_of,
)
from mailvia.ingress.api.errors import problems
from mailvia.ingress.api.intake import Idempotency, idempotency, submission
from mailvia.ingress.api.intake_route import Caller, IntakeRoute, handled_by
from mailvia.ingress.api.params import IdempotencyKey
from mailvia.ingress.api.raw_batch import RawBatch, RawIn
from mailvia.ingress.api.rejections import count_rejected
from mailvia.ingress.api.schemas import BatchIn, BatchOut, MessageIn
from mailvia.ingress.api.schemas import Receipt as ReceiptOut
from mailvia.ingress.payloads import receipt_payload
from mailvia.outbox.senders import FromChecks
from mailvia.outbox.services import Services
from mailvia.outbox.submit import Submission

router = APIRouter(prefix="/v1", tags=["messages"], route_class=IntakeRoute)

_REPLAYED: dict[int | str, dict[str, Any]] = {
    200: {"model": ReceiptOut, "description": "An Idempotency-Key replay: the earlier message."}
}


def _one(
    services: Services, caller: Caller, take: RecipientLimit, raw: Body, key_header: str | None
) -> Response:
    def make(checks: Callable[[User, str], None]) -> tuple[User, Submission]:
        user = caller()  # the token's read opens the request's one read transaction
        body = message_body(raw)
        take(recipients_of(body))
        key = idempotency(key_header, user, "message", body)
        return user, submission(services, user, body, now, key, checks)

    now = time.time()
    receipt = services.submitter.submit_one(make, now=now)
    return _json(receipt_payload(receipt), 202 if receipt.created else 200)


def _batch(
    services: Services, caller: Caller, take: RecipientLimit, raw: Body, key_header: str | None
) -> Response:
    now = time.time()
    checks = services.submitter.from_checks()
    items = _submissions(services, caller(), take, raw, key_header, now, checks)
    results = services.submitter.submit_each(items, now=now, checks=checks)
    count_rejected(services.metrics, (r for r in results if isinstance(r, MailviaError)))
    return Response(batch_answer(results), status_code=200, media_type="application/json")


def _submissions(
    services: Services,
    user: User,
    take: RecipientLimit,
    raw: Body,
    key_header: str | None,
    now: float,
    checks: FromChecks,
) -> list[tuple[User, Submission] | Exception]:
    """The batch read and held to the caps and the token's recipient limit, then each message
    composed, or the refusal that keeps it out; its envelope senders checked by the request's
    `checks` (whose reads then answer for the Froms of the same domains). Its models are
    freed on return, before the commit: for a batch of 1,000, ~6,000 objects fewer for
    serve's collector to walk while it commits and answers (docs/benchmarks.md, branch
    `batch3`)."""
    caps = services.api.caps
    # Without an Idempotency-Key there are no models to hash: a batch of raw messages is
    # read without them.
    batch: Batch | RawBatch = (
        batch_messages(raw, caps) if key_header is None else batch_body(raw, caps)
    )
    take(batch.recipients)
    key = idempotency(key_header, user, "batch", batch.body) if isinstance(batch, Batch) else None
    items: list[tuple[User, Submission] | Exception] = []
    messages: Sequence[MessageIn | RawIn] = batch.messages
    for index, message in enumerate(messages):
        item_key = Idempotency(f"{key.key}#{index}", key.digest) if key else None
        try:
            items.append((user, submission(services, user, message, now, item_key, checks.check)))
        except MailviaError as exc:
            items.append(exc)
    return items


@router.post(
    "/messages",
    status_code=202,
    response_model=ReceiptOut,
    responses=_REPLAYED | problems(400, 401, 403, 409, 413, 422, 503),
    summary="Submit a message",
    openapi_extra=json_body(MessageIn),
)
@handled_by(_one)
async def submit_message(
    request: Request,
    services: ServicesDep,
    user: CallerDep,
    recipients: RecipientLimitDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Validate, route and commit one message: 202 once it is in the outbox (200 when an
    Idempotency-Key replays an earlier one). Its recipients count against the token's
    recipient limit."""
    raw = await read_body(request)
    return await run_in_threadpool(_one, services, lambda: user, recipients, raw, idempotency_key)


@router.post(
    "/messages/batch",
    response_model=BatchOut,
    responses=problems(400, 401, 409, 413, 422, 503),
    summary="Submit a batch of messages",
    openapi_extra=json_body(BatchIn),
)
@handled_by(_batch)
async def submit_batch(
    request: Request,
    services: ServicesDep,
    user: CallerDep,
    recipients: RecipientLimitDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """One result per message, in order: a receipt, or the problem that kept it out (the
    others are committed together). A body that does not fit the schema fails as a whole;
    one over the request's caps is 413, and one whose recipients do not fit the token's
    recipient limit 429, before any of its messages is checked."""
    raw = await read_body(request)
    return await run_in_threadpool(_batch, services, lambda: user, recipients, raw, idempotency_key)


def _json(payload: dict[str, Any], status: int) -> Response:
    """The answer's JSON, written from its payload as it is by pydantic-core's writer. The
    payload holds its response model's fields (`ReceiptOut`) in their order, so the document
    is the one the model would write, without validating our own output into it first (a
    batch's answer: answers.py); tests/unit/test_submit_answers.py compares the two."""
    return Response(
        pydantic_core.to_json(payload), status_code=status, media_type="application/json"
    )
