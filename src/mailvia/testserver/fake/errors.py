"""The providers' error bodies, as their real endpoints send them. Pure: builds responses.

- OAuth (Google): `{"error", "error_description"}` (RFC 6749 5.2; Google's texts as seen in
  googleapis/google-api-php-client#2669 "Missing code verifier.", google-api-java-client#1479
  "Invalid code verifier.", dj-rest-auth#458 `redirect_uri_mismatch`/"Bad Request", and
  "Token has been expired or revoked." https://www.nango.dev/blog/google-oauth-invalid-consent-token-has-been-expired-or-revoked).
- OAuth (Microsoft): plus `error_codes`, `timestamp`, `trace_id`, `correlation_id`,
  `error_uri`, the description starting `AADSTSnnnn:` (davidjrh/dnn.azureadprovider#17 for the
  shape; the codes from https://learn.microsoft.com/entra/identity-platform/reference-error-codes).
- Gmail API: `{"error": {"code", "message", "errors": [{"message", "domain", "reason"}],
  "status"}}` (https://developers.google.com/gmail/api/guides/handle-errors; the 401 text from
  meetfranz/recipe-gmail#17; "User-rate limit exceeded.  Retry after" from
  taers232c/GAMADV-XTD3#337; "Request payload size exceeds the limit" from
  googleapis/google-api-dotnet-client#856).
- Graph: `{"error": {"code", "message", "innerError": {"date", "request-id",
  "client-request-id"}}}` (https://learn.microsoft.com/graph/errors; 401 texts from
  microsofthackathons/tdi#24 and s1t5/mail-archiver#267; 429 from
  https://learn.microsoft.com/graph/throttling; MIME 400 from
  https://learn.microsoft.com/graph/api/user-sendmail).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from starlette.responses import JSONResponse

from mailvia.testserver.faults import HttpFault

GOOGLE_REFUSALS: dict[str, tuple[str, str]] = {
    "code_unknown": ("invalid_grant", "Malformed auth code."),
    "code_used": ("invalid_grant", "Bad Request"),
    "code_expired": ("invalid_grant", "Bad Request"),
    "client_mismatch": ("invalid_grant", "Bad Request"),
    "redirect_mismatch": ("redirect_uri_mismatch", "Bad Request"),
    "verifier_missing": ("invalid_grant", "Missing code verifier."),
    "verifier_mismatch": ("invalid_grant", "Invalid code verifier."),
    "refresh_unknown": ("invalid_grant", "Bad Request"),
    "refresh_retired": ("invalid_grant", "Token has been expired or revoked."),
    "consent_revoked": ("invalid_grant", "Token has been expired or revoked."),
}
_MS_EXPIRED = (
    "The provided authorization code or refresh token has expired due to inactivity. Send a "
    "new interactive authorization request for this user and resource."
)
_MS_REVOKED = (
    "The provided consent has expired due to it being revoked, a fresh auth token is needed. "
    "The user might have changed or reset their password."
)
_MS_BAD_CODE = "The provided value for the 'code' parameter is not valid."
MICROSOFT_REFUSALS: dict[str, tuple[str, int, str]] = {
    "code_unknown": ("invalid_grant", 70000, _MS_BAD_CODE),
    "code_used": (
        "invalid_grant",
        54005,
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code "
        "or use an existing refresh token.",
    ),
    "code_expired": ("invalid_grant", 70008, _MS_EXPIRED),
    "client_mismatch": ("invalid_grant", 70000, _MS_BAD_CODE),
    "redirect_mismatch": (
        "invalid_grant",
        500112,
        "The reply address does not match the reply address provided when requesting "
        "Authorization code.",
    ),
    "verifier_missing": (
        "invalid_grant",
        50148,
        "The code_verifier does not match the code_challenge supplied in the authorization "
        "request for PKCE.",
    ),
    "verifier_mismatch": (
        "invalid_grant",
        501481,
        "The Code_Verifier does not match the code_challenge supplied in the authorization "
        "request.",
    ),
    "refresh_unknown": (
        "invalid_grant",
        9002313,
        "Invalid request. Request is malformed or invalid.",
    ),
    "refresh_retired": ("invalid_grant", 70008, _MS_EXPIRED),
    "consent_revoked": ("invalid_grant", 50173, _MS_REVOKED),
    "client_unknown": (
        "unauthorized_client",
        700016,
        "Application with identifier was not found in the directory.",
    ),
    "client_secret_wrong": (
        "invalid_client",
        7000215,
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        "client secret value, not the client secret ID.",
    ),
    "client_secret_missing": (
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'.",
    ),
    "tenant_unknown": (
        "invalid_request",
        90002,
        "Tenant not found. Check to make sure you have the correct tenant ID and are signing "
        "into the correct cloud.",
    ),
}
GOOGLE_CLIENT: dict[str, tuple[int, str, str]] = {
    "client_unknown": (401, "invalid_client", "The OAuth client was not found."),
    "client_secret_wrong": (401, "invalid_client", "Unauthorized"),
    "client_secret_missing": (400, "invalid_request", "client_secret is missing."),
}
_CLIENT_STATUS = {"invalid_client": 401}
# The errors a status-only token fault stands for (RFC 6749 5.2 has no 5xx error codes; both
# providers answer `temporarily_unavailable` / `server_error` bodies on their outages).
_STATUS_ERRORS = {
    400: "invalid_request",
    401: "invalid_client",
    403: "access_denied",
    429: "temporarily_unavailable",
    500: "server_error",
    503: "temporarily_unavailable",
}


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _headers(retry_after: int | None) -> dict[str, str]:
    return {"Retry-After": str(retry_after)} if retry_after is not None else {}


def google_oauth(
    error: str, description: str, status: int = 400, *, retry_after: int | None = None
) -> JSONResponse:
    """Google's OAuth error body."""
    body = {"error": error, "error_description": description}
    return JSONResponse(body, status, headers=_headers(retry_after))


