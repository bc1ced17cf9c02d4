"""Channels over HTTP: list, add, show, change, remove, pause, resume, disconnect (an OAuth
mailbox); and the presets.

Members see their own channels and their team's and manage their own; admins the whole
organization's. A channel the caller may not see is 404. Removing or disconnecting an OAuth
mailbox revokes its consent where the provider allows.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from mailvia.domain.channel import Budget, Channel
from mailvia.domain.errors import InvalidInput
from mailvia.domain.presets import PRESETS, Preset
from mailvia.domain.tenancy import User
from mailvia.ingress.api.auth import CallerDep, JsonCallerDep, ServicesDep
from mailvia.ingress.api.channel_schemas import (
    BudgetIn,
    CancelledOut,
    ChannelCreated,
    ChannelEdited,
    ChannelIn,
    ChannelList,
    ChannelOut,
    ChannelPatch,
    DisconnectedOut,
    OwnerIn,
    Paused,
    PresetList,
    RemovedOut,
    Resumed,
)
from mailvia.ingress.api.errors import PROBLEM_JSON, problem, problems
from mailvia.ingress.api.params import PRINTABLE, Ref
from mailvia.ingress.payloads import channel_payload, removal_payload, report_payload
from mailvia.outbox.channels import ChannelChanges, ChannelSpec
from mailvia.outbox.mend import MailChoice
from mailvia.outbox.services import Services

router = APIRouter(prefix="/v1", tags=["channels"])
REFUSED = (
    "The request is not valid, or the edited channel failed its test: `test` holds the "
    "report and nothing was saved."
)
TEST_FAILED = {"$ref": "#/components/schemas/TestFailed"}  # listed by the API's document


@router.get(
    "/channels",
    response_model=ChannelList,
    responses=problems(401, 503),
    summary="The channels the caller may see",
)
def list_channels(services: ServicesDep, user: CallerDep) -> dict[str, Any]:
    return {"data": payloads(services, user, services.channels.listed(user))}


def payloads(services: Services, user: User, channels: list[Channel]) -> list[dict[str, Any]]:
    """Channels as the API shows them, OAuth mailboxes with their tokens' expiry."""
    if not any(c.oauth for c in channels):
        return [channel_payload(c) for c in channels]
    statuses = services.mailboxes.statuses(user.organization_id)
    return [channel_payload(c, statuses.get(c.id)) for c in channels]


def payload(services: Services, user: User, channel: Channel) -> dict[str, Any]:
    return payloads(services, user, [channel])[0]


@router.post(
    "/channels",
    status_code=201,
    response_model=ChannelCreated,
    responses=problems(400, 401, 403, 404, 409, 413, 422, 503),
    summary="Add a channel (from a preset, or by hand)",
)
def add_channel(
    body: ChannelIn, response: Response, services: ServicesDep, user: JsonCallerDep
) -> dict[str, Any]:
    """Members add address-scoped channels for themselves; admins also for others, and
    domain-scoped team channels. Warnings point out a host that is not the preset provider's,
    and a mailbox preset's advice."""
    spec = spec_of(services, user, body)
    channel, warnings = services.channels.add(user, spec, time.time())
    response.headers["Location"] = f"/v1/channels/{channel.id}"
    return payload(services, user, channel) | {"warnings": _warnings(channel, warnings)}


def spec_of(services: Services, user: User, body: ChannelIn) -> ChannelSpec:
    """The use case's spec for a channel body."""
    user_email, team_name = _owner(services, user, body.owner)
    return ChannelSpec(
        name=body.name,
        preset=body.preset,
        host=body.host,
        port=body.port,
        security=body.security,
        auth=body.auth,
        username=body.username,
        password=body.password,
        ca_pem=body.ca_pem,
        scope=body.scope,
        address=body.address,
        domains=tuple(body.domains),
        user_email=user_email,
        team_name=team_name,
        budgets=_budgets(body.budgets),
        max_connections=body.max_connections,
        max_recipients_per_message=body.max_recipients_per_message,
    )


