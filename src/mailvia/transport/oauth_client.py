"""The providers' OAuth endpoints over HTTP (the ProviderClient port), with authlib's OAuth 2
request builders (RFC 6749, RFC 7636 S256) over httpx:
the authorization URL (code flow, PKCE S256, state, nonce), the code exchange with the ID
token verified (oauth_idtoken.py), refresh, and revocation (Google only: Microsoft has no
endpoint that revokes a refresh token).

Endpoints come from the settings (MAILVIA_OAUTH_*); Microsoft's carry a `{tenant}`
placeholder filled with the app's tenant. Library and network errors are mapped here, in one
place: a refusal from the provider is ProviderRefused (its `error` kept), a failure to reach it,
a timeout, a 429 or a 5xx is ProviderUnavailable. Tokens and secrets are never logged.

Side effects: HTTPS requests to the providers (never through proxies from the environment).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailvia import __version__
from mailvia.domain.channel import Provider
from mailvia.domain.clock import Instant
from mailvia.domain.errors import ProviderRefused, ProviderUnavailable
from mailvia.domain.oauth import MailboxConsent, OAuthApp, TokenSet
from mailvia.outbox.oauth.ports import AuthorizationRequest
from mailvia.transport.oauth_idtoken import IdTokenVerifier

if TYPE_CHECKING:
    import httpx


TIMEOUT = 15.0
USER_AGENT = f"mailvia/{__version__} (oauth)"
DEFAULT_TENANT = "organizations"
# OAuth error codes that say "try again later", not "this consent is no good" (RFC 6749 §4.1.2.1).
_TRANSIENT = frozenset({"temporarily_unavailable", "server_error"})


@dataclass(frozen=True, kw_only=True)
class Endpoints:
    """The providers' URLs, from the settings (the real providers' by default; a fake's in
    tests). Microsoft's carry `{tenant}`."""

    google_authorize: str
    google_token: str
    google_revoke: str
    google_userinfo: str
    google_jwks: str
    microsoft_authorize: str
    microsoft_token: str
    microsoft_jwks: str

    def authorize(self, app: OAuthApp) -> str:
        if app.provider is Provider.GOOGLE:
            return self.google_authorize
        return self.microsoft_authorize.replace("{tenant}", _tenant(app))

    def issuer_template(self, app: OAuthApp) -> str:
        """The authorize URL the issuer is derived from (Microsoft's with `{tenant}` kept: the
        token's own tenant id goes there)."""
        if app.provider is Provider.GOOGLE:
            return self.google_authorize
        return self.microsoft_authorize

    def token(self, app: OAuthApp) -> str:
        if app.provider is Provider.GOOGLE:
            return self.google_token
        return self.microsoft_token.replace("{tenant}", _tenant(app))

    def jwks(self, app: OAuthApp) -> str:
        if app.provider is Provider.GOOGLE:
            return self.google_jwks
        return self.microsoft_jwks.replace("{tenant}", _tenant(app))


def _tenant(app: OAuthApp) -> str:
    return app.tenant or DEFAULT_TENANT


