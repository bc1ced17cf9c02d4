"""The HTTP API (FastAPI): messages, channels, presets, routes, the organization and its
OAuth apps, starting OAuth connections, events, webhooks.

Bearer API tokens, each held to a rate limit (ratelimit.py); everything is scoped to the
caller's organization and role. Errors are `application/problem+json` (errors.py maps them in
one place). Path functions are plain `def`: the store is synchronous, so FastAPI runs them in
its thread pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.types import Receive, Scope, Send

from mailvia import __version__
from mailvia.ingress.api import (
    channel_tests,
    channels,
    errors,
    events,
    messages,
    oauth,
    organization,
    submit,
    webhooks,
)
from mailvia.ingress.api.channel_schemas import TestFailed
from mailvia.ingress.api.direct import DirectIntake
from mailvia.ingress.api.docs import serve_docs
from mailvia.ingress.api.errors import Problem, document_media_type, document_rate_limit
from mailvia.ingress.api.limits import BodyLimit, body_limit, document_limits
from mailvia.ingress.api.params import refuse_unknown_query
from mailvia.ingress.api.ratelimit import TokenRateLimit
from mailvia.ingress.api.rejections import INTAKE_PATHS, CountRejections
from mailvia.ingress.api.schemas import BatchIn, MessageIn
from mailvia.outbox.services import Services

DESCRIPTION = """Send mail through the right delivery channel for each sender.

Authenticate with `Authorization: Bearer <API token>`. Errors are `application/problem+json`
with a `detail` for people; another organization's objects are 404."""


# Problem: every error refers to it (TestFailed: one 422 of it); the message bodies: their
# routes read them themselves (off the event loop), so FastAPI does not list them.
_SCHEMAS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (Problem, "serialization"),
    (TestFailed, "serialization"),  # an edit refused by its test (PATCH /v1/channels/{id})
    (MessageIn, "validation"),
    (BatchIn, "validation"),
]


class MailviaAPI(FastAPI):
    """FastAPI whose OpenAPI document always describes the Problem schema that every error
    response refers to, and the rate limit's 429 on every operation that takes a token; its
    submit routes reached without the router (`direct_intake`: direct.py)."""

    direct_intake: DirectIntake | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct = self.direct_intake.app_for(scope) if self.direct_intake is not None else None
        if direct is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await direct(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = get_openapi(
                title=self.title,
                version=self.version,
                description=self.description,
                routes=self.routes,
            )
            _, defs = models_json_schema(_SCHEMAS, ref_template="#/components/schemas/{model}")
            found = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs.get("$defs", {}).items():
                found.setdefault(name, definition)
            document_rate_limit(schema)
            document_media_type(schema)
            services: Services = self.state.services
            document_limits(schema, caps=services.api.caps, recipients=services.api.recipient_limit)
            self.openapi_schema = schema
        return self.openapi_schema


def create_api(services: Services, *, clock: Callable[[], float] = time.monotonic) -> FastAPI:
    """The API over these services (what the composition root built); `clock` times the
    rate limit."""
    app = MailviaAPI(
        title="mailvia",
        version=__version__,
        description=DESCRIPTION,
        dependencies=[Depends(refuse_unknown_query)],
        # An undeclared body is read as JSON, as the submit routes read it; one declared as
        # something else is refused by the caller's check (`get_json_caller`, `check_json`).
        strict_content_type=False,
        docs_url=None,
        redoc_url=None,
    )
    serve_docs(app)
    app.state.services = services
    app.state.rate_limit = TokenRateLimit(
        services.api.rate_limit, recipients=services.api.recipient_limit, clock=clock
    )
    errors.install(app)
    app.add_middleware(BodyLimit, limit=body_limit(services.max_message_size))
    app.add_middleware(CountRejections, metrics=services.metrics)
    for module in (
        submit,
        messages,
        channel_tests,
        channels,
        organization,
        oauth,
        events,
        webhooks,
    ):
        app.include_router(module.router)
    # submit.router is included first, and the routes before it (the documentation's) take
    # no POST: its routes are the ones the router picks for these two paths.
    app.direct_intake = DirectIntake(
        app,
        {
            route.path: (route, route.get_route_handler())
            for route in submit.router.routes
            if isinstance(route, APIRoute)
            and route.path in INTAKE_PATHS
            and route.methods == {"POST"}
        },
    )
    return app


__all__ = ["create_api"]