def _owner(services: Services, user: User, owner: OwnerIn | None) -> tuple[str | None, str | None]:
    """(user email, team name) from `{"user": email or id}` or `{"team": name}`."""
    if owner is None:
        return None, None
    if owner.user is None:
        return None, owner.team
    if "@" in owner.user:
        return owner.user, None
    return services.tenancy.member(user, owner.user).email, None


def _budgets(budgets: list[BudgetIn] | None) -> tuple[Budget, ...] | None:
    if budgets is None:
        return None
    return tuple(Budget(b.count, b.per_seconds, b.unit) for b in budgets)


def _warnings(channel: Channel, texts: list[str]) -> list[dict[str, str]]:
    preset = PRESETS.get(channel.preset or "")
    host_warning = preset.host_warning(channel.host) if preset else None
    return [
        {"code": "preset_host" if text == host_warning else "preset_advice", "message": text}
        for text in texts
    ]


@router.get(
    "/channels/{id}",
    response_model=ChannelOut,
    responses=problems(401, 404, 422, 503),
    summary="One channel, by id or name",
)
def get_channel(id: Ref, services: ServicesDep, user: CallerDep) -> dict[str, Any]:
    return payload(services, user, services.channels.get(user, id))


@router.patch(
    "/channels/{id}",
    response_model=ChannelEdited,
    responses=problems(400, 401, 403, 404, 409, 413, 503)
    | {422: {"description": REFUSED, "content": {PROBLEM_JSON: {"schema": TEST_FAILED}}}},
    summary="Change any of a channel's fields (connection changes are tested first)",
)
async def update_channel(
    id: Ref, body: ChannelPatch, services: ServicesDep, user: JsonCallerDep
) -> Any:
    """Only the fields given change; a new password replaces the stored one (write-only). A
    change of host, port, security, auth, username or password is tested first (the steps
    of `POST /v1/channels/{id}/test`) and saved only when every step passes: else 422 with
    the report in `test`, nothing changed. `"test": false` saves without the test. A
    disconnected channel that passes becomes active and its held mail is released in its
    original order."""
    changes = ChannelChanges(
        name=body.name,
        host=body.host,
        port=body.port,
        security=body.security,
        auth=body.auth,
        username=body.username,
        password=body.password,
        budgets=_budgets(body.budgets),
        max_recipients_per_message=body.max_recipients_per_message,
        max_connections=body.max_connections,
    )
    edit = await services.mend.edit(user, id, changes, test=body.test, now=time.time())
    report = report_payload(edit.report) if edit.report is not None else None
    if not edit.saved:
        failed = edit.report.failed if edit.report else None
        where = f" at {failed.name}" if failed else ""
        detail = f"the edited channel failed its test{where}; nothing was saved"
        body_out = problem(422, detail).model_dump(mode="json", exclude_none=True)
        return JSONResponse(body_out | {"test": report}, 422, media_type=PROBLEM_JSON)
    return payload(services, user, edit.channel) | {
        "test": report,
        "reconnected": edit.reconnected,
        "released": edit.released,
        "retried": edit.retried,
    }


