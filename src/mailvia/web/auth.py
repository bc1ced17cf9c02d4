"""Sessions of the setup pages: a signed cookie, the signed-in user, and slowing failed sign-ins.

The cookie holds `{csrf, user id, password fingerprint}` signed with itsdangerous (HMAC with a
key the composition root derives from the master key); it is HttpOnly, SameSite=Lax, and
Secure when the app is told so or the request came over HTTPS. Every visitor gets one (the
sign-in form needs a CSRF token too); signing in replaces it with a fresh one. A password
change alters the fingerprint, so every other session of that user ends with it. Sessions
last `MAX_AGE` seconds from sign-in. Failed sign-ins are slowed per account and per client
address (in this process's memory).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
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
    """One browser's session: its CSRF token, and who signed in (None: nobody yet)."""

    csrf: str
    user_id: str | None = None
    fingerprint: str | None = None

    @classmethod
    def fresh(cls, user_id: str | None = None, fingerprint: str | None = None) -> Session:
        return cls(secrets.token_urlsafe(32), user_id, fingerprint)


def fingerprint(password_hash: str | None) -> str:
    """A short digest of the stored password hash: a session is valid while it matches."""
    return hashlib.sha256(("mailvia session " + (password_hash or "")).encode()).hexdigest()[:24]


class SessionCodec:
    """Signs sessions into cookie values and back."""

    def __init__(self, key: bytes, *, max_age: int = MAX_AGE) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt="mailvia.web.session")
        self.max_age = max_age

    def dumps(self, session: Session) -> str:
        data = {"c": session.csrf, "u": session.user_id, "f": session.fingerprint}
        return str(self._serializer.dumps(data))

    def loads(self, value: str) -> Session | None:
        """The session, or None for a forged, damaged or expired cookie."""
        try:
            data = self._serializer.loads(value, max_age=self.max_age)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        user, print_ = data.get("u"), data.get("f")
        if not (user is None or isinstance(user, str)) or not (
            print_ is None or isinstance(print_, str)
        ):
            return None
        return Session(data["c"], user, print_)


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


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


@dataclass
class SignInThrottle:
    """Slows password guessing: after `free` failures for one account (or `free_per_client`
    from one client address) within `window` seconds, each further try must wait twice as
    long as the one before (1 s, 2 s, 4 s, ... up to `cap`), and is refused unchecked until
    then. A success clears the account's failures."""

    free: int = 5
    free_per_client: int = 20
    window: float = 900.0
    cap: float = 900.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, _Failures] = field(default_factory=dict)

    def wait(self, account: str, client: str) -> float:
        """Seconds until this account may try again from this client (0: now)."""
        now = self.clock()
        return max(
            self._wait(f"a:{account.lower()}", self.free, now),
            self._wait(f"c:{client}", self.free_per_client, now),
        )

    def failed(self, account: str, client: str) -> None:
        now = self.clock()
        for key in (f"a:{account.lower()}", f"c:{client}"):
            entry = self._failures.setdefault(key, _Failures())
            if now - entry.last > self.window:
                entry.count = 0
            entry.count += 1
            entry.last = now
        if len(self._failures) > 100_000:  # forget the oldest when flooded
            oldest = sorted(self._failures, key=lambda k: self._failures[k].last)
            for key in oldest[: len(oldest) // 2]:
                del self._failures[key]

    def succeeded(self, account: str) -> None:
        self._failures.pop(f"a:{account.lower()}", None)

    def _wait(self, key: str, free: int, now: float) -> float:
        entry = self._failures.get(key)
        if entry is None or entry.count < free or now - entry.last > self.window:
            return 0.0
        delay = min(2.0 ** (entry.count - free), self.cap)
        return max(0.0, entry.last + delay - now)
