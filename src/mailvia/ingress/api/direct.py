"""The submit routes reached without FastAPI's router: `POST /v1/messages` and
`POST /v1/messages/batch` go straight to their handler, inside a stack made of the app's own
parts.

FastAPI (0.165) passes every request through its outer layers (Starlette's server-error
middleware, its request telemetry, its body limit, the app's own middleware, Starlette's
exception middleware, its AsyncExitStack) and then its router: the included routers, their
effective routes, a `matches` per route until the path's. For a single POST that was about a
quarter of serve's event-loop CPU (docs/benchmarks.md, branch `perf1`). The route of these two
operations is known from the method and the path alone, so `DirectIntake` runs the route's
handler (`IntakeRoute`'s, intake_route.py) inside a stack of the same parts, in the same order,
as the app's:

1. Starlette's `ServerErrorMiddleware` with the app's 500 handler (a bug: the problem+json
   500, its traceback logged, the exception raised on to the server);
2. the app's own middleware (`add_middleware`: the body limit's 413, the rejection count, the
   documentation's headers), each made as the app makes it, outermost first;
3. Starlette's `ExceptionMiddleware` with the app's handlers (every error as problem+json,
   errors.py);
4. the route: the scope's `app`, `router`, `route`, `endpoint` and `path_params` as the router
   sets them, the handler, its response sent.

Left out, because they do nothing for these requests: the router's matching; FastAPI's
AsyncExitStack (for dependencies with `yield`: the intake handler solves none); its request
telemetry (the direct path is taken only while it is off, the check FastAPI makes per request)
and its body limit (taken only when the app sets none: `max_body_size`); a `root_path` (taken
only without one). Anything else (another method, another path, a trailing slash) goes through
the app as before.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from fastapi import FastAPI

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class DirectIntake:
    """The direct stacks of an app's submit routes, made when the app first takes a request
    (its middleware is fixed then, as Starlette fixes it when it builds its own stack)."""

    def __init__(self, api: FastAPI, routes: dict[str, tuple[BaseRoute, Handler]]) -> None:
        """`routes`: per path, the POST route FastAPI's router picks for it and its handler."""
        self.api = api
        self.routes = routes
        self._stacks: dict[str, ASGIApp] | None = None

    def app_for(self, scope: Scope) -> ASGIApp | None:
        """The direct stack for this request, or None: the app's own way then."""
        if scope["type"] != "http" or scope.get("method") != "POST":
            return None
        stacks = self._stacks if self._stacks is not None else self._build()
        stack = stacks.get(scope.get("path", ""))
        if stack is None or scope.get("root_path") or self.api.root_path:
            return None
        if _telemetry_on(self.api):
            return None
        return stack

    def _build(self) -> dict[str, ASGIApp]:
        api = self.api
        if api.middleware_stack is None:  # fixes the app's middleware, as its first request does
            api.middleware_stack = api.build_middleware_stack()
        stacks: dict[str, ASGIApp] = {}
        if getattr(api, "max_body_size", None) is None:
            stacks = {
                path: _stack(api, _Route(api, route, handler))
                for path, (route, handler) in self.routes.items()
            }
        self._stacks = stacks
        return stacks


def _telemetry_on(api: FastAPI) -> bool:
    """Whether FastAPI's own request telemetry is on (an OpenTelemetry provider configured):
    then every request goes its way."""
    telemetry = getattr(api, "_native_telemetry", None)
    return telemetry is not None and bool(telemetry.enabled())


def _stack(api: FastAPI, route: ASGIApp) -> ASGIApp:
    """The route inside the app's error handling and its own middleware, made as Starlette's
    `build_middleware_stack` makes them."""
    error_handler = None
    handlers: dict[Any, Any] = {}
    for key, value in api.exception_handlers.items():
        if key in (500, Exception):
            error_handler = value
        else:
            handlers[key] = value
    app: ASGIApp = ExceptionMiddleware(route, handlers=handlers, debug=api.debug)
    for cls, args, kwargs in reversed(api.user_middleware):
        app = cls(app, *args, **kwargs)
    return ServerErrorMiddleware(app, handler=error_handler, debug=api.debug)


class _Route:
    """The route as the router runs it: the scope it sets, the handler, its response."""

    def __init__(self, api: FastAPI, route: BaseRoute, handler: Handler) -> None:
        self.api = api
        self.route = route
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # scope["app"] is set already (MailviaAPI.__call__, as Starlette's app sets it)
        scope.setdefault("router", self.api.router)
        scope["route"] = self.route
        scope["endpoint"] = getattr(self.route, "endpoint", None)
        scope["path_params"] = {}
        response = await self.handler(Request(scope, receive, send))
        await response(scope, receive, send)
