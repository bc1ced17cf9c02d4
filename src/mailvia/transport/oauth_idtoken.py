"""Verifying a provider's OpenID Connect ID token with joserfc: the signature against the
provider's published keys (JWKS, cached an hour, fetched again for a key id it lacks), and the
claims `iss`, `aud`, `exp`, `iat` and the flow's `nonce`. The mailbox's address is read from a
verified token only.

Side effects: HTTP GETs of the JWKS URL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mailvia.domain.channel import Provider
from mailvia.domain.clock import Instant
from mailvia.domain.errors import ProviderRefused
from mailvia.domain.oauth import expected_issuer

if TYPE_CHECKING:
    from joserfc import jwt
    from joserfc.jwk import KeySet


JWKS_TTL = 3600.0
LEEWAY = 120  # seconds of clock difference allowed on exp, iat and nbf
ALGORITHMS = ["RS256"]  # what Google and Microsoft sign ID tokens with
Fetch = Callable[[str], Awaitable[dict[str, Any]]]


def _refused(why: str) -> ProviderRefused:
    message = f"the ID token could not be verified ({why}): nothing was connected"
    return ProviderRefused(message, error="id_token")


class IdTokenVerifier:
    """Checks ID tokens against the keys at each provider's JWKS URL."""

    def __init__(self, fetch: Fetch, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.fetch = fetch  # GET a URL, answer its JSON object (raises ProviderUnavailable)
        self.clock = clock
        self._keys: dict[str, tuple[float, KeySet]] = {}
        self._lock = asyncio.Lock()

    async def claims(
        self,
        id_token: str,
        *,
        provider: Provider,
        jwks_url: str,
        authorize_url: str,
        client_id: str,
        nonce: str,
        tenant: str | None,
        now: Instant,
    ) -> dict[str, Any]:
        """The token's claims once its signature and claims check out. Raises ProviderRefused
        (error `id_token`), ProviderUnavailable (the keys cannot be fetched)."""
        from joserfc import jwt
        from joserfc.errors import JoseError

        token = await self._decode(id_token, jwks_url)
        claims = dict(token.claims)
        tid = claims.get("tid") if provider is Provider.MICROSOFT else None
        if provider is Provider.MICROSOFT and not isinstance(tid, str):
            raise _refused("no tenant id")
        if tenant and _is_tenant_id(tenant) and tid != tenant:
            raise _refused("issued by another tenant")
        issuer = expected_issuer(provider, authorize_url, tid)
        issuers = [issuer] + (["accounts.google.com"] if issuer == _GOOGLE else [])
        registry = jwt.JWTClaimsRegistry(
            now=int(now),
            leeway=LEEWAY,
            iss={"essential": True, "values": issuers},
            aud={"essential": True, "value": client_id},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise _refused(exc.error or type(exc).__name__) from None
        return claims

    async def _decode(self, id_token: str, jwks_url: str) -> jwt.Token:
        from joserfc import jwt
        from joserfc.errors import JoseError

        for fresh in (False, True):
            keys = await self._key_set(jwks_url, fresh=fresh)
            try:
                return jwt.decode(id_token, keys, algorithms=ALGORITHMS)
            except (JoseError, ValueError) as exc:
                if fresh or not _unknown_key(exc):
                    raise _refused(getattr(exc, "error", None) or type(exc).__name__) from None
        raise _refused("no key")  # not reached

    async def _key_set(self, url: str, *, fresh: bool) -> KeySet:
        from joserfc.errors import JoseError
        from joserfc.jwk import KeySet

        async with self._lock:
            cached = self._keys.get(url)
            if cached is not None and not fresh and self.clock() - cached[0] < JWKS_TTL:
                return cached[1]
            document = await self.fetch(url)
            try:
                keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
            except (JoseError, ValueError, KeyError, TypeError):
                raise _refused("the provider's keys could not be read") from None
            self._keys[url] = (self.clock(), keys)
            return keys


_GOOGLE = "https://accounts.google.com"


def _unknown_key(exc: Exception) -> bool:
    """A key id the cached set lacks: the provider rotated its keys; fetch them again."""
    from joserfc.errors import InvalidKeyIdError

    return isinstance(exc, InvalidKeyIdError)


def _is_tenant_id(tenant: str) -> bool:
    """A tenant GUID (not `organizations`, `common` or a domain name)."""
    parts = tenant.split("-")
    return [len(p) for p in parts] == [8, 4, 4, 4, 12] and all(
        c in "0123456789abcdefABCDEF" for c in tenant.replace("-", "")
    )
