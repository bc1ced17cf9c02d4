"""Signing in and out, and changing the password (forced after a one-time password).

Side effects: a successful sign-in replaces the session (a new CSRF token, no fixation); a
password change stores the new argon2 hash, clears the must-change flag and ends every other
session of that user (their fingerprint no longer matches).
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mailvia.domain.errors import NotFound
from mailvia.web.auth import Session, fingerprint, replace_session
from mailvia.web.common import UserDep, WebDep, redirect, render
from mailvia.web.forms import text

router = APIRouter()

MIN_PASSWORD = 12


def safe_next(target: str) -> str:
    """Only a path on this site (never `//host` or a full URL) may follow signing in."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@router.get("/signin", response_class=HTMLResponse)
def signin_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "signin.html", next=safe_next(next), email="", error=None)


@router.post("/signin", response_class=HTMLResponse)
async def signin(request: Request, web: WebDep) -> Response:
    form = await request.form()
    email, password = text(form, "email").strip(), text(form, "password")
    target = safe_next(text(form, "next") or "/")
    client = request.client.host if request.client else "unknown"
    wait = web.throttle.wait(email, client)
    if wait > 0:
        error = (
            "Too many failed sign-ins for this account or from this address: "
            f"try again in {math.ceil(wait)} seconds."
        )
        return render(request, "signin.html", status=429, next=target, email=email, error=error)
    user = web.services.store.find_user(email) if email else None
    stored = web.services.store.password_hash(user.id) if user else None
    # argon2 takes tens of milliseconds: off the event loop. An unknown account is checked
    # against a dummy hash so that it takes as long as a wrong password.
    ok = await run_in_threadpool(web.verify_password, stored or web.dummy_hash, password)
    ok = ok and stored is not None
    if user is None or not ok:
        web.throttle.failed(email, client)
        error = "The email or the password is not right."
        return render(request, "signin.html", status=401, next=target, email=email, error=error)
    web.throttle.succeeded(email)
    replace_session(request, Session.fresh(user.id, fingerprint(stored)))
    return redirect("/password" if user.must_change_password else target)


@router.post("/signout")
def signout(request: Request) -> RedirectResponse:
    replace_session(request, None)
    return redirect("/signin", notice="signedout")


@router.get("/password", response_class=HTMLResponse)
def password_page(request: Request, user: UserDep) -> HTMLResponse:
    return render(request, "password.html", error=None, forced=user.must_change_password)


@router.post("/password", response_class=HTMLResponse)
async def change_password(request: Request, user: UserDep, web: WebDep) -> Response:
    form = await request.form()
    current, new, again = text(form, "current"), text(form, "new"), text(form, "again")
    store = web.services.store
    try:
        stored = store.password_hash(user.id)
    except NotFound:
        stored = None
    error = None
    if stored is None or not await run_in_threadpool(web.verify_password, stored, current):
        error = "The current password is not right."
    elif len(new) < MIN_PASSWORD:
        error = f"The new password needs at least {MIN_PASSWORD} characters."
    elif new != again:
        error = "The two new passwords differ."
    elif new == current:
        error = "The new password must differ from the current one."
    if error is not None:
        return render(
            request, "password.html", status=400, error=error, forced=user.must_change_password
        )
    new_hash = await run_in_threadpool(web.hash_password, new)
    store.set_password(user.id, new_hash, must_change_password=False)
    replace_session(request, Session.fresh(user.id, fingerprint(new_hash)))
    return redirect("/channel", notice="password")
