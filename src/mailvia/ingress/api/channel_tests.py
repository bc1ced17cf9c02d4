"""Test connection over HTTP: a channel body tested without storing anything, or a saved
channel tested (optionally with a replacement password that is not saved)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field

from mailvia.ingress.api.auth import JsonCallerDep, ServicesDep
from mailvia.ingress.api.channel_schemas import ChannelIn, Password, ProbeOut
from mailvia.ingress.api.channels import spec_of
from mailvia.ingress.api.errors import problems
from mailvia.ingress.api.params import Ref
from mailvia.ingress.api.schemas import Input, Line
from mailvia.ingress.payloads import report_payload

router = APIRouter(prefix="/v1", tags=["channels"])

Address = Annotated[Line, Field(max_length=320)]


class ChannelTestIn(ChannelIn):
    """A channel body, plus an optional address to send a short test message to."""

    to: Address | None = None


class SavedChannelTestIn(Input):
    """Optional: a replacement password to try (not saved) and a test message address."""

    password: Password | None = Field(None, description="Tried, never saved.")
    to: Address | None = None


@router.post(
    "/channels/test",
    response_model=ProbeOut,
    responses=problems(400, 401, 403, 404, 413, 422, 503),
    summary="Test a channel without saving it",
)
async def test_unsaved(body: ChannelTestIn, services: ServicesDep, user: JsonCallerDep) -> Any:
    """Resolve, connect, TLS, EHLO, AUTH and, with `to`, a test message (else the `sender`
    step: MAIL FROM an address-scoped channel's address, then RSET; a team or domain channel's
    is `skipped`, not tried, and passes): each step with the server's reply and a hint on
    failure; ten seconds in all. Nothing is stored."""
    spec = spec_of(services, user, body)
    report = await services.tester.test_spec(user, spec, to=body.to, now=time.time())
    return report_payload(report)


@router.post(
    "/channels/{id}/test",
    response_model=ProbeOut,
    responses=problems(400, 401, 403, 404, 422, 503),
    summary="Test a saved channel (optionally with a new password, not saved)",
)
async def test_saved(
    id: Ref, services: ServicesDep, user: JsonCallerDep, body: SavedChannelTestIn | None = None
) -> Any:
    """The steps as for an unsaved channel (an OAuth mailbox gets an access token first).
    With `to`, a test message is a message: From the caller's own address that the channel
    carries (else 403), within the channel's budgets (else 429 with Retry-After), and listed
    in `GET /v1/messages` with its attempt, flagged `test`."""
    body = body or SavedChannelTestIn(password=None, to=None)
    report = await services.tester.test(
        user, id, to=body.to, password=body.password, now=time.time()
    )
    return report_payload(report)
