"""The caller's organization over HTTP: read it; admins set its default channel and the
fallback policy for mail whose channel is disconnected or paused."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mailvia.domain.errors import InvalidInput, NotFound
from mailvia.domain.tenancy import Organization, User
from mailvia.ingress.api.auth import CallerDep, ServicesDep, require_admin
from mailvia.ingress.api.errors import problems
from mailvia.ingress.api.schemas import OrganizationOut, OrganizationPatch
from mailvia.outbox.services import Services

router = APIRouter(prefix="/v1", tags=["organization"])


def _view(org: Organization) -> dict[str, Any]:
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
    return _view(services.store.get_organization(user.organization_id))


@router.patch(
    "/organization",
    response_model=OrganizationOut,
    responses=problems(400, 401, 403, 413, 422, 503),
    summary="Set the default channel and the fallback policy (admins)",
)
def update_organization(
    body: OrganizationPatch, services: ServicesDep, user: CallerDep
) -> dict[str, Any]:
    """Only the fields given change; `"default_channel_id": null` clears the default."""
    require_admin(user, "change the organization's settings")
    org = services.store.get_organization(user.organization_id)
    default = org.default_channel_id
    if "default_channel_id" in body.model_fields_set:
        ref = body.default_channel_id
        default = None if ref is None else _channel_id(services, user, ref)
    updated = services.store.update_organization(
        org.id, default_channel_id=default, fallback=body.fallback or org.fallback
    )
    return _view(updated)


def _channel_id(services: Services, user: User, ref: str) -> str:
    try:
        return services.channels.get(user, ref).id
    except NotFound:
        raise InvalidInput(f"default_channel_id: no channel {ref!r} in this organization") from None
