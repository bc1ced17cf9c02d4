"""Counting the messages the API refuses (the `mailvia_intake_rejections_total` metric):
whole requests by their error status, a batch's single messages by their error."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailvia.domain.errors import MailviaError
from mailvia.outbox.metrics import rejection_reason
from mailvia.outbox.webhook_ports import Metrics

# Whole API requests refused, by status (a batch's single messages are counted one by one).
_REASON_FOR_STATUS = {
    400: "invalid",
    401: "unauthenticated",
    403: "forbidden",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}
INTAKE_PATHS = ("/v1/messages", "/v1/messages/batch")


class CountRejections:
    """ASGI middleware counting refused submissions to the API (`POST /v1/messages` and
    `/v1/messages/batch` answered with an error), by reason."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in INTAKE_PATHS
        ):
            await self.app(scope, receive, send)
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self.metrics.rejected("api", _REASON_FOR_STATUS.get(message["status"], "other"))
            await send(message)

        await self.app(scope, receive, watch)


def count_rejected(metrics: Metrics, errors: Iterable[MailviaError]) -> None:
    """Count the single messages of a batch that were refused."""
    for exc in errors:
        metrics.rejected("api", rejection_reason(exc))
