"""Sessions of the setup pages: a signed cookie naming a server-side session, and who is in it.

The cookie holds `{csrf, session secret}` signed with itsdangerous (HMAC with a key the
composition root derives from the master key); it is HttpOnly, SameSite=Lax, and Secure when
the app is told so or the request came over HTTPS. Every visitor gets one (the sign-in form
needs a CSRF token too) without any server-side state; signing in replaces it with a fresh
one that names a session kept by the `Sessions` use case (outbox/accounts.py), which every
request checks, so that signing out, a password change or a removed user ends it at once.
The cookie itself lasts `MAX_AGE` seconds.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection

COOKIE = "mailvia_session"
MAX_AGE = 12 * 3600

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Session:
    """One browser's cookie: its CSRF token, and the secret of the server-side session it
    signed in to (None: nobody signed in)."""

    csrf: str
    secret: str | None = None

    @classmethod
    def fresh(cls, secret: str | None = None) -> Session:
        return cls(secrets.token_urlsafe(32), secret)


class SessionCodec:
    """Signs sessions into cookie values and back."""

    def __init__(self, key: bytes, *, max_age: int = MAX_AGE) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt="mailvia.web.session")
        self.max_age = max_age

    def dumps(self, session: Session) -> str:
        data = {"c": session.csrf, "s": session.secret}
        return str(self._serializer.dumps(data))

    def loads(self, value: str) -> Session | None:
        """The session, or None for a forged, damaged or expired cookie."""
        try:
            data = self._serializer.loads(value, max_age=self.max_age)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        secret = data.get("s")
        if not (secret is None or isinstance(secret, str)):
            return None
        return Session(data["c"], secret)


def current_session(conn: HTTPConnection) -> Session:
    """The session of this request (the middleware always sets one)."""
    session: Session = conn.state.session
    return session


def replace_session(conn: HTTPConnection, session: Session | None) -> None:
    """Send a new session cookie with the response (None: a fresh anonymous session)."""
    conn.state.session = session or Session.fresh()
    conn.state.session_changed = True


class SessionMiddleware:
    """Loads the session cookie into `request.state.session` (a fresh one when missing or
    invalid) and sets the cookie on the response when the session is new or replaced."""

    def __init__(self, app: ASGIApp, *, codec: SessionCodec, secure: bool) -> None:
        self.app = app
        self.codec = codec
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        raw = conn.cookies.get(COOKIE)
        session = self.codec.loads(raw) if raw else None
        conn.state.session = session or Session.fresh()
        conn.state.session_changed = session is None
        secure = self.secure or conn.url.scheme == "https"

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and conn.state.session_changed:
                headers = MutableHeaders(scope=message)
                headers.append("set-cookie", self.cookie(conn.state.session, secure=secure))
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def cookie(self, session: Session, *, secure: bool) -> str:
        parts = [
            f"{COOKIE}={self.codec.dumps(session)}",
            "Path=/",
            f"Max-Age={self.codec.max_age}",
            "HttpOnly",
            "SameSite=Lax",
        ]
        if secure:
            parts.append("Secure")
        return "; ".join(parts)
