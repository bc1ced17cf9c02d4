"""HTTP plumbing of the fake providers: the request log, faults (stall, drop), credentials.

Side effects: closes or holds client connections for `drop` and `stall` faults. The connection
is reached through uvicorn's h11 protocol (`send.__self__.transport`), recorded in the scope by
the outermost middleware; the server runs uvicorn with `http="h11"` for that reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailvia.testserver.fake.state import FakeState
from mailvia.testserver.faults import Action, Drop, HttpFault, Stall

TRANSPORT = "mailvia.transport"
CONTROL_PREFIX = "/_fake/"


def fake_state(request: Request) -> FakeState:
    """The server's shared state."""
    state: FakeState = request.app.state.fake
    return state


class RequestLogMiddleware:
    """Logs each provider request in `FakeState.log` as it arrives (status filled in when the
    answer starts) and records the connection's transport for `drop` and `stall`."""

    def __init__(self, app: ASGIApp, state: FakeState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[TRANSPORT] = getattr(getattr(send, "__self__", None), "transport", None)
        if scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        entry: dict[str, Any] = {
            "at": self.state.clock(),
            "method": scope["method"],
            "path": scope["path"],
            "status": None,
            "provider": None,
            "stage": None,
            "account": None,
            "consent": None,
            "token": None,
            "fault": None,
        }
        scope.setdefault("state", {})["log"] = entry
        self.state.log.add(entry)

        async def logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
            await send(message)

        await self.app(scope, receive, logged)


def note(request: Request, **fields: Any) -> None:
    """Fill in this request's log entry (provider, stage, account, consent, token, fault)."""
    entry = request.scope.get("state", {}).get("log")
    if entry is not None:
        entry.update(fields)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Dropped(Response):
    """Close the connection without an answer (the `drop` fault)."""

    def __init__(self) -> None:
        super().__init__(status_code=500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = scope.get(TRANSPORT)
        if transport is None:
            raise RuntimeError("drop needs uvicorn's h11 protocol (the connection is unknown)")
        transport.close()
        await _until_disconnect(receive)


class Held(Response):
    """Never answer; wait until the client gives up (the `stall` fault without seconds)."""

    def __init__(self, state: FakeState) -> None:
        super().__init__(status_code=500)
        self.fake = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = scope.get(TRANSPORT)
        if transport is not None:
            self.fake.held.add(transport)
        try:
            await _until_disconnect(receive)
        finally:
            self.fake.held.discard(transport)


def describe(action: Action) -> str:
    """A short text for the request log: `429 retry-after=5`, `drop`, `stall:2`..."""
    match action:
        case HttpFault(status=status, reason=reason, retry_after=retry):
            parts = [str(status) if status else "", reason or ""]
            parts.append(f"retry-after={retry}" if retry is not None else "")
            return " ".join(part for part in parts if part)
        case Stall(seconds=None):
            return "stall"
        case Stall(seconds=seconds):
            return f"stall:{seconds:g}"
        case Drop():
            return "drop"
    return repr(action)


async def injected(
    request: Request, stage: str, render: Callable[[HttpFault], Response]
) -> Response | None:
    """Take the fault for `stage`: a response to send instead, or None to go on normally
    (after waiting, for `stall:SECONDS`)."""
    state = fake_state(request)
    note(request, stage=stage)
    action = state.take_fault(stage)
    if action is None:
        return None
    note(request, fault=describe(action))
    match action:
        case HttpFault():
            return render(action)
        case Stall(seconds=None):
            return Held(state)
        case Stall(seconds=seconds):
            await asyncio.sleep(seconds or 0.0)
            return None
        case Drop():
            return Dropped()
    return None


def bearer(request: Request) -> str | None:
    """The Bearer token of the Authorization header, if any."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def client_credentials(request: Request, form: FormData) -> tuple[str, str | None]:
    """(client_id, client_secret) from HTTP Basic (RFC 6749 2.3.1) or else the form body."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        client_id, colon, secret = decoded.partition(":")
        if colon:
            return unquote_plus(client_id), unquote_plus(secret)
    return str(form.get("client_id") or ""), _text(form.get("client_secret"))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def form_text(form: FormData, name: str) -> str:
    """A form field as text ('' when missing or a file)."""
    return _text(form.get(name)) or ""
