"""Errors as `application/problem+json` (RFC 9457): the one place that maps the MailviaError
tree, FastAPI's validation errors and HTTP errors to a status; and their OpenAPI description.

A problem never carries internals: a store or key fault says that the service is unavailable
(the log has the cause), and a bug is a bare 500 whose traceback goes to the log only.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from mailvia.domain.errors import (
    Conflict,
    Forbidden,
    InvalidCursor,
    InvalidInput,
    MailviaError,
    MessageTooLarge,
    NotFound,
    OutboundRefused,
    ProviderRefused,
    ProviderUnavailable,
    RateLimited,
    RequestTooLarge,
    SecretsUnavailable,
    StoreUnavailable,
    Unauthenticated,
    UnsupportedMediaType,
)

log = logging.getLogger("mailvia.api")

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = "5"

# The most specific class first: MessageTooLarge is an InvalidInput.
STATUS_FOR: tuple[tuple[type[MailviaError], int], ...] = (
    (MessageTooLarge, 413),
    (RequestTooLarge, 413),
    (InvalidCursor, 400),
    (UnsupportedMediaType, 415),
    (InvalidInput, 422),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (OutboundRefused, 422),
    (ProviderRefused, 422),
    (ProviderUnavailable, 503),
    (RateLimited, 429),
    (StoreUnavailable, 503),
    (SecretsUnavailable, 503),
)
_UNAVAILABLE = "the service cannot reach its outbox or secrets right now; try again shortly"


class FieldError(BaseModel):
    """One thing wrong with the request: where (`body.to.0`, `query.limit`) and what."""

    loc: str
    message: str


class Problem(BaseModel):
    """An error (RFC 9457). `errors` lists each field at fault when the request was invalid."""

    type: str = Field(
        default="about:blank", description="Always about:blank: `status` says it all."
    )
    title: str = Field(description="The HTTP status phrase.")
    status: int
    detail: str = Field(description="What went wrong, for a person to read.")
    errors: list[FieldError] | None = None


def problem(status: int, detail: str, errors: Sequence[FieldError] | None = None) -> Problem:
    return Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        errors=list(errors) if errors is not None else None,
    )


def problem_response(item: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        item.model_dump(mode="json", exclude_none=True),
        status_code=item.status,
        headers=headers,
        media_type=PROBLEM_JSON,
    )


def status_for(exc: MailviaError) -> int:
    return next((status for kind, status in STATUS_FOR if isinstance(exc, kind)), 500)


def problem_for(exc: MailviaError) -> Problem:
    """The problem for a domain error (also used for one item of a batch)."""
    status = status_for(exc)
    if status == 503:
        log.warning("unavailable: %s", exc)
        return problem(status, _UNAVAILABLE)
    if status == 500:
        log.error("unmapped error %s: %s", type(exc).__name__, exc)
        return problem(status, "an internal error occurred; it has been logged")
    return problem(status, str(exc) or HTTPStatus(status).phrase)


def _headers_for(status: int, exc: MailviaError | None = None) -> dict[str, str] | None:
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(math.ceil(exc.retry_after))}
    if status == 401:
        return {"WWW-Authenticate": 'Bearer realm="mailvia"'}
    if status == 503:
        return {"Retry-After": RETRY_AFTER_SECONDS}
    return None


async def _on_mailvia_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MailviaError)
    item = problem_for(exc)
    return problem_response(item, _headers_for(item.status, exc))


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    # Never echo the input: it may be a password.
    return [
        FieldError(loc=".".join(str(part) for part in error.get("loc", ())), message=_said(error))
        for error in exc.errors()
    ]


# A body's errors in JSON's words, whichever way it was validated: pydantic says them so when
# it reads the JSON itself (a single POST), but in Python's when it validates what was parsed
# already (a batch read piecewise, the routes FastAPI reads), naming the model's class
# (`Input should be a valid dictionary or instance of BatchIn`), which a client never sees.
_JSON_WORDS = {
    "model_type": "Input should be an object",
    "model_attributes_type": "Input should be an object",
    "dict_type": "Input should be an object",
    "list_type": "Input should be a valid array",
}


def _said(error: Any) -> str:
    """Pydantic's message, a body's in JSON's words (`_JSON_WORDS`); a length checked after
    a string's own validator (`Line`, `Text`: "Value should have at least 1 item after
    validation") in a string's words."""
    loc = error.get("loc") or ("",)
    if loc[0] == "body" and error.get("type") in _JSON_WORDS:
        return _JSON_WORDS[error["type"]]
    limits = error.get("ctx") or {}
    if error.get("type") not in ("too_short", "too_long") or not isinstance(
        error.get("input"), str
    ):
        return str(error["msg"])
    if error["type"] == "too_short":
        least = limits.get("min_length", 0)
        return f"String should have at least {least} character{'s' if least != 1 else ''}"
    most = limits.get("max_length", 0)
    return f"String should have at most {most} character{'s' if most != 1 else ''}"


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 (400 for JSON that cannot be read)."""
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc)
    unparsable = any(error.get("type") == "json_invalid" for error in exc.errors())
    status = 400 if unparsable else 422
    first = errors[0] if errors else FieldError(loc="request", message="not valid")
    detail = (
        "the body is not valid JSON"
        if unparsable
        else f"the request is not valid: {first.loc}: {first.message}"
    )
    return problem_response(problem(status, detail, errors))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {}) | (_headers_for(exc.status_code) or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return problem_response(problem(exc.status_code, detail), headers or None)


def _allowed_methods(request: Request) -> str:
    # Starlette names only the first route's methods, and a path has a route per method:
    # take them from the OpenAPI document.
    paths: dict[str, dict[str, Any]] = request.app.openapi()["paths"]
    for template, operations in paths.items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            return ", ".join(sorted(method.upper() for method in operations))
    return ""


async def _on_anything_else(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(problem(500, "an internal error occurred; it has been logged"))


def install(app: FastAPI) -> None:
    """Register the handlers: every error the API returns goes through this module."""
    app.add_exception_handler(MailviaError, _on_mailvia_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_anything_else)


_DESCRIPTIONS = {
    400: "The body is not valid JSON, or the cursor is not one this list handed out to you.",
    401: "No API token, or an unknown or revoked one (`Authorization: Bearer <token>`).",
    403: "The caller may not do this.",
    404: "No such object in the caller's organization (or not one the caller may see).",
    409: "The request conflicts with what exists (e.g. an Idempotency-Key used for another body).",
    413: "The request body or a message is over the size limit, or the request carries more "
    "messages or recipients than one request may.",
    415: "The body is declared as something other than JSON: send it with "
    "`Content-Type: application/json`.",
    422: "The request is not valid (fields, addresses, header values).",
    429: "The API token sent too many requests, or too many recipients; retry after "
    "`Retry-After` seconds.",
    503: "The outbox or the secrets cannot be reached right now; retry later.",
}


_HEADERS = {
    429: {
        "Retry-After": {
            "description": "Seconds until the token may send a request (or these recipients) "
            "again.",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}


def document_rate_limit(schema: dict[str, Any]) -> None:
    """Add the 429 answer to every operation of an OpenAPI document that takes the API token
    (`get_caller` applies the rate limit to each of them, so none can be left out)."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if any("apiToken" in s for s in operation.get("security", ())):
                operation.setdefault("responses", {}).update(
                    {str(k): v for k, v in problems(429).items()}
                )


def document_media_type(schema: dict[str, Any]) -> None:
    """Add the 415 answer to every operation of an OpenAPI document that takes a body (each
    takes JSON: a body declared as anything else is refused, `check_json`, after the token)."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if "requestBody" in operation:
                operation.setdefault("responses", {}).update(
                    {str(k): v for k, v in problems(415).items()}
                )


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each an `application/problem+json`."""
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        responses[status] = {"description": _DESCRIPTIONS[status], "content": content}
        if status in _HEADERS:
            responses[status]["headers"] = _HEADERS[status]
    return responses
