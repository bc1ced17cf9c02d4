"""CSRF protection: every form carries its session's token; a POST without it is refused (403).

The token is random per session (auth.Session.csrf) and sent back in a hidden `csrf` field
(or an `X-CSRF-Token` header). The check runs as a dependency of every route of the web app,
so no form can forget it; SameSite=Lax cookies are a second line.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from mailvia.web.auth import current_session

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FIELD = "csrf"


class CsrfRefused(Exception):
    """A state-changing request without this session's token."""


async def csrf_guard(request: Request) -> None:
    """Raise CsrfRefused for an unsafe request whose token is missing or wrong."""
    if request.method not in UNSAFE:
        return
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        form = await request.form()
        value = form.get(FIELD)
        sent = value if isinstance(value, str) else None
    expected = current_session(request).csrf
    if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused()
