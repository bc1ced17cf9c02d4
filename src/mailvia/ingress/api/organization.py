"""The caller's organization over HTTP: read it; admins set its default channel and the
fallback policy for mail whose channel is disconnected or paused."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mailvia.domain.errors import InvalidInput, NotFound
from mailvia.domain.tenancy import Organization, require_admin
from mailvia.ingress.api.auth import CallerDep, JsonCallerDep, ServicesDep
from mailvia.ingress.api.errors import problems
from mailvia.ingress.api.schemas import OrganizationOut, OrganizationPatch
from mailvia.outbox.tenancy import UNCHANGED, DefaultChoice

router = APIRouter(prefix="/v1", tags=["organization"])


def _payload(org: Organization) -> dict[str, Any]:
    return {
        "id": org.id,
        "name": org.name,
        "default_channel_id": org.default_channel_id,
        "fallback": str(org.fallback),
    }


@router.get(
    "/organization",
    response_model=OrganizationOut,
    responses=problems(401, 503),
    summary="The caller's organization",
)
def get_organization(services: ServicesDep, user: CallerDep) -> dict[str, Any]:
    return _payload(services.tenancy.organization_of(user))


@router.patch(
    "/organization",
    response_model=OrganizationOut,
    responses=problems(400, 401, 403, 413, 422, 503),
    summary="Set the default channel and the fallback policy (admins)",
)
def update_organization(
    body: OrganizationPatch, services: ServicesDep, user: JsonCallerDep
) -> dict[str, Any]:
    """Only the fields given change; `"default_channel_id": null` clears the default. An
    address-scoped channel (one person's mailbox) can never be the default (422)."""
    require_admin(user, "change the organization's settings")
    default: DefaultChoice = UNCHANGED
    if "default_channel_id" in body.model_fields_set:
        default = body.default_channel_id
    try:
        updated = services.tenancy.update_organization(
            user.organization_id, default_channel=default, fallback=body.fallback
        )
    except NotFound:
        raise InvalidInput(
            f"default_channel_id: no channel {body.default_channel_id!r} in this organization"
        ) from None
    return _payload(updated)
