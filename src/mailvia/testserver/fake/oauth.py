"""The token, revoke, userinfo and JWKS endpoints, and the token check of SMTP XOAUTH2.

Token requests are `application/x-www-form-urlencoded`, the client authenticated by
`client_secret` in the body or HTTP Basic (RFC 6749 2.3.1, 4.1.3, 6). Successful answers follow
https://developers.google.com/identity/protocols/oauth2/web-server#exchange-authorization-code
and https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#redeem-a-code-for-an-access-token;
Microsoft adds `ext_expires_in` and leaves `offline_access` out of `scope`. Refreshing never
returns a new ID token nonce. Google's revoke answers 200, or 400 `invalid_token` for a token
it does not know (https://developers.google.com/identity/protocols/oauth2/web-server#tokenrevoke).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailvia.testserver.fake import errors, providers
from mailvia.testserver.fake.http import (
    bearer,
    client_credentials,
    fake_state,
    form_text,
    injected,
    note,
)
from mailvia.testserver.fake.state import FakeState
from mailvia.testserver.fake.tokens import Authorized, Consent, Issued, Refusal, fingerprint
from mailvia.testserver.xoauth2 import Style, Xoauth2Verdict

ID_TOKEN_LIFETIME = 3600
OUTLOOK_SMTP_SCOPES = frozenset(
    {providers.OUTLOOK_SMTP_SCOPE, "https://outlook.office365.com/SMTP.Send"}
)


async def google_token(request: Request) -> Response:
    return await _token(request, "google", "")


async def microsoft_token(request: Request) -> Response:
    tid = providers.tenant_id(request.path_params["tenant"])
    if tid is None:
        note(request, provider="microsoft")
        error, code, text = errors.MICROSOFT_REFUSALS["tenant_unknown"]
        return errors.microsoft_oauth(error, code, text)
    return await _token(request, "microsoft", tid)


async def _token(request: Request, provider: str, tid: str) -> Response:
    note(request, provider=provider)
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return errors.oauth_invalid_request(provider, "Expected application/x-www-form-urlencoded")
    form = await request.form()
    grant_type = form_text(form, "grant_type")
    stage = "refresh" if grant_type == "refresh_token" else "token"
    fault = await injected(request, stage, lambda f: errors.oauth_fault(provider, stage, f))
    if fault is not None:
        return fault
    client_id, secret = client_credentials(request, form)
    refused = _check_client(fake_state(request), provider, client_id, secret)
    if refused is not None:
        return refused
    if grant_type == "authorization_code":
        return _exchange(request, provider, form, client_id)
    if grant_type == "refresh_token":
        return _refresh(request, provider, form, client_id)
    if provider == "microsoft" and not grant_type:
        return errors.oauth_invalid_request(
            provider, "The request body must contain the following parameter: 'grant_type'."
        )
    error = "unsupported_grant_type"
    if provider == "google":
        return errors.google_oauth(error, f"Invalid grant_type: {grant_type}")
    return errors.microsoft_oauth(
        error, 70003, f"The app requested an unsupported grant type '{grant_type}'."
    )


def _check_client(
    state: FakeState, provider: str, client_id: str, secret: str | None
) -> Response | None:
    known = state.clients_of(provider)
    if not known:
        return None
    if client_id not in known:
        return errors.oauth_refusal(provider, "client_unknown")
    if not secret:
        return errors.oauth_refusal(provider, "client_secret_missing")
    if secret != known[client_id]:
        return errors.oauth_refusal(provider, "client_secret_wrong")
    return None


def _exchange(request: Request, provider: str, form: FormData, client_id: str) -> Response:
    for name in ("code", "redirect_uri"):
        if not form_text(form, name):
            text = (
                f"Missing required parameter: {name}"
                if provider == "google"
                else f"The request body must contain the following parameter: '{name}'."
            )
            return errors.oauth_invalid_request(provider, text)
    result = fake_state(request).store.redeem(
        provider=provider,
        code=form_text(form, "code"),
        client_id=client_id,
        redirect_uri=form_text(form, "redirect_uri"),
        verifier=form_text(form, "code_verifier"),
    )
    return _answer(request, provider, result, with_nonce=True)


def _refresh(request: Request, provider: str, form: FormData, client_id: str) -> Response:
    token = form_text(form, "refresh_token")
    if not token:
        text = (
            "Missing required parameter: refresh_token"
            if provider == "google"
            else "The request body must contain the following parameter: 'refresh_token'."
        )
        return errors.oauth_invalid_request(provider, text)
    store = fake_state(request).store
    result = store.refresh(provider=provider, refresh_token=token, client_id=client_id)
    return _answer(request, provider, result, with_nonce=False)


def _answer(
    request: Request, provider: str, result: Issued | Refusal, *, with_nonce: bool
) -> Response:
    if isinstance(result, Refusal):
        if result.consent is not None:
            note(request, account=result.consent.account, consent=result.consent.id)
        return errors.oauth_refusal(provider, result.reason)
    consent = result.consent
    note(
        request, account=consent.account, consent=consent.id, token=fingerprint(result.access_token)
    )
    state = fake_state(request)
    body: dict[str, Any] = {
        "access_token": result.access_token,
        "expires_in": result.expires_in,
        "token_type": "Bearer",
    }
    if provider == "google":
        body["scope"] = " ".join(consent.scopes)
    else:
        body["scope"] = " ".join(providers.microsoft_granted(consent.scopes))
        body["ext_expires_in"] = result.expires_in
    if result.refresh_token is not None:
        body["refresh_token"] = result.refresh_token
    if "openid" in consent.scopes:
        body["id_token"] = id_token(state, consent if with_nonce else replace(consent, nonce=None))
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def id_token(state: FakeState, consent: Consent) -> str:
    """A signed ID token for `consent` from its provider's key."""
    build = (
        providers.google_id_claims
        if consent.provider == "google"
        else providers.microsoft_id_claims
    )
    claims = build(consent, origin=state.origin, now=state.clock(), lifetime=ID_TOKEN_LIFETIME)
    return state.keys[consent.provider].sign(claims)


