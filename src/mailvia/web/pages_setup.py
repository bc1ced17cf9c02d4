"""The start of the pages: where `/` leads, the first run of a fresh install (`/welcome`: the
organization's name, the admin's real address, the first sending domains) and the getting
started checklist (`/start`), which ticks itself off from the organization's real state.

Who may do the first run, and add domains from the pages at all: an admin while the install
serves one organization (domain/tenancy.may_add_domains); the Setup use case says so.

Side effects: the first run renames the organization, assigns its domains and makes the
admin's address their sign-in and first identity (the session stays signed in).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mailvia.domain.errors import MailviaError
from mailvia.domain.tenancy import User, require_admin
from mailvia.outbox.setup import FirstRun, Task
from mailvia.web.common import NOTICES, UserDep, Web, WebDep, now, redirect, render, status_for
from mailvia.web.forms import text

router = APIRouter()


def landing(web: Web, user: User) -> str:
    """Where a signed-in user starts: an admin with the first run to do at `/welcome`, one
    whose checklist is not done at `/start`, everyone else at their delivery channel."""
    if not user.is_admin:
        return "/channel"
    setup = web.services.setup
    if setup.first_run_open(user):
        return "/welcome"
    return "/channel" if setup.checklist(user).complete else "/start"


@router.get("/")
def home(request: Request, user: UserDep, web: WebDep) -> RedirectResponse:
    notice = request.query_params.get("notice", "")
    return redirect(landing(web, user), notice=notice if notice in NOTICES else None)


def welcome_page(
    request: Request,
    web: Web,
    user: User,
    fields: dict[str, str],
    *,
    status: int = 200,
    error: str | None = None,
) -> HTMLResponse:
    return render(request, "welcome.html", status=status, fields=fields, error=error)


@router.get("/welcome", response_class=HTMLResponse)
def welcome(request: Request, user: UserDep, web: WebDep) -> Response:
    require_admin(user, "set the organization up")
    if not web.services.setup.first_run_open(user):
        return redirect("/start")
    org = web.services.tenancy.organization_of(user)
    fields = {
        "organization": "" if org.name == "default" else org.name,
        "email": "" if user.email.endswith("@localhost") else user.email,
        "domains": "",
    }
    return welcome_page(request, web, user, fields)


@router.post("/welcome", response_class=HTMLResponse)
async def first_run(request: Request, user: UserDep, web: WebDep) -> Response:
    form = await request.form()
    fields = {name: text(form, name).strip() for name in ("organization", "email", "domains")}
    try:
        web.services.setup.first_run(user, FirstRun(**fields), now())
    except MailviaError as exc:
        return welcome_page(request, web, user, fields, status=status_for(exc), error=str(exc))
    return redirect("/start", notice="setup")


@router.get("/start", response_class=HTMLResponse)
def start(request: Request, user: UserDep, web: WebDep) -> Response:
    if web.services.setup.first_run_open(user):
        return redirect("/welcome")
    checklist = web.services.setup.checklist(user)
    return render(
        request,
        "start.html",
        checklist=checklist,
        tasks=list(Task),
        done_count=len(checklist.done),
        domains=web.services.tenancy.domains(user),
        organization=web.services.tenancy.organization_of(user),
    )