def microsoft_oauth(
    error: str, code: int, text: str, status: int = 400, *, retry_after: int | None = None
) -> JSONResponse:
    """Microsoft's OAuth error body with its AADSTS code, trace and correlation ids."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    description = (
        f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {stamp}"
    )
    body = {
        "error": error,
        "error_description": description,
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    return JSONResponse(body, status, headers=_headers(retry_after))


def oauth_refusal(provider: str, reason: str) -> JSONResponse:
    """The token endpoint's answer to a refused code, refresh token or client."""
    if provider == "google":
        if reason in GOOGLE_CLIENT:
            status, error, description = GOOGLE_CLIENT[reason]
            return google_oauth(error, description, status)
        error, description = GOOGLE_REFUSALS.get(reason, ("invalid_grant", "Bad Request"))
        return google_oauth(error, description)
    error, code, text = MICROSOFT_REFUSALS.get(reason, MICROSOFT_REFUSALS["refresh_unknown"])
    return microsoft_oauth(error, code, text, _CLIENT_STATUS.get(error, 400))


def oauth_invalid_request(provider: str, text: str, *, code: int = 900144) -> JSONResponse:
    """A malformed token request (a missing parameter, an unsupported grant type)."""
    if provider == "google":
        return google_oauth("invalid_request", text)
    return microsoft_oauth("invalid_request", code, text)


def oauth_fault(provider: str, stage: str, fault: HttpFault) -> JSONResponse:
    """The body for an injected token/refresh/revoke/userinfo fault."""
    status = fault.status
    error = fault.reason or _STATUS_ERRORS.get(status or 400, "server_error")
    status = status or _CLIENT_STATUS.get(error, 400)
    if provider == "google":
        if error == "invalid_grant":
            expired = stage == "refresh"
            description = "Token has been expired or revoked." if expired else "Bad Request"
        else:
            description = "Injected by mailvia testserver"
        return google_oauth(error, description, status, retry_after=fault.retry_after)
    code, text = 50173, _MS_REVOKED
    if error != "invalid_grant" or stage != "refresh":
        code, text = 90033, f"A transient error has occurred ({error}). Please try again."
    return microsoft_oauth(error, code, text, status, retry_after=fault.retry_after)


# -- Gmail API -------------------------------------------------------------------------------

_RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# reason -> (default status, domain, message)
GMAIL_REASONS: dict[str, tuple[int, str, str]] = {
    "rateLimitExceeded": (403, "usageLimits", "Rate Limit Exceeded"),
    "userRateLimitExceeded": (403, "usageLimits", "User Rate Limit Exceeded"),
    "dailyLimitExceeded": (403, "usageLimits", "Daily Limit Exceeded"),
    "quotaExceeded": (403, "usageLimits", "Quota Exceeded"),
    "domainPolicy": (403, "global", "The domain administrators have disabled Gmail apps."),
    "insufficientPermissions": (403, "global", "Insufficient Permission"),
    "forbidden": (403, "global", "The caller does not have permission"),
    "invalidArgument": (400, "global", "Invalid argument"),
    "badRequest": (400, "global", "Bad Request"),
    "failedPrecondition": (400, "global", "Precondition check failed."),
    "authError": (401, "global", "Invalid Credentials"),
    "notFound": (404, "global", "Requested entity was not found."),
    "backendError": (500, "global", "Backend Error"),
}
_GMAIL_BY_STATUS = {
    400: "badRequest",
    401: "authError",
    403: "forbidden",
    404: "notFound",
    429: "rateLimitExceeded",
    500: "backendError",
    502: "backendError",
    503: "backendError",
    504: "backendError",
}
GMAIL_401 = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
GMAIL_401_MISSING = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def gmail_error(
    status: int,
    reason: str,
    message: str | None = None,
    *,
    retry_after: int | None = None,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A Gmail API error: `message` tops the body, `detail` is the inner error's message."""
    _, domain, text = GMAIL_REASONS.get(reason, (status, "global", reason))
    inner = {"message": detail or message or text, "domain": domain, "reason": reason}
    body = {
        "error": {
            "code": status,
            "message": message or text,
            "errors": [inner],
            "status": _RPC_STATUS.get(status, "UNKNOWN"),
        }
    }
    return JSONResponse(body, status, headers={**(headers or {}), **_headers(retry_after)})


def gmail_unauthorized(*, missing: bool) -> JSONResponse:
    """Gmail's 401 for a missing, unknown, expired or revoked token."""
    header = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
    if missing:
        return gmail_error(
            401, "required", GMAIL_401_MISSING, detail="Login Required.", headers=header
        )
    header["WWW-Authenticate"] += ', error="invalid_token"'
    return gmail_error(401, "authError", GMAIL_401, detail="Invalid Credentials", headers=header)


def gmail_fault(fault: HttpFault) -> JSONResponse:
    """The body for an injected `gmail_send` fault."""
    reason = fault.reason or _GMAIL_BY_STATUS.get(fault.status or 500, "backendError")
    status = fault.status or GMAIL_REASONS.get(reason, (400, "", ""))[0]
    message = None
    if status == 429 or (fault.retry_after is not None and reason.endswith("ateLimitExceeded")):
        at = datetime.fromtimestamp(time.time() + (fault.retry_after or 60), UTC)
        message = f"User-rate limit exceeded.  Retry after {at.isoformat()[:23]}Z"
    elif status == 503:
        message = "The service is currently unavailable."
    return gmail_error(status, reason, message, retry_after=fault.retry_after)


# -- Microsoft Graph -------------------------------------------------------------------------

GRAPH_CODES: dict[int, tuple[str, str]] = {
    400: ("ErrorInvalidRequest", "The request is invalid."),
    401: ("InvalidAuthenticationToken", "Access token validation failure."),
    403: ("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
    404: ("ErrorItemNotFound", "The specified object was not found in the store."),
    413: ("RequestEntityTooLarge", "Maximum request length exceeded."),
    429: ("ApplicationThrottled", "Application is over its MailboxConcurrency limit."),
    500: ("ErrorInternalServerError", "An internal server error occurred. The operation failed."),
    503: (
        "ServiceUnavailable",
        "The service is temporarily unavailable for maintenance or is overloaded.",
    ),
    504: ("GatewayTimeout", "The request timed out."),
}
GRAPH_401 = {
    "missing": "Access token is empty.",
    "token_unknown": "Access token validation failure.",
    "token_expired": "Lifetime validation failed, the token is expired.",
    "consent_revoked": "Continuous access evaluation resulted in challenge with result: "
    "InteractionRequired and code: TokensRevoked",
}
_GRAPH_AUTHENTICATE = (
    'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/'
    'authorize", client_id="00000003-0000-0000-c000-000000000000"'
)


def graph_error(
    status: int,
    code: str | None = None,
    message: str | None = None,
    *,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
    client_request_id: str | None = None,
) -> JSONResponse:
    """A Graph error with its `innerError` (date, request-id, client-request-id)."""
    default_code, default_message = GRAPH_CODES.get(status, ("UnknownError", "An error occurred."))
    request_id = str(uuid.uuid4())
    inner = {
        "date": _now_iso(),
        "request-id": request_id,
        "client-request-id": client_request_id or request_id,
    }
    body = {
        "error": {
            "code": code or default_code,
            "message": message or default_message,
            "innerError": inner,
        }
    }
    all_headers = {"request-id": request_id, **(headers or {}), **_headers(retry_after)}
    return JSONResponse(body, status, headers=all_headers)


def graph_unauthorized(kind: str) -> JSONResponse:
    """Graph's 401 for a missing, unknown, expired or revoked token (`GRAPH_401` keys)."""
    headers = {"WWW-Authenticate": _GRAPH_AUTHENTICATE}
    message = GRAPH_401.get(kind, GRAPH_401["token_unknown"])
    return graph_error(401, "InvalidAuthenticationToken", message, headers=headers)


def graph_fault(fault: HttpFault) -> JSONResponse:
    """The body for an injected `graph_send` fault; a reason is used as the error code."""
    status = fault.status or (429 if fault.reason == "ApplicationThrottled" else 400)
    retry_after = fault.retry_after
    if retry_after is None and status in (429, 503):
        retry_after = 1  # Graph's throttling answers carry Retry-After
    return graph_error(status, fault.reason, retry_after=retry_after)
