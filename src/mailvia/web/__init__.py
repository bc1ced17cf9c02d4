"""The setup pages: server-rendered HTML over the use cases, usable without JavaScript.

`create_web(services, ...)` builds a FastAPI sub-application that the composition root mounts
at `/` beside the API. Pages: `/signin`, `/password`, `/welcome` (the first run), `/start`
(the checklist), `/channel` (my delivery channel), `/channels/new`, `/channels/{id}`,
`/organization` (its name, domains and teams), `/team`, `/users`, `/tokens`, `/activity`,
and the OAuth connect flow (`/oauth/{provider}/start`, `/oauth/go/{id}`,
`/oauth/{provider}/callback`). A signed cookie (auth.py) names a server-side session
(`services.sessions`) checked on every request; every POST carries the cookie's CSRF token
(csrf.py). It sees only `mailvia.domain` and the use cases (`Services`), never the store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from importlib.resources import files
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount
from starlette.types import Scope

from mailvia.domain.errors import MailviaError
from mailvia.outbox.services import Services
from mailvia.web import (
    pages_account,
    pages_activity,
    pages_channel,
    pages_channel_saved,
    pages_mend,
    pages_oauth,
    pages_organization,
    pages_setup,
    pages_team,
    pages_users,
)
from mailvia.web.auth import SessionCodec, SessionMiddleware
from mailvia.web.common import (
    PasswordChangeRequired,
    SignInRequired,
    Web,
    redirect,
    render,
    status_for,
)
from mailvia.web.csrf import CsrfRefused, csrf_guard

log = logging.getLogger("mailvia.web")
STATIC = files("mailvia.web") / "static"
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


def create_web(
    services: Services, *, secure_cookies: bool, session_key: bytes | None = None
) -> FastAPI:
    """The pages over these services. `session_key` signs session cookies (random when None:
    sessions then end when the process does); `secure_cookies` marks them Secure even on
    plain HTTP requests (HTTPS requests always get Secure)."""
    app = FastAPI(
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(csrf_guard)],
    )
    services.accounts.prepare()
    app.state.web = Web(services)
    for module in (
        pages_account,
        pages_setup,
        pages_organization,
        pages_channel,
        pages_oauth,
        pages_mend,  # before pages_channel_saved: its /channels/{id}/{verb} takes the rest
        pages_channel_saved,
        pages_team,
        pages_users,
        pages_activity,
    ):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    _install_errors(app)
    app.middleware("http")(_security_headers)
    codec = SessionCodec(session_key or os.urandom(32))
    app.add_middleware(SessionMiddleware, codec=codec, secure=secure_cookies)
    return app


async def _security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.url.path.startswith("/static/"):
        response.headers["cache-control"] = "no-store"
    return response


def _install_errors(app: FastAPI) -> None:
    """Each failure becomes a page (or a redirect to sign in), in one place."""

    async def sign_in(request: Request, exc: Exception) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return redirect("/signin?next=" + quote(target, safe="/"))

    async def change_password(request: Request, exc: Exception) -> Response:
        return redirect("/password")

    async def csrf(request: Request, exc: Exception) -> Response:
        detail = (
            "This form was refused: it did not carry this session's security token. "
            "Reload the page and send it again."
        )
        return render(request, "error.html", status=403, title="Refused", detail=detail)

    async def mailvia(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MailviaError)
        status = status_for(exc)
        if status == 503:
            return _unavailable(request, exc)
        return render(request, "error.html", status=status, title=_TITLES[status], detail=str(exc))

    async def http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        title = "Not found" if exc.status_code == 404 else "Refused"
        return render(request, "error.html", status=exc.status_code, title=title, detail=exc.detail)

    async def invalid(request: Request, exc: Exception) -> Response:
        detail = "The request's fields could not be read."
        return render(request, "error.html", status=400, title="Bad request", detail=detail)

    app.add_exception_handler(SignInRequired, sign_in)
    app.add_exception_handler(PasswordChangeRequired, change_password)
    app.add_exception_handler(CsrfRefused, csrf)
    app.add_exception_handler(MailviaError, mailvia)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(RequestValidationError, invalid)


RETRY_AFTER_SECONDS = "30"


def _unavailable(request: Request, exc: MailviaError) -> Response:
    """The store (or the master key) cannot be used right now: a short page that says so,
    never the cause (the log has it), and no banners or nav, which would ask the store."""
    log.warning("page %s unavailable: %s", request.url.path, exc)
    request.state.user = None
    response = render(
        request,
        "error.html",
        status=503,
        title="Temporarily unavailable",
        detail="mailvia cannot reach its database right now. Try again in a minute.",
    )
    response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response


_TITLES = {
    400: "Bad request",
    401: "Not signed in",
    403: "Refused",
    404: "Not found",
    409: "Conflict",
    503: "Unavailable",
}


class BesideMount(Mount):
    """The pages mounted at `/` that leave the API's own paths (and their 404 and 405
    answers) to the API."""

    def __init__(self, app: FastAPI, *, api_paths: frozenset[str], api_prefixes: tuple[str, ...]):
        super().__init__("/", app=app)
        self.api_paths = api_paths
        self.api_prefixes = api_prefixes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if path in self.api_paths or path.startswith(self.api_prefixes):
            return Match.NONE, {}
        return super().matches(scope)


def mount_beside(api: FastAPI, web: FastAPI, *, api_prefixes: tuple[str, ...] = ("/v1/",)) -> None:
    """Serve the pages from the API's app for every path the API does not own."""
    paths = frozenset(getattr(route, "path", "") for route in api.routes)
    api.router.routes.append(BesideMount(web, api_paths=paths, api_prefixes=api_prefixes))


__all__ = ["create_web", "mount_beside"]
