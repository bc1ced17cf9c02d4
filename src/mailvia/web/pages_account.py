"""Signing in and out, and changing the password (forced after a one-time password).

Side effects: a successful sign-in starts a server-side session and replaces the cookie (a new
CSRF token, no fixation); signing out ends the session; a password change (the policy is the
Accounts use case's) stores the new argon2 hash, clears the must-change flag and ends every
session of that user (this browser gets a new one). Failed sign-ins are counted per client
and per account at a client (domain/signins.py): a client that has not failed is never
refused.
"""

from __future__ import annotations

import math
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mailvia.domain.errors import InvalidInput
from mailvia.outbox.addresses import login_key
from mailvia.web.auth import Session, current_session, replace_session
from mailvia.web.common import UserDep, WebDep, now, redirect, render
from mailvia.web.forms import text

router = APIRouter()


def safe_next(target: str) -> str:
    """Only a path on this site (never `//host` or a full URL) may follow signing in."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@router.get("/signin", response_class=HTMLResponse)
def signin_page(request: Request, next: str = "/", email: str = "") -> HTMLResponse:
    """The sign-in form; `email` fills it in (an invitation's link carries it)."""
    email = email.strip()[:254]
    return render(request, "signin.html", next=safe_next(next), email=email, error=None)


@router.post("/signin", response_class=HTMLResponse)
async def signin(request: Request, web: WebDep) -> Response:
    form = await request.form()
    email, password = text(form, "email").strip(), text(form, "password")
    target = safe_next(text(form, "next") or "/")
    client = request.client.host if request.client else "unknown"
    login = login_key(email)  # counted as looked up: every spelling of a login is one account
    verdict = web.signins.verdict(login, client, web.monotonic())
    if verdict.locked or verdict.wait > 0:
        error = (
            "Too many failed sign-ins from this address: "
            f"try again in {max(1, math.ceil(verdict.wait))} seconds."
        )
        return render(request, "signin.html", status=429, next=target, email=email, error=error)
    attempt = web.signins.begin(login, client, web.monotonic())
    try:
        # argon2 takes tens of milliseconds: off the event loop.
        user = await run_in_threadpool(web.services.accounts.sign_in, email, password)
    except BaseException:
        web.signins.forget(attempt, succeeded=False)
        raise
    if user is None:
        web.signins.failed(attempt, web.monotonic())
        error = "The email or the password is not right."
        return render(request, "signin.html", status=401, next=target, email=email, error=error)
    web.signins.forget(attempt, succeeded=True)
    secret = await run_in_threadpool(web.services.sessions.start, user, now())
    replace_session(request, Session.fresh(secret))
    return redirect("/password" if user.must_change_password else target)


@router.post("/signout")
def signout(request: Request, web: WebDep) -> RedirectResponse:
    secret = current_session(request).secret
    if secret:
        web.services.sessions.end(secret)
    replace_session(request, None)
    return redirect("/signin", notice="signedout")


@router.get("/password", response_class=HTMLResponse)
def password_page(request: Request, user: UserDep) -> HTMLResponse:
    return render(request, "password.html", error=None, forced=user.must_change_password)


@router.post("/password", response_class=HTMLResponse)
async def change_password(request: Request, user: UserDep, web: WebDep) -> Response:
    form = await request.form()
    try:
        secret = await run_in_threadpool(  # argon2: off the event loop
            partial(web.services.accounts.change_password, user),
            current=text(form, "current"),
            new=text(form, "new"),
            again=text(form, "again"),
            now=now(),
        )
    except InvalidInput as exc:
        forced = user.must_change_password
        return render(request, "password.html", status=400, error=str(exc), forced=forced)
    replace_session(request, Session.fresh(secret))
    return redirect("/", notice="password")
