"""The security headers of the pages (SECURITY_HEADERS), given to the API's documentation too:
`/docs` (Swagger UI), its OAuth redirect page, `/redoc`, `/openapi.json` and their assets
under `/docs/assets/`, which the API serves and which no page may frame either.

Their content security policies differ from the pages' only by what each documentation page
loads: Swagger UI and ReDoc come from this server (`ingress/api/docs.py`), never a CDN, and
each inline script is allowed by its SHA-256 alone, worked out from the page as it is sent.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailvia.web import SECURITY_HEADERS

ASSETS = "/docs/assets/"
_CLOSED = "frame-ancestors 'none'; base-uri 'none'; object-src 'none'; form-action 'none'"
# What each documentation page may load; {scripts} becomes the hashes of its inline scripts.
# The bundles' own code sets inline styles (Swagger UI's attributes, ReDoc's styled
# components), and ReDoc searches in a worker it starts from a blob.
POLICIES = {
    "/docs": "script-src 'self' {scripts}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'",
    "/docs/oauth2-redirect": "script-src {scripts}; connect-src 'self'",
    "/redoc": "script-src 'self' {scripts}; style-src 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src blob:",
    "/openapi.json": "",
}
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


def protect_docs(api: FastAPI) -> None:
    """Give the API's documentation the pages' security headers (before it serves)."""
    api.add_middleware(DocsHeaders)


class DocsHeaders:
    """ASGI middleware: the documentation's answers are held until complete (they are small)
    and sent with the security headers; every other request passes untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith(ASSETS):
            await self.app(scope, receive, _asset_headers(send))
            return
        allowed = POLICIES.get(path) if scope["type"] == "http" else None
        if allowed is None:
            await self.app(scope, receive, send)
            return
        start: Message = {}
        chunks: list[bytes] = []

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body = b"".join(chunks)
                    headers = MutableHeaders(raw=list(start.get("headers", [])))
                    for name, value in SECURITY_HEADERS.items():
                        headers[name] = value
                    headers["content-security-policy"] = policy(allowed, body)
                    await send({**start, "headers": headers.raw})
                    await send({"type": "http.response.body", "body": body})
            else:
                await send(message)

        await self.app(scope, receive, with_headers)


def _asset_headers(send: Send) -> Send:
    """The pages' headers on a script, style sheet or icon (sent as they stream)."""

    async def with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(raw=list(message.get("headers", [])))
            for name, value in SECURITY_HEADERS.items():
                headers[name] = value
            message = {**message, "headers": headers.raw}
        await send(message)

    return with_headers


def policy(allowed: str, page: bytes) -> str:
    """The content security policy of a documentation page: nothing but what it `allowed`
    (with its inline scripts' hashes), never framed."""
    scripts = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    allowed = re.sub(r" +", " ", allowed.format(scripts=scripts)).replace(" ;", ";")
    return "; ".join(part for part in ("default-src 'none'", allowed.strip(), _CLOSED) if part)