async def google_revoke(request: Request) -> Response:
    note(request, provider="google")
    form = await request.form()
    token = form_text(form, "token") or request.query_params.get("token", "")
    fault = await injected(request, "revoke", lambda f: errors.oauth_fault("google", "revoke", f))
    if fault is not None:
        return fault
    consent = fake_state(request).store.revoke_token(token) if token else None
    if consent is None:
        return errors.google_oauth("invalid_token", "Token expired or revoked")
    note(request, account=consent.account, consent=consent.id, token=fingerprint(token))
    return Response(status_code=200)


async def google_userinfo(request: Request) -> Response:
    """OpenID Connect userinfo: `sub`, and `email`/`email_verified` with the email scope."""
    note(request, provider="google")
    token = bearer(request)
    found = fake_state(request).store.check_access(token) if token else Refusal("token_unknown")
    if isinstance(found, Authorized) and found.consent.provider != "google":
        found = Refusal("token_unknown")
    if isinstance(found, Refusal):
        headers = {
            "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
        }
        body = {"error": "invalid_request", "error_description": "Invalid Credentials"}
        return JSONResponse(body, 401, headers=headers)
    consent = found.consent
    note(request, account=consent.account, consent=consent.id, token=fingerprint(token or ""))
    fault = await injected(
        request, "userinfo", lambda f: errors.oauth_fault("google", "userinfo", f)
    )
    if fault is not None:
        return fault
    claims = providers.google_id_claims(consent, origin="", now=0, lifetime=0)
    info = {k: claims[k] for k in ("sub", "email", "email_verified") if k in claims}
    return JSONResponse(info)


async def google_jwks(request: Request) -> Response:
    note(request, provider="google")
    return JSONResponse({"keys": [fake_state(request).keys["google"].jwk()]})


async def microsoft_jwks(request: Request) -> Response:
    note(request, provider="microsoft")
    state = fake_state(request)
    key = state.keys["microsoft"].jwk(issuer=f"{state.origin}/{{tenantid}}/v2.0")
    return JSONResponse({"keys": [key]})


def smtp_verdict(state: FakeState, user: str, token: str) -> Xoauth2Verdict:
    """Accept an XOAUTH2 login only with a live access token of this fake for `user` that
    carries the provider's SMTP scope; refuse in the token's provider's words."""
    consent = state.store.consent_of(token)
    style: Style = (
        "office365" if consent is not None and consent.provider == "microsoft" else "gmail"
    )
    found = state.store.check_access(token)
    if isinstance(found, Refusal):
        return Xoauth2Verdict(None, style, status="401")
    if found.consent.account.lower() != user.lower():
        return Xoauth2Verdict(None, style, status="400")
    if found.consent.provider == "google":
        allowed = providers.GMAIL_SMTP_SCOPE in found.scopes
    else:
        allowed = bool(OUTLOOK_SMTP_SCOPES & set(found.scopes))
    if not allowed:
        return Xoauth2Verdict(None, style, status="400")
    return Xoauth2Verdict(found.consent.account, style)
