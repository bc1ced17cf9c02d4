"""Who is calling: the services of this app and the user behind the bearer API token, held
to the token's rate limit.

Dependencies that only read the app's state are `async def`: FastAPI runs a plain `def`
dependency in its thread pool, and each such hop costs a request a thread switch (several
per request added milliseconds under load). `get_caller` reads the store, so it is a plain
`def` and runs in the pool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mailvia.domain.errors import Unauthenticated
from mailvia.domain.tenancy import User
from mailvia.ingress.api.media import check_json
from mailvia.ingress.api.ratelimit import TokenRateLimit
from mailvia.outbox.services import Services

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiToken",
    description="An API token (`mailvia admin create-token EMAIL`), sent as "
    "`Authorization: Bearer <token>`.",
)


async def get_services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_rate_limit(request: Request) -> TokenRateLimit | None:
    return cast(TokenRateLimit | None, request.app.state.rate_limit)


def get_caller(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    rate_limit: Annotated[TokenRateLimit | None, Depends(get_rate_limit)],
) -> User:
    """The token's user. Raises Unauthenticated (401) without a token or with a bad one, and
    RateLimited (429) when the token sends requests faster than the rate limit."""
    if credentials is None:
        raise Unauthenticated("an API token is required: Authorization: Bearer <token>")
    user = services.tokens.authenticate(credentials.credentials)
    if rate_limit is not None:
        rate_limit.check(credentials.credentials)
    return user


CallerDep = Annotated[User, Depends(get_caller)]


def get_json_caller(user: CallerDep, request: Request) -> User:
    """The token's user (`get_caller`), then the body's media type: the one check of every
    route FastAPI reads a JSON body for (the submit routes read theirs themselves and make
    the same check, `check_json`, in the same order). Raises UnsupportedMediaType (415) for
    a body declared as something other than JSON; an undeclared one is read as JSON
    (`strict_content_type=False`, as the submit routes read it)."""
    check_json(request.headers.get("content-type"))
    return user


JsonCallerDep = Annotated[User, Depends(get_json_caller)]
RecipientLimit = Callable[[int], None]


async def get_recipient_limit(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    rate_limit: Annotated[TokenRateLimit | None, Depends(get_rate_limit)],
) -> RecipientLimit:
    """Counts the recipients a request submits against its token's recipient limit (thread-safe):
    raises RateLimited (429) or RequestTooLarge (413). Declare it after the caller."""
    return recipient_limit(credentials, rate_limit)


def recipient_limit(
    credentials: HTTPAuthorizationCredentials | None, rate_limit: TokenRateLimit | None
) -> RecipientLimit:
    """`get_recipient_limit`'s counter, for a caller outside FastAPI's dependencies."""

    def take(count: int) -> None:
        if rate_limit is not None and credentials is not None:
            rate_limit.take_recipients(credentials.credentials, count)

    return take


RecipientLimitDep = Annotated[RecipientLimit, Depends(get_recipient_limit)]
