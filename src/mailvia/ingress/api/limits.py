"""The request limits: the body limit (a body over it is refused with 413 before it is read
when its Content-Length says so, and as soon as it passes the limit otherwise), and the
OpenAPI description of what a submission may carry (the caps and the recipient limit are
held in bodies.py and ratelimit.py)."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailvia.domain.ratelimit import RequestCaps, RequestRate
from mailvia.ingress.api.errors import problem, problem_response

# Base64 makes a raw message 4/3 as large; JSON and the other fields need a little more.
BASE64_GROWTH = 1.4
SLACK = 64 * 1024


def body_limit(max_message_size: int) -> int:
    return int(max_message_size * BASE64_GROWTH) + SLACK


class BodyTooLarge(HTTPException):
    """Raised while the body is read: an HTTPException, so FastAPI passes it to the
    problem handler instead of calling it a parse error."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit} bytes")


class BodyLimit:
    """ASGI middleware enforcing `limit` bytes per request body."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.limit:
            response = problem_response(problem(413, BodyTooLarge(self.limit).detail))
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def document_limits(
    schema: dict[str, Any], *, caps: RequestCaps, recipients: RequestRate | None
) -> None:
    """Write the limits this app holds submissions to into its OpenAPI document: what one
    request may carry (413 over it) and the recipients a token may submit (429 over it)."""
    limit = (
        f"An API token may submit {recipients.count} recipients per "
        f"{recipients.per_seconds:g} s (a burst of {recipients.count}, then a steady rate; "
        "`MAILVIA_API_RECIPIENT_LIMIT`); recipients over it are refused with 429 and "
        "`Retry-After`, before anything is checked."
        if recipients is not None
        else "API tokens have no recipient limit (`MAILVIA_API_RECIPIENT_LIMIT` is off)."
    )
    caps_text = (
        f"A request carries at most {caps.messages} messages and {caps.recipients} "
        "recipients (To, Cc and Bcc, or raw envelopes, of all its messages; "
        "`MAILVIA_API_BATCH_MAX_MESSAGES`, `MAILVIA_API_REQUEST_MAX_RECIPIENTS`); over "
        "either it is refused with 413 before any message is checked."
    )
    paths = schema.get("paths", {})
    for path, texts in (("/v1/messages", (limit,)), ("/v1/messages/batch", (caps_text, limit))):
        operation = paths.get(path, {}).get("post")
        if operation is not None:
            operation["description"] = "\n\n".join((operation.get("description", ""), *texts))
