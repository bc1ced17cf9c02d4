"""The authorize endpoints: checking the request, the consent page, Allow and Deny.

GET shows the page; POST (the page's form, or a test's plain form POST with the same fields
plus `account` and `decision=allow|deny`) decides and redirects (302) to `redirect_uri` with
`code` and `state`, or `error=access_denied`. Nothing is kept between the two: the form carries
every parameter. Bad requests get an error page (400), as Google shows them ("Error 400:
invalid_request"); the fake never redirects an error it finds in the request itself. Google adds
`scope`, `authuser` and `prompt` to its redirect, Microsoft `session_state`
(https://developers.google.com/identity/protocols/oauth2/web-server#handlingresponse,
https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#successful-response).
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mailvia.testserver.fake import providers
from mailvia.testserver.fake.http import fake_state, injected, note
from mailvia.testserver.fake.state import FakeState
from mailvia.testserver.fake.tokens import Consent
from mailvia.testserver.faults import HttpFault

_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of a SHA-256 digest (RFC 7636 4.2)
_OWN_FIELDS = ("account", "decision")
NAMES = {"google": "Google", "microsoft": "Microsoft"}


@dataclass(frozen=True)
class AuthRequest:
    """A checked authorization request."""

    provider: str
    tid: str
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    challenge: str
    nonce: str | None
    login_hint: str
    access_type: str
    prompt: str


@dataclass(frozen=True)
class AuthProblem:
    """Why an authorization request cannot go on: an error page with this status."""

    status: int
    error: str
    description: str


def check(
    provider: str, tenant: str, params: Mapping[str, str], state: FakeState
) -> AuthRequest | AuthProblem:
    """Check the parameters of an authorization request, in the order the providers do."""
    tid = providers.tenant_id(tenant) if provider == "microsoft" else ""
    if tid is None:
        return AuthProblem(400, "invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.")
    client_id = params.get("client_id", "")
    known = state.clients_of(provider)
    problem = _missing(params, ("client_id", "redirect_uri", "response_type", "scope"))
    if problem is None and known and client_id not in known:
        problem = AuthProblem(401, "invalid_client", "The OAuth client was not found.")
    problem = problem or _check_values(provider, params)
    if problem is not None:
        return problem
    return AuthRequest(
        provider=provider,
        tid=tid,
        client_id=client_id,
        redirect_uri=params["redirect_uri"],
        scopes=providers.split_scopes(params["scope"]),
        state=params.get("state"),
        challenge=params["code_challenge"],
        nonce=params.get("nonce") or None,
        login_hint=params.get("login_hint", ""),
        access_type=params.get("access_type", "online"),
        prompt=params.get("prompt", ""),
    )


def _missing(params: Mapping[str, str], names: tuple[str, ...]) -> AuthProblem | None:
    for name in names:
        if not params.get(name, "").strip():
            return AuthProblem(400, "invalid_request", f"Missing required parameter: {name}")
    return None


def _check_values(provider: str, params: Mapping[str, str]) -> AuthProblem | None:
    parts = urlsplit(params["redirect_uri"])
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        return AuthProblem(400, "invalid_request", "Invalid parameter value for redirect_uri")
    if params["response_type"] != "code":
        return AuthProblem(400, "unsupported_response_type", "Only response_type=code is served")
    scopes = providers.split_scopes(params["scope"])
    if provider == "microsoft" and len(providers.microsoft_resources(scopes)) > 1:
        return AuthProblem(
            400,
            "invalid_scope",
            "AADSTS28000: Provided value for the input "
            "parameter scope is not valid because it contains more than one "
            "resource.",
        )
    if not params.get("code_challenge"):
        return AuthProblem(400, "invalid_request", "Missing code_challenge: PKCE is required")
    if params.get("code_challenge_method") != "S256":
        return AuthProblem(
            400,
            "invalid_request",
            "code_challenge_method must be S256 (the fake refuses plain and a missing method)",
        )
    if not _CHALLENGE.match(params["code_challenge"]):
        return AuthProblem(
            400,
            "invalid_request",
            "Invalid code_challenge: expected the 43 characters of a base64url SHA-256 digest",
        )
    return None


async def google_authorize(request: Request) -> Response:
    return await _authorize(request, "google", "")


async def microsoft_authorize(request: Request) -> Response:
    return await _authorize(request, "microsoft", request.path_params["tenant"])


async def _authorize(request: Request, provider: str, tenant: str) -> Response:
    note(request, provider=provider)
    state = fake_state(request)
    if request.method == "GET":
        params = dict(request.query_params)
    else:
        form = await request.form()
        params = {k: v for k, v in form.items() if isinstance(v, str)}
    found = check(
        provider, tenant, {k: v for k, v in params.items() if k not in _OWN_FIELDS}, state
    )
    if isinstance(found, AuthProblem):
        return _problem_page(provider, found)
    if request.method == "GET":
        hint = found.login_hint or state.options.account or ""
        return _consent_page(found, request.url.path, hint, params)
    return await _decide(request, found, params)


async def _decide(request: Request, auth: AuthRequest, params: Mapping[str, str]) -> Response:
    fault = await injected(request, "authorize", lambda f: _fault_answer(auth, f))
    if fault is not None:
        return fault
    if params.get("decision") != "allow":
        return _redirect(auth, _denied(auth))
    account = params.get("account", "").strip()
    if not re.match(r"^[^@\s]+@[^@\s]+$", account):
        return _consent_page(
            auth,
            request.url.path,
            account,
            params,
            status=400,
            message="Enter the account's email address.",
        )
    state = fake_state(request)
    consent, code = state.store.open_consent(
        _consent(auth, account, state), redirect_uri=auth.redirect_uri, challenge=auth.challenge
    )
    note(request, account=account, consent=consent.id)
    if auth.provider == "google":
        scope = " ".join(consent.scopes)
        extra = {"code": code, "scope": scope, "authuser": "0", "prompt": "consent"}
    else:
        extra = {"code": code, "session_state": str(uuid.uuid4())}
    return _redirect(auth, extra)


def _consent(auth: AuthRequest, account: str, state: FakeState) -> Consent:
    if auth.provider == "google":
        # A refresh token only with access_type=offline, and only at the first consent unless
        # prompt=consent (https://developers.google.com/identity/protocols/oauth2/web-server#offline).
        again = state.store.has_offline_consent("google", auth.client_id, account)
        offline = auth.access_type == "offline" and ("consent" in auth.prompt.split() or not again)
        scopes = providers.google_granted(auth.scopes)
    else:
        offline = "offline_access" in auth.scopes  # Microsoft's condition for a refresh token
        scopes = auth.scopes
    return Consent(
        id="",
        provider=auth.provider,
        client_id=auth.client_id,
        account=account,
        scopes=scopes,
        offline=offline,
        tenant=auth.tid,
        nonce=auth.nonce,
    )


def _denied(auth: AuthRequest) -> dict[str, str]:
    if auth.provider == "google":
        return {"error": "access_denied"}
    return {
        "error": "access_denied",
        "error_subcode": "cancel",
        "error_description": "AADSTS65004: User declined to consent to access the app.",
    }


def _fault_answer(auth: AuthRequest, fault: HttpFault) -> Response:
    """An injected `authorize` fault: an OAuth error code goes back to the client in the
    redirect (RFC 6749 4.1.2.1); a bare status is an error page."""
    if fault.reason is not None:
        description = "Injected by mailvia testserver"
        return _redirect(auth, {"error": fault.reason, "error_description": description})
    problem = AuthProblem(fault.status or 500, "server_error", "Injected by mailvia testserver")
    return _problem_page(auth.provider, problem)


def _redirect(auth: AuthRequest, params: dict[str, str]) -> RedirectResponse:
    if auth.state is not None:
        params = {**params, "state": auth.state}
    parts = urlsplit(auth.redirect_uri)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *params.items()])
    return RedirectResponse(urlunsplit(parts._replace(query=query)), status_code=302)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1b1d21}
main{max-width:32rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:8px}
h1{font-size:1.4rem;margin-top:0}
li{overflow-wrap:anywhere}
label{display:block;font-weight:600;margin:1rem 0 .3rem}
input[type=email]{box-sizing:border-box;width:100%;padding:.5rem;font-size:1rem}
.buttons{display:flex;gap:1rem;justify-content:flex-end;margin-top:1.5rem}
button{font-size:1rem;padding:.5rem 1.2rem;border-radius:4px;border:1px solid #1a56c4}
button[value=allow]{background:#1a56c4;color:#fff}
button[value=deny]{background:#fff;color:#1a56c4}
.error{color:#a8071a}
.note{font-size:.9rem;color:#4a4f57}
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    return HTMLResponse(document, status)


def _consent_page(
    auth: AuthRequest,
    action: str,
    account: str,
    params: Mapping[str, str],
    *,
    status: int = 200,
    message: str = "",
) -> HTMLResponse:
    name = NAMES[auth.provider]
    esc = html.escape
    hidden = "".join(
        f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
        for k, v in params.items()
        if k not in _OWN_FIELDS
    )
    scopes = "".join(f"<li>{esc(scope)}</li>" for scope in auth.scopes)
    error = f'<p class="error" role="alert">{esc(message)}</p>' if message else ""
    body = (
        f"<h1>Fake {name}: allow access?</h1>"
        f"<p>The application <strong>{esc(auth.client_id)}</strong> asks for:</p>"
        f"<ul>{scopes}</ul>{error}"
        f'<form method="post" action="{esc(action)}">{hidden}'
        f'<label for="account">Account</label>'
        f'<input id="account" name="account" type="email" autocomplete="email" required '
        f'value="{esc(account)}">'
        f'<div class="buttons">'
        f'<button type="submit" name="decision" value="deny" formnovalidate>Deny</button>'
        f'<button type="submit" name="decision" value="allow">Allow</button></div></form>'
        f'<p class="note">mailvia testserver: a fake {name} for trying and testing. '
        f"Nothing here reaches {name}.</p>"
    )
    return _page(f"Sign in with {name} (fake)", body, status)


def _problem_page(provider: str, problem: AuthProblem) -> HTMLResponse:
    esc = html.escape
    body = (
        f"<h1>Fake {NAMES[provider]}: the request is not valid</h1>"
        f'<p class="error">Error {problem.status}: {esc(problem.error)}</p>'
        f"<p>{esc(problem.description)}</p>"
    )
    return _page(f"Error {problem.status}: {problem.error}", body, problem.status)
