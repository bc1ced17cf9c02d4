"""Path, query and header parameters shared by the routes, with their limits."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Path, Query, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from mailvia.domain.errors import InvalidInput

# Ids, names and cursors: one line of text without control characters.
PRINTABLE = r"^[^\x00-\x1f\x7f]{1,200}$"

Ref = Annotated[str, Path(pattern=PRINTABLE, description="An id (a channel also by its name).")]
Cursor = Annotated[
    str | None, Query(pattern=PRINTABLE, description="`next_cursor` of the previous page.")
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[!-~]{1,255}$",
        description="Retry safely: a key is kept per user for 24 hours; the same key with "
        "the same body returns the same message, with another body 409. Another user's key "
        "of the same name is a different key.",
    ),
]

Limit = Annotated[int, Query(ge=1, le=200, description="Page size, at most 200.")]
ChannelFilter = Annotated[str | None, Query(pattern=PRINTABLE, description="A channel id or name.")]


async def refuse_unknown_query(request: Request) -> None:
    """Raise InvalidInput for a query parameter the route does not take (like unknown JSON
    fields: a typo such as `?stat=queued` must not silently list everything). The names
    come from the OpenAPI document, which FastAPI builds from the routes (the first time in
    the thread pool, off the event loop). A request without a query costs no thread switch
    (nor a parse of its empty query)."""
    if (
        not request.scope.get("query_string")
        or not request.query_params
        or not isinstance(request.scope.get("route"), APIRoute)
    ):
        return
    await run_in_threadpool(_refuse_unknown_query, request)


def _refuse_unknown_query(request: Request) -> None:
    route = request.scope["route"]
    operation = request.app.openapi()["paths"][route.path_format][request.method.lower()]
    known = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "query"}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise InvalidInput(f"unknown query parameter: {', '.join(unknown)}")
