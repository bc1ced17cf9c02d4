"""Team channels (admins): the organization's domain-scoped channels, its default channel (never
someone's own mailbox) and its fallback policy, why Microsoft 365 and Gmail are never team
channels, and the organization's own OAuth apps through which reps connect those mailboxes.

Side effects: saving the policy changes the organization's default channel and fallback;
saving an OAuth app stores it (the client secret sealed), removing one deletes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mailvia.domain.channel import Kind, Provider, Scope, shared_refusal
from mailvia.domain.errors import InvalidInput, MailviaError, NotFound
from mailvia.domain.presets import PRESETS
from mailvia.domain.tenancy import Fallback, User, require_admin
from mailvia.outbox.oauth.apps import AppView
from mailvia.web.common import UserDep, Web, WebDep, now, redirect, render, status_for
from mailvia.web.forms import text
from mailvia.web.wording import covers, provider, sharing

router = APIRouter()


@dataclass(frozen=True)
class AppPanel:
    """One provider's OAuth app on the page: what is set up and what to register."""

    provider: Provider
    app: AppView | None
    redirect_uri: str


def app_panels(web: Web, user: User) -> list[AppPanel]:
    services = web.services
    panels = []
    for each in Provider:
        try:
            app: AppView | None = services.oauth_apps.view(user, each)
        except NotFound:
            app = None
        panels.append(AppPanel(each, app, services.oauth.redirect_uri(each)))
    return panels


def team_page(
    request: Request, web: Web, user: User, *, status: int = 200, error: str | None = None
) -> HTMLResponse:
    services = web.services
    channels = [c for c in services.channels.visible(user) if c.kind is Kind.SMTP]
    teams = {t.id: t.name for t in services.tenancy.teams(user)}
    return render(
        request,
        "team.html",
        status=status,
        error=error,
        organization=services.tenancy.organization_of(user),
        team_channels=[c for c in channels if c.scope is Scope.DOMAIN],
        defaults=[c for c in channels if shared_refusal(c) is None],
        teams=teams,
        provider=provider,
        covers=covers,
        shareable=[p for p in PRESETS.values() if p.scope is Scope.DOMAIN],
        not_shared=[sharing(PRESETS[name]) for name in ("microsoft365", "gmail")],
        fallbacks=[str(f) for f in Fallback],
        apps=app_panels(web, user),
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


@router.post("/team/oauth/{provider}", response_class=HTMLResponse)
async def save_app(request: Request, provider: Provider, user: UserDep, web: WebDep) -> Response:
    """Save the organization's app (an empty secret keeps the stored one)."""
    require_admin(user, "manage the organization's OAuth apps")
    form = await request.form()
    try:
        saved = web.services.oauth_apps.put(
            user,
            provider,
            client_id=text(form, "client_id"),
            client_secret=text(form, "client_secret") or None,
            tenant=text(form, "tenant"),  # emptied: organizations (the field shows it)
            now=now(),
        )
    except MailviaError as exc:
        return team_page(request, web, user, status=status_for(exc), error=str(exc))
    return redirect("/team", notice="oauth_app_revived" if saved.revived else "oauth_app")


@router.post("/team/oauth/{provider}/remove", response_class=HTMLResponse)
def remove_app(request: Request, provider: Provider, user: UserDep, web: WebDep) -> Response:
    require_admin(user, "manage the organization's OAuth apps")
    try:
        web.services.oauth_apps.remove(user, provider)
    except MailviaError as exc:
        return team_page(request, web, user, status=status_for(exc), error=str(exc))
    return redirect("/team", notice="oauth_app_removed")
