"""Serving the metrics: the `/metrics` route on the HTTP listener, behind the operator's
METRICS_TOKEN (404 without the setting), and an app serving only `/metrics`, without a token,
for its own listener (METRICS_LISTEN)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import ASGIApp

from mailvia.domain.errors import Unauthenticated
from mailvia.ingress.api.auth import ServicesDep
from mailvia.ingress.metrics import PrometheusMetrics
from mailvia.outbox.services import Services

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
def metrics(request: Request, services: ServicesDep) -> Response:
    """The metrics, for `Authorization: Bearer <METRICS_TOKEN>`; 404 without the setting."""
    token = services.api.metrics_token
    if not token or not isinstance(services.metrics, PrometheusMetrics):
        raise HTTPException(404)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthenticated("the metrics token is required: Authorization: Bearer <token>")
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def metrics_app(services: Services) -> ASGIApp:
    """An app serving only `/metrics`, without a token, for its own listener."""
    source = services.metrics

    def scrape(request: Request) -> Response:
        if not isinstance(source, PrometheusMetrics):
            return Response(status_code=404)
        return Response(source.exposition(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", scrape)])
