"""Users and their sender identities (admins): inviting someone (an invitation: a sign-in
link with their address, and a one-time password shown once); and API tokens (everyone:
their own), with the submission settings a mail client or an add-in needs.

Side effects: inviting stores the user with an argon2 hash of the one-time password; granting
stores an identity; creating a token stores its hash and shows the token once; revoking marks
it revoked.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from mailvia.domain.channel import Scope
from mailvia.domain.errors import MailviaError, NotFound
from mailvia.domain.tenancy import User, require_admin
from mailvia.outbox.listeners import SubmissionPort, SubmissionTls
from mailvia.web.common import UserDep, Web, WebDep, now, redirect, render
from mailvia.web.common import status_for as status_of
from mailvia.web.forms import text

router = APIRouter()


@dataclass(frozen=True)
class SubmissionSettings:
    """What to paste into a mail client or add-in: each port with the host to give it."""

    ports: list[tuple[str, SubmissionPort]]
    tls: SubmissionTls | None


def users_page(
    request: Request, web: Web, user: User, *, status: int = 200, **extra: Any
) -> HTMLResponse:
    tenancy = web.services.tenancy
    rows = [(m.user, m.team, m.identities) for m in tenancy.members(user)]
    teams = tenancy.teams(user)
    context: dict[str, Any] = {"rows": rows, "teams": teams, "created": None, "error": None}
    context.update(extra)
    return render(request, "users.html", status=status, **context)


@router.get("/users", response_class=HTMLResponse)
def users(request: Request, user: UserDep, web: WebDep) -> HTMLResponse:
    require_admin(user, "manage users")
    return users_page(request, web, user)


@router.post("/users", response_class=HTMLResponse)
async def create_user(request: Request, user: UserDep, web: WebDep) -> HTMLResponse:
    require_admin(user, "create users")
    form = await request.form()
    tenancy = web.services.tenancy
    try:
        org = tenancy.organization_of(user)
        created, password = await run_in_threadpool(  # argon2: off the event loop
            partial(tenancy.create_user, text(form, "email").strip()),
            org_name=org.name,
            team_name=text(form, "team"),
            admin=text(form, "role") == "admin",
            now=now(),
        )
    except MailviaError as exc:
        return users_page(request, web, user, status=status_of(exc), error=str(exc))
    link = str(request.base_url).rstrip("/") + "/signin?email=" + quote(created.email)
    visible = web.services.channels.visible(user)
    team_channel = any(c.scope is Scope.DOMAIN for c in visible)  # else: only their own
    return users_page(
        request, web, user, created=(created, password), link=link, team_channel=team_channel
    )


@router.post("/users/grant", response_class=HTMLResponse)
async def grant(request: Request, user: UserDep, web: WebDep) -> Response:
    require_admin(user, "grant sender identities")
    form = await request.form()
    try:
        target = web.services.tenancy.member(user, text(form, "email"))
        web.services.tenancy.grant(target.email, text(form, "identity"), now())
    except MailviaError as exc:
        return users_page(request, web, user, status=status_of(exc), error=str(exc))
    return redirect("/users", notice="granted")


def tokens_page(
    request: Request, web: Web, user: User, *, status: int = 200, **extra: Any
) -> HTMLResponse:
    tokens = web.services.tokens.of(user)
    context: dict[str, Any] = {
        "tokens": tokens,
        "token": None,
        "error": None,
        "submission": submission_settings(request, web),
    }
    context.update(extra)
    return render(request, "tokens.html", status=status, **context)


def submission_settings(request: Request, web: Web) -> SubmissionSettings:
    """The submission ports this process listens on, with the host a mail client should use:
    the port's own address, or, where it listens on every address, the host name this page
    was reached by."""
    ports, tls = web.services.listeners.submission()
    reached = request.url.hostname or "localhost"
    return SubmissionSettings(
        [(reached if p.host in ("0.0.0.0", "::", "") else p.host, p) for p in ports], tls
    )


@router.get("/tokens", response_class=HTMLResponse)
def tokens(request: Request, user: UserDep, web: WebDep) -> HTMLResponse:
    return tokens_page(request, web, user)


@router.post("/tokens", response_class=HTMLResponse)
async def create_token(request: Request, user: UserDep, web: WebDep) -> HTMLResponse:
    form = await request.form()
    name = " ".join(text(form, "name").split())[:100] or "web"
    token = web.services.tokens.create(user.email, name, now())
    return tokens_page(request, web, user, token=token, token_name=name)


@router.post("/tokens/{token_id}/revoke", response_class=HTMLResponse)
def revoke_token(request: Request, token_id: str, user: UserDep, web: WebDep) -> Response:
    try:
        web.services.tokens.revoke(user, token_id, now())
    except NotFound as exc:
        return tokens_page(request, web, user, status=404, error=str(exc))
    return redirect("/tokens", notice="revoked")
