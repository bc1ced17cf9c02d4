"""The composition root's HTTP part: where people reach mailvia (`Listening`), and the ASGI
app `serve` runs, the API with the setup pages beside it (used by app/wiring.py)."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from mailvia.keyring import derived_key
from mailvia.outbox.services import Services
from mailvia.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI


class Listening:
    """Where people reach mailvia: PUBLIC_URL, else where `serve` listens once it has bound
    its socket, else the HTTP_LISTEN setting (OAuth redirect URIs are made from it)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._bound: str | None = None

    def bound(self, url: str) -> None:
        self._bound = url

    def url(self) -> str:
        return self._settings.public_url or self._bound or f"http://{self._settings.http_listen}"


def session_key(settings: Settings) -> bytes:
    """The key that signs the pages' session cookies, derived from the master key so that
    every process serving pages agrees on it (rotating the master key ends all sessions)."""
    return derived_key(settings, b"mailvia web sessions")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def asgi_app(services: Services, settings: Settings) -> FastAPI:
    """The HTTP app that `serve` runs: the API (/v1/..., /healthz, /docs) and the setup pages
    beside it. Session cookies are always Secure unless the listener is on loopback (a local
    try-out, or a TLS proxy in front, whose HTTPS requests still get Secure cookies)."""
    from mailvia.ingress.http import create_app
    from mailvia.web import create_web, mount_beside
    from mailvia.web.docs_headers import protect_docs

    api = create_app(services)
    web = create_web(
        services,
        secure_cookies=not _loopback(settings.http_listen.host),
        session_key=session_key(settings),
    )
    mount_beside(api, web)
    protect_docs(api)
    return api
