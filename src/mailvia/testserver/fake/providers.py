"""What differs between the fake Google and the fake Microsoft: scopes, identities, ID tokens.

Pure functions of their arguments (time is passed in). Sources for each claim are cited where
it is built; the origin (scheme://host:port of the fake) stands in for the real hosts.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from typing import Any

from mailvia.testserver.fake.jwt import b64url
from mailvia.testserver.fake.tokens import Consent

# Google: "email"/"profile" come back as their full names in the token response's `scope`
# (https://developers.google.com/identity/protocols/oauth2/scopes#oauth2).
_GOOGLE_ALIASES = {
    "email": "https://www.googleapis.com/auth/userinfo.email",
    "profile": "https://www.googleapis.com/auth/userinfo.profile",
}
GMAIL_SEND_SCOPES = frozenset(
    {"https://www.googleapis.com/auth/gmail.send", "https://mail.google.com/"}
)
GMAIL_SMTP_SCOPE = "https://mail.google.com/"
GRAPH_SEND_SCOPES = frozenset({"Mail.Send", "https://graph.microsoft.com/Mail.Send"})
OUTLOOK_SMTP_SCOPE = "https://outlook.office.com/SMTP.Send"
# OpenID Connect scopes are not a resource: they may go with any one resource.
_OIDC = frozenset({"openid", "email", "profile", "offline_access"})

# Microsoft's fixed stand-ins: a tenant for "common"/"organizations" and the consumer tenant
# that "consumers" means (https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference).
FAKE_TENANT = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://mailvia.test/fake-tenant"))
CONSUMER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+$")


def split_scopes(text: str) -> tuple[str, ...]:
    """The scopes of a space-separated `scope` parameter, in order, without repeats."""
    return tuple(dict.fromkeys(text.split()))


def google_granted(scopes: Iterable[str]) -> tuple[str, ...]:
    """Google's names for the granted scopes (what its token response's `scope` lists)."""
    return tuple(dict.fromkeys(_GOOGLE_ALIASES.get(s, s) for s in scopes))


def microsoft_granted(scopes: Iterable[str]) -> tuple[str, ...]:
    """Microsoft leaves `offline_access` out of the token response's `scope`."""
    return tuple(s for s in scopes if s != "offline_access")


def microsoft_resources(scopes: Iterable[str]) -> set[str]:
    """The resources the scopes belong to; a Graph scope may be written without its host."""
    resources = set()
    for scope in scopes:
        if scope in _OIDC:
            continue
        host, slash, _ = scope.rpartition("/")
        resources.add(host if slash and "://" in scope else "https://graph.microsoft.com")
    return resources


def tenant_id(tenant: str) -> str | None:
    """The tid for the `{tenant}` path segment; None for a tenant Microsoft would not know."""
    if tenant in ("common", "organizations") or _DOMAIN.match(tenant):
        return FAKE_TENANT
    if tenant == "consumers":
        return CONSUMER_TENANT
    return tenant.lower() if _GUID.match(tenant) else None


def google_sub(account: str) -> str:
    """A stable numeric Google account id for an address (Google's `sub` is 21 digits)."""
    digest = hashlib.sha256(account.lower().encode()).digest()
    return str(int.from_bytes(digest[:9], "big")).rjust(21, "1")[:21]


def microsoft_oid(account: str) -> str:
    """A stable object id (GUID) for an address."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "mailto:" + account.lower()))


def microsoft_sub(account: str, client_id: str) -> str:
    """Microsoft's `sub` is pairwise: different for each app that asks."""
    return b64url(hashlib.sha256(f"{client_id}:{microsoft_oid(account)}".encode()).digest())


def google_id_claims(consent: Consent, *, origin: str, now: float, lifetime: int) -> dict[str, Any]:
    """Claims of Google's ID token; `email` only with the email scope
    (https://developers.google.com/identity/openid-connect/openid-connect#an-id-tokens-payload)."""
    claims: dict[str, Any] = {
        "iss": origin,
        "azp": consent.client_id,
        "aud": consent.client_id,
        "sub": google_sub(consent.account),
        "iat": int(now),
        "exp": int(now) + lifetime,
    }
    if "email" in consent.scopes or _GOOGLE_ALIASES["email"] in consent.scopes:
        claims.update(email=consent.account, email_verified=True)
    if consent.nonce:
        claims["nonce"] = consent.nonce
    return claims


def microsoft_id_claims(
    consent: Consent, *, origin: str, now: float, lifetime: int
) -> dict[str, Any]:
    """Claims of a v2.0 ID token; `preferred_username` needs the profile scope and `email`
    the email scope (https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference)."""
    claims: dict[str, Any] = {
        "ver": "2.0",
        "iss": f"{origin}/{consent.tenant}/v2.0",
        "aud": consent.client_id,
        "sub": microsoft_sub(consent.account, consent.client_id),
        "oid": microsoft_oid(consent.account),
        "tid": consent.tenant,
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + lifetime,
    }
    if "profile" in consent.scopes:
        claims["preferred_username"] = consent.account
    if "email" in consent.scopes:
        claims["email"] = consent.account
    if consent.nonce:
        claims["nonce"] = consent.nonce
    return claims


def microsoft_access_claims(consent: Consent, *, now: float, expires_at: float) -> dict[str, Any]:
    """Claims of a Microsoft access token (v1 tokens, as Graph and Outlook get), never read by
    clients but shaped like the real ones (https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference)."""
    resources = sorted(microsoft_resources(consent.scopes)) or ["https://graph.microsoft.com"]
    short = [s.rpartition("/")[2] if "://" in s else s for s in consent.scopes]
    return {
        "aud": resources[0],
        "iss": f"https://sts.windows.net/{consent.tenant}/",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(expires_at),
        "appid": consent.client_id,
        "oid": microsoft_oid(consent.account),
        "tid": consent.tenant,
        "upn": consent.account,
        "scp": " ".join(s for s in short if s != "offline_access"),
        "uti": uuid.uuid4().hex,
        "ver": "1.0",
    }
