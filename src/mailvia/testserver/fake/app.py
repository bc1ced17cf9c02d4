"""The fake providers' ASGI application: every route on one Starlette app, the log outermost.

Builds; no I/O until served (`server.py`).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp

from mailvia.testserver.fake import consent, control, mailapi, oauth, urls
from mailvia.testserver.fake.http import RequestLogMiddleware
from mailvia.testserver.fake.state import FakeState

_BOTH = ["GET", "POST"]


def build_app(state: FakeState) -> ASGIApp:
    """The application serving `state`."""
    routes = [
        Route(urls.GOOGLE_AUTHORIZE, consent.google_authorize, methods=_BOTH),
        Route(urls.GOOGLE_TOKEN, oauth.google_token, methods=["POST"]),
        Route(urls.GOOGLE_REVOKE, oauth.google_revoke, methods=["POST"]),
        Route(urls.GOOGLE_USERINFO, oauth.google_userinfo, methods=_BOTH),
        Route(urls.GOOGLE_JWKS, oauth.google_jwks, methods=["GET"]),
        Route(urls.GMAIL_SEND, mailapi.gmail_send, methods=["POST"]),
        Route(urls.GMAIL_UPLOAD, mailapi.gmail_upload, methods=["POST"]),
        Route(urls.GRAPH_SEND, mailapi.graph_send, methods=["POST"]),
        *control.ROUTES,
        Route(urls.MICROSOFT_AUTHORIZE, consent.microsoft_authorize, methods=_BOTH),
        Route(urls.MICROSOFT_TOKEN, oauth.microsoft_token, methods=["POST"]),
        Route(urls.MICROSOFT_JWKS, oauth.microsoft_jwks, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.fake = state
    return RequestLogMiddleware(app, state)
