"""The ASGI app: the HTTP API (ingress/api/) plus `/healthz` and `/metrics`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from mailvia import __version__
from mailvia.ingress.api import create_api
from mailvia.ingress.api.auth import ServicesDep
from mailvia.ingress.api.errors import problems
from mailvia.ingress.api.schemas import Health
from mailvia.ingress.metrics_http import router as metrics_router
from mailvia.outbox.services import Services


def create_app(services: Services, *, clock: Callable[[], float] = time.monotonic) -> FastAPI:
    """The ASGI app, given what the composition root built; `clock` times the rate limit."""
    app = create_api(services, clock=clock)
    app.include_router(metrics_router)

    @app.get(
        "/healthz",
        response_model=Health,
        responses=problems(503),
        tags=["health"],
        summary="Whether the service can reach its outbox (no token needed)",
    )
    def healthz(services: ServicesDep) -> dict[str, Any]:
        services.tenancy.ready()  # StoreUnavailable → 503
        return {"status": "ok", "version": __version__}

    return app