class OAuthClient:
    """The ProviderClient port for Google and Microsoft."""

    def __init__(self, endpoints: Endpoints, *, timeout: float = TIMEOUT) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self.verifier = IdTokenVerifier(self._get_json)

    def authorization_url(self, app: OAuthApp, request: AuthorizationRequest) -> str:
        from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
        from authlib.oauth2.rfc7636 import create_s256_code_challenge

        extra: dict[str, str] = {
            "code_challenge": create_s256_code_challenge(request.verifier),
            "code_challenge_method": "S256",
            "nonce": request.nonce,
        }
        if app.provider is Provider.GOOGLE:
            # Without both, Google hands out no refresh token (or only on the first consent).
            extra.update(access_type="offline", prompt="consent")
        if request.login_hint:
            extra["login_hint"] = request.login_hint
        return str(
            prepare_grant_uri(
                self.endpoints.authorize(app),
                client_id=app.client_id,
                response_type="code",
                redirect_uri=request.redirect_uri,
                scope=" ".join(request.scopes),
                state=request.state,
                **extra,
            )
        )

    async def exchange(
        self,
        app: OAuthApp,
        *,
        code: str,
        verifier: str,
        redirect_uri: str,
        nonce: str,
        now: Instant,
    ) -> MailboxConsent:
        token = await self._token_request(
            app,
            "authorization_code",
            code=code,
            code_verifier=verifier,
            redirect_uri=redirect_uri,
        )
        tokens = _token_set(token, now)
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise ProviderRefused("no ID token came back: nothing was connected", error="id_token")
        claims = await self.verifier.claims(
            id_token,
            provider=app.provider,
            jwks_url=self.endpoints.jwks(app),
            authorize_url=self.endpoints.issuer_template(app),
            client_id=app.client_id,
            nonce=nonce,
            tenant=app.tenant,
            now=now,
        )
        return MailboxConsent(tokens, await self._address(app, claims, tokens.access_token))

    async def _address(self, app: OAuthApp, claims: dict[str, Any], access_token: str) -> str:
        """Google: a verified `email` in the ID token, else from userinfo; Microsoft: `email`,
        else `preferred_username` (the sign-in name, the mailbox's address in a tenant)."""
        if app.provider is Provider.GOOGLE:
            if not (claims.get("email") and claims.get("email_verified") is True):
                claims = await self._get_json(
                    self.endpoints.google_userinfo, bearer=access_token, app=app
                )
            if claims.get("email_verified") is not True:
                raise ProviderRefused("Google did not vouch for an email address", error="email")
            address = claims.get("email")
        else:
            address = claims.get("email") or claims.get("preferred_username")
        if not isinstance(address, str) or "@" not in address:
            raise ProviderRefused("the provider named no mailbox address", error="email")
        return address.strip().lower()

    async def refresh(self, app: OAuthApp, refresh_token: str, *, now: Instant) -> TokenSet:
        token = await self._token_request(app, "refresh_token", refresh_token=refresh_token)
        tokens = _token_set(token, now)
        rotated = token.get("refresh_token")
        return TokenSet(
            tokens.access_token,
            tokens.expires_at,
            refresh_token=rotated if rotated and rotated != refresh_token else None,
            scope=tokens.scope,
            obtained_at=now,
        )

    async def revoke(self, app: OAuthApp, token: str) -> bool:
        """Google revokes the whole consent given either token
        (https://developers.google.com/identity/protocols/oauth2/web-server#tokenrevoke)."""
        if app.provider is not Provider.GOOGLE:
            return False
        async with self._http() as http, _mapped(app):
            answer = await http.post(self.endpoints.google_revoke, data={"token": token})
        if answer.status_code >= 500 or answer.status_code == 429:
            raise ProviderUnavailable(f"Google's revoke endpoint answered {answer.status_code}")
        return answer.status_code in (200, 400)  # 400 invalid_token: already revoked

    async def _token_request(self, app: OAuthApp, grant_type: str, **fields: str) -> dict[str, Any]:
        """POST to the token endpoint (the client's secret in the body: both providers take
        client_secret_post); the answer's JSON object, or ProviderRefused with its `error`."""
        from authlib.common.urls import url_decode
        from authlib.oauth2.rfc6749.parameters import prepare_token_request

        credentials = {"client_id": app.client_id}
        if app.client_secret:
            credentials["client_secret"] = app.client_secret
        body = prepare_token_request(grant_type, **fields, **credentials)
        async with self._http() as http, _mapped(app):
            answer = await http.post(
                self.endpoints.token(app),
                data=dict(url_decode(body)),
                headers={"accept": "application/json"},
            )
        return _token_answer(app, answer)

    def _http(self) -> httpx.AsyncClient:
        import httpx

        headers = {"user-agent": USER_AGENT}
        return httpx.AsyncClient(timeout=self.timeout, trust_env=False, headers=headers)

    async def _get_json(
        self, url: str, *, bearer: str | None = None, app: OAuthApp | None = None
    ) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
        async with self._http() as http, _mapped(app):
            answer = await http.get(url, headers=headers)
            answer.raise_for_status()
            found = answer.json()
        if not isinstance(found, dict):
            raise ProviderUnavailable(f"{_host(url)} answered something that is not a JSON object")
        return found


def _token_set(token: dict[str, Any], now: Instant) -> TokenSet:
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise ProviderUnavailable("the token endpoint answered without an access token")
    try:
        lifetime = float(token.get("expires_in", 3600))
    except (TypeError, ValueError):
        lifetime = 3600.0
    refresh = token.get("refresh_token")
    return TokenSet(
        access,
        now + lifetime,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        scope=str(token.get("scope") or ""),
        obtained_at=now,
    )


def _token_answer(app: OAuthApp, answer: httpx.Response) -> dict[str, Any]:
    """The token endpoint's JSON object; its `error` as ProviderRefused (or, for the codes that
    say "later", a 429 or a 5xx, ProviderUnavailable)."""
    name = app.provider.display_name
    if answer.status_code >= 500 or answer.status_code == 429:
        raise ProviderUnavailable(f"{name}'s token endpoint answered HTTP {answer.status_code}")
    try:
        found = answer.json()
    except ValueError:
        found = None
    if not isinstance(found, dict):
        raise ProviderUnavailable(f"{name}'s token endpoint answered something that is not JSON")
    error = found.get("error")
    if answer.status_code >= 400 or error:
        error = str(error or f"http_{answer.status_code}")
        if error in _TRANSIENT:
            raise ProviderUnavailable(f"{name} answered {error}")
        raise ProviderRefused(f"{name} refused ({error})", error=error)
    return found


@asynccontextmanager
async def _mapped(app: OAuthApp | None) -> AsyncIterator[None]:
    """httpx's errors as ProviderRefused (a 4xx) or ProviderUnavailable (no answer, 429, 5xx)."""
    import httpx

    name = app.provider.display_name if app else "the provider"
    try:
        yield
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        if status >= 500 or status == 429:
            raise ProviderUnavailable(f"{name} answered HTTP {status}") from None
        raise ProviderRefused(f"{name} refused (HTTP {status})", error=f"http_{status}") from None
    except (httpx.HTTPError, ValueError) as exc:
        raise ProviderUnavailable(f"{name} could not be reached ({type(exc).__name__})") from None


def _host(url: str) -> str:
    import httpx

    return httpx.URL(url).host or "the provider"


__all__ = ["Endpoints", "OAuthClient"]
