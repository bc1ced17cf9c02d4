"""Team channels (admins): the organization's domain-scoped channels, its default channel (never
someone's own mailbox) and its fallback policy, and why Microsoft 365 and Gmail are never team
channels.

Side effects: saving the policy changes the organization's default channel and fallback.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mailvia.domain.channel import Kind, Scope, shared_refusal
from mailvia.domain.errors import InvalidInput, MailviaError
from mailvia.domain.presets import PRESETS
from mailvia.domain.tenancy import Fallback, User
from mailvia.web.common import UserDep, Web, WebDep, redirect, render, require_admin, status_for
from mailvia.web.forms import text
from mailvia.web.views import covers, provider, sharing

router = APIRouter()


def team_page(
    request: Request, web: Web, user: User, *, status: int = 200, error: str | None = None
) -> HTMLResponse:
    services = web.services
    channels = [c for c in services.channels.visible(user) if c.kind is Kind.SMTP]
    teams = {t.id: t.name for t in services.store.list_teams(user.organization_id)}
    return render(
        request,
        "team.html",
        status=status,
        error=error,
        organization=services.store.get_organization(user.organization_id),
        team_channels=[c for c in channels if c.scope is Scope.DOMAIN],
        defaults=[c for c in channels if shared_refusal(c) is None],
        teams=teams,
        provider=provider,
        covers=covers,
        shareable=[p for p in PRESETS.values() if p.scope is Scope.DOMAIN],
        not_shared=[sharing(PRESETS[name]) for name in ("microsoft365", "gmail")],
        fallbacks=[str(f) for f in Fallback],
    )


@router.get("/team", response_class=HTMLResponse)
def team(request: Request, user: UserDep, web: WebDep) -> HTMLResponse:
    require_admin(user, "manage team channels")
    return team_page(request, web, user)


@router.post("/team/policy", response_class=HTMLResponse)
async def policy(request: Request, user: UserDep, web: WebDep) -> Response:
    require_admin(user, "change the organization's settings")
    form = await request.form()
    try:
        try:
            fallback = Fallback(text(form, "fallback"))
        except ValueError:
            raise InvalidInput("fallback: choose hold or next") from None
        web.services.tenancy.update_organization(
            user.organization_id,
            default_channel=text(form, "default_channel") or None,
            fallback=fallback,
        )
    except MailviaError as exc:
        return team_page(request, web, user, status=status_for(exc), error=str(exc))
    return redirect("/team", notice="policy")
