"""Channels over HTTP: list, add, show, change, remove, pause, resume, disconnect (an OAuth
mailbox); and the presets.

Members see their own channels and their team's and manage their own; admins the whole
organization's. A channel the caller may not see is 404. Removing or disconnecting an OAuth
mailbox revokes its consent where the provider allows.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response

from mailvia.domain.channel import Budget, Channel
from mailvia.domain.presets import PRESETS, Preset
from mailvia.domain.tenancy import User
from mailvia.ingress.api.auth import CallerDep, ServicesDep
from mailvia.ingress.api.channel_schemas import (
    BudgetIn,
    ChannelCreated,
    ChannelIn,
    ChannelList,
    ChannelOut,
    ChannelPatch,
    DisconnectedOut,
    Paused,
    PresetList,
    Resumed,
    TeamOwnerIn,
    UserOwnerIn,
)
from mailvia.ingress.api.errors import problems
from mailvia.ingress.api.params import Ref
from mailvia.ingress.payloads import channel_payload
from mailvia.outbox.channels import ChannelChanges, ChannelSpec
from mailvia.outbox.services import Services

router = APIRouter(prefix="/v1", tags=["channels"])


@router.get(
    "/channels",
    response_model=ChannelList,
    responses=problems(401, 503),
    summary="The channels the caller may see",
)
def list_channels(services: ServicesDep, user: CallerDep) -> dict[str, Any]:
    return {"data": payloads(services, user, services.channels.visible(user))}


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
    body: ChannelIn, response: Response, services: ServicesDep, user: CallerDep
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


def _owner(
    services: Services, user: User, owner: UserOwnerIn | TeamOwnerIn | None
) -> tuple[str | None, str | None]:
    """(user email, team name) from `{"user": email or id}` or `{"team": name}`."""
    if owner is None:
        return None, None
    if isinstance(owner, TeamOwnerIn):
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
    response_model=ChannelOut,
    responses=problems(400, 401, 403, 404, 409, 413, 422, 503),
    summary="Change a channel's name, password, budgets or limits",
)
def update_channel(
    id: Ref, body: ChannelPatch, services: ServicesDep, user: CallerDep
) -> dict[str, Any]:
    """Only the fields given change; a new password replaces the stored one (write-only)."""
    changes = ChannelChanges(
        name=body.name,
        password=body.password,
        budgets=_budgets(body.budgets),
        max_recipients_per_message=body.max_recipients_per_message,
        max_connections=body.max_connections,
    )
    return payload(services, user, services.channels.update(user, id, changes))


@router.delete(
    "/channels/{id}",
    status_code=204,
    response_class=Response,
    responses=problems(401, 403, 404, 409, 422, 503),
    summary="Remove a channel (409 while it has mail to send)",
)
async def remove_channel(id: Ref, services: ServicesDep, user: CallerDep) -> Response:
    """An OAuth mailbox's grant is revoked at the provider where it allows (Google), and its
    tokens are deleted with it."""
    await services.mailboxes.remove(user, id)
    return Response(status_code=204)


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
