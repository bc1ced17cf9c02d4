"""The HTTP API (FastAPI). For now: health; the full API grows here (issue 5)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from mailvia import __version__
from mailvia.domain.errors import StoreUnavailable
from mailvia.outbox.services import Services


def create_app(services: Services) -> FastAPI:
    """The ASGI app, given what the composition root built."""
    app = FastAPI(title="mailvia", version=__version__)

    @app.get("/healthz")
    def healthz() -> Any:
        try:
            services.store.count_users()
        except StoreUnavailable as exc:
            return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
        return {"status": "ok", "version": __version__}

    return app