@router.delete(
    "/channels/{id}",
    status_code=204,
    response_class=Response,
    responses=problems(401, 403, 404, 409, 422, 503)
    | {200: {"model": RemovedOut, "description": "Its mail was cancelled or moved."}},
    summary="Remove a channel; its waiting mail is cancelled or moved (409 without a choice)",
)
async def remove_channel(
    id: Ref,
    services: ServicesDep,
    user: CallerDep,
    mail: Annotated[
        MailChoice | None,
        Query(description="What becomes of its waiting mail: `cancel` it, or `move` it."),
    ] = None,
    to: Annotated[
        str | None,
        Query(pattern=PRINTABLE, description="With `mail=move`: the channel (id or name)."),
    ] = None,
) -> Response:
    """Without mail waiting: 204. With waiting mail and no `mail`: 409 naming the choices.
    `mail=cancel` cancels it (each message `cancelled`, with a `message.cancelled` event);
    `mail=move&to=CHANNEL` moves each message whose sender may use that channel (the routing
    rules), queued there in its original order (held if that channel is not active); the
    others stay, listed in `kept`, and the channel is then not removed. An OAuth mailbox's
    grant is revoked at the provider where it allows (Google)."""
    if (to is not None) != (mail is MailChoice.MOVE):
        raise InvalidInput("to: the channel to move to, with mail=move (and only then)")
    done = await services.mend.remove(user, id, mail=mail, to=to, now=time.time())
    if mail is None:
        return Response(status_code=204)
    return JSONResponse(removal_payload(done))


@router.post(
    "/channels/{id}/cancel-mail",
    response_model=CancelledOut,
    responses=problems(401, 403, 404, 422, 503),
    summary="Cancel a channel's waiting (queued, deferred, held) mail",
)
def cancel_mail(id: Ref, services: ServicesDep, user: CallerDep) -> dict[str, Any]:
    """Each waiting message becomes `cancelled` (its recipients' reply says who cancelled
    it) with a `message.cancelled` event; mail being sent right now finishes."""
    return {"cancelled": services.mend.cancel_mail(user, id, time.time())}


@router.post(
    "/channels/{id}/disconnect",
    response_model=DisconnectedOut,
    responses=problems(401, 403, 404, 422, 503),
    summary="Disconnect an OAuth mailbox: revoke its consent, delete its tokens, hold its mail",
)
async def disconnect_channel(id: Ref, services: ServicesDep, user: CallerDep) -> dict[str, Any]:
    """the consent is revoked at Google; Microsoft offers no revocation of refresh tokens (`revoked`
    false): mailvia deletes its copy. Reconnecting releases the held mail in order."""
    done = await services.mailboxes.disconnect(user, id, time.time())
    return {
        "channel": payload(services, user, done.channel),
        "held": done.held,
        "revoked": done.revoked,
    }


@router.post(
    "/channels/{id}/pause",
    response_model=Paused,
    responses=problems(401, 403, 404, 422, 503),
    summary="Pause a channel and hold its mail",
)
def pause_channel(id: Ref, services: ServicesDep, user: CallerDep) -> dict[str, Any]:
    channel, held = services.channels.pause(user, id, time.time())
    return {"channel": payload(services, user, channel), "held": held}


@router.post(
    "/channels/{id}/resume",
    response_model=Resumed,
    responses=problems(401, 403, 404, 422, 503),
    summary="Resume a channel and release its held mail in order",
)
def resume_channel(id: Ref, services: ServicesDep, user: CallerDep) -> dict[str, Any]:
    channel, released = services.channels.resume(user, id, time.time())
    return {"channel": payload(services, user, channel), "released": released}


@router.get(
    "/presets",
    response_model=PresetList,
    responses=problems(401, 503),
    summary="Provider presets and what they fill in",
)
def list_presets(user: CallerDep) -> dict[str, Any]:
    return {"data": [_preset_payload(p) for p in PRESETS.values()]}


def _preset_payload(preset: Preset) -> dict[str, Any]:
    return {
        "name": preset.name,
        "title": preset.title,
        "host": preset.host,
        "hosts": list(preset.hosts),
        "port": preset.port,
        "security": str(preset.security),
        "auth": str(preset.auth),
        "scope": str(preset.scope),
        "username": preset.username,
        "budgets": [
            {"count": b.count, "per_seconds": b.per_seconds, "unit": str(b.unit)}
            for b in preset.budgets
        ],
        "max_recipients_per_message": preset.max_recipients_per_message,
        "max_connections": preset.max_connections,
        "mailbox": preset.mailbox,
        "advice": preset.advice,
        "sources": list(preset.sources),
    }
