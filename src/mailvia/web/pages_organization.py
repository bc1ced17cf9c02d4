"""The organization (admins): its name, its sending domains (added here while the install
serves one organization; else by the operator), its teams, and where its default channel is
set (Team channels).

Side effects: renaming changes the organization's name (the CLI's `--org` names it so too);
adding a domain assigns it to this organization alone; adding a team creates it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mailvia.domain.errors import MailviaError
from mailvia.domain.tenancy import User, require_admin
from mailvia.web.common import UserDep, Web, WebDep, now, redirect, render, status_for
from mailvia.web.forms import text

router = APIRouter()


def organization_page(
    request: Request, web: Web, user: User, *, status: int = 200, error: str | None = None
) -> HTMLResponse:
    tenancy = web.services.tenancy
    organization = tenancy.organization_of(user)
    channels = {c.id: c for c in web.services.channels.visible(user)}
    members = tenancy.members(user)
    teams = [(t, sum(m.user.team_id == t.id for m in members)) for t in tenancy.teams(user)]
    return render(
        request,
        "organization.html",
        status=status,
        error=error,
        organization=organization,
        default=channels.get(organization.default_channel_id or ""),
        domains=tenancy.domains(user),
        may_add_domains=tenancy.may_add_domains(user),
        teams=teams,
    )


@router.get("/organization", response_class=HTMLResponse)
def organization(request: Request, user: UserDep, web: WebDep) -> HTMLResponse:
    require_admin(user, "manage the organization")
    return organization_page(request, web, user)


async def _change(
    request: Request, web: Web, user: User, act: Callable[[Any], object], notice: str
) -> Response:
    """Run one change from a form: back to the page with its notice, or the page with the
    error and what to fix."""
    form = await request.form()
    try:
        act(form)
    except MailviaError as exc:
        return organization_page(request, web, user, status=status_for(exc), error=str(exc))
    return redirect("/organization", notice=notice)


@router.post("/organization/name", response_class=HTMLResponse)
async def rename(request: Request, user: UserDep, web: WebDep) -> Response:
    tenancy = web.services.tenancy
    return await _change(
        request, web, user, lambda form: tenancy.rename(user, text(form, "name")), "renamed"
    )


@router.post("/organization/domains", response_class=HTMLResponse)
async def add_domain(request: Request, user: UserDep, web: WebDep) -> Response:
    tenancy = web.services.tenancy

    def act(form: Any) -> None:
        tenancy.add_domain_as(user, text(form, "domain"), now())

    return await _change(request, web, user, act, "domain")


@router.post("/organization/teams", response_class=HTMLResponse)
async def add_team(request: Request, user: UserDep, web: WebDep) -> Response:
    tenancy = web.services.tenancy
    return await _change(
        request, web, user, lambda form: tenancy.add_team(user, text(form, "name"), now()), "team"
    )
