"""The submit routes' own request handler: what FastAPI's dependency solving did for them,
done directly, and a small message's whole work in one worker-thread call.

FastAPI solved five dependencies per submit request on the event loop and ran the token's
lookup in its thread pool, then the route ran its work there again: two thread switches
and most of a single POST's CPU outside the submit itself. `IntakeRoute` keeps the
route's declaration (its OpenAPI operation comes from the endpoint's signature, unchanged)
and handles a request itself, in the same order with the same answers:

1. a query parameter the route does not take: 422 (the app's `refuse_unknown_query`);
2. the token and its rate limit (`get_caller`): 401, 429;
3. the header parameters (Idempotency-Key's pattern): 422, FastAPI's own validation;
4. the Content-Type: 422 for anything but JSON;
5. the route's work on the body (`IntakeWork`), in a worker thread.

A body whose Content-Length is at most `SMALL_BODY` (what uvicorn reads ahead of the app
anyway) is taken first, and steps 2-5 run in one worker-thread call, the token still
checked before the body is looked at (the work calls the checks first: a single POST does
so inside its one read transaction, so the token's read is not a transaction of its own);
a larger or chunked body, or one the client holds back until told to go on (`Expect:
100-continue`: uvicorn sends the 100 when the app first reads), is read only after the
token is accepted, as before (2 in a thread, then 3-4, the body, and 5 in a thread).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials

from mailvia.domain.tenancy import User
from mailvia.ingress.api.auth import RecipientLimit, bearer, get_caller, recipient_limit
from mailvia.ingress.api.bodies import Body, receive_body
from mailvia.ingress.api.media import check_json
from mailvia.ingress.api.params import refuse_unknown_query
from mailvia.ingress.api.ratelimit import TokenRateLimit
from mailvia.outbox.services import Services

# uvicorn buffers up to 64 KiB of a request before the app reads it (its flow control's
# high-water mark), so taking a body this small before the token changes nothing held.
SMALL_BODY = 64 * 1024

# The request's caller, checked: the token's user (401, 429), then the header parameters and
# the Content-Type (422). Called first by the work, in its thread (a single POST's: inside
# its one read transaction).
Caller = Callable[[], User]
IntakeWork = Callable[[Services, Caller, RecipientLimit, Body, "str | None"], Response]
_WORK: dict[Callable[..., Any], IntakeWork] = {}
# The submit routes' worker threads: as many as anyio's default for FastAPI's thread pool.
THREADS = 40
_POOL = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="mailvia-intake")
T = TypeVar("T")


async def in_thread(func: Callable[..., T], *args: Any) -> T:
    """`func(*args)` in a worker thread, in a copy of the caller's context, as FastAPI's
    `run_in_threadpool` (anyio's `to_thread.run_sync`) runs it, and like it never left
    behind: a request cancelled meanwhile (the server's shutdown) waits for its work (a
    commit under way) to end, then is cancelled. Through the event loop's executor instead
    of anyio's: without its capacity limiter, cancel scope and closing checkpoint, about half
    of a thread call's CPU on the loop (docs/benchmarks.md, branch `perf1`)."""
    loop = asyncio.get_running_loop()
    run = functools.partial(contextvars.copy_context().run, func, *args)
    future = loop.run_in_executor(_POOL, run)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.wait((future,))
            except asyncio.CancelledError:
                continue
        raise


def handled_by(work: IntakeWork) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a submit endpoint: `IntakeRoute` runs `work(services, caller, take, body, key)`
    for it (the endpoint itself declares the operation); the work calls `caller()` before
    it looks at the body."""

    def mark(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        _WORK[endpoint] = work
        return endpoint

    return mark


class IntakeRoute(APIRoute):
    """An APIRoute whose endpoint is marked with `handled_by`: its requests go to
    `_Intake` instead of FastAPI's dependency solving (the module's docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        intake = _Intake(_WORK[self.endpoint], header_fields=self.dependant.header_params)
        return intake.handle


class _Intake:
    def __init__(self, work: IntakeWork, *, header_fields: Sequence[Any]) -> None:
        self.work = work
        self.header_fields = header_fields

    async def handle(self, request: Request) -> Response:
        await refuse_unknown_query(request)
        call = _Call(
            services=request.app.state.services,
            rate_limit=request.app.state.rate_limit,
            credentials=await bearer(request),
            headers=self._headers(request),
            content_type=request.headers.get("content-type"),
        )
        if _small(request):
            return await in_thread(self._whole, call, await request.body())
        user = await in_thread(call.caller)
        call.check()
        raw = await receive_body(request)
        return await in_thread(self.work, call.services, lambda: user, call.take, raw, call.key)

    def _headers(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        """The header parameters' values and FastAPI's errors for them (none sent, none
        required: their defaults, without FastAPI's work)."""
        fields = self.header_fields
        if any(f.field_info.is_required() or f.alias in request.headers for f in fields):
            return request_params_to_args(fields, request.headers)
        return {field.name: field.default for field in fields}, []

    def _whole(self, call: _Call, raw: Body) -> Response:
        return self.work(call.services, call.checked, call.take, raw, call.key)


class _Call:
    """What the event loop gathered of a request before its work."""

    def __init__(
        self,
        *,
        services: Services,
        rate_limit: TokenRateLimit | None,
        credentials: HTTPAuthorizationCredentials | None,
        headers: tuple[dict[str, Any], list[Any]],
        content_type: str | None,
    ) -> None:
        self.services = services
        self.rate_limit = rate_limit
        self.credentials = credentials
        self.values, self.errors = headers
        self.content_type = content_type
        self.take = recipient_limit(credentials, rate_limit)

    @property
    def key(self) -> str | None:
        key: str | None = self.values.get("idempotency_key")
        return key

    def caller(self) -> User:
        return get_caller(self.services, self.credentials, self.rate_limit)

    def checked(self) -> User:
        """The caller, then the checks (`_whole`'s order: the token before the rest)."""
        user = self.caller()
        self.check()
        return user

    def check(self) -> None:
        """After the caller: the header parameters, then the Content-Type."""
        if self.errors:
            raise RequestValidationError(self.errors)
        check_json(self.content_type)


def _small(request: Request) -> bool:
    """A body sent whole, at most SMALL_BODY (ASCII digits only: `int` takes others)."""
    if "expect" in request.headers:
        return False  # held back until the app reads: the token first
    declared = request.headers.get("content-length")
    return (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and int(declared) <= SMALL_BODY
    )
