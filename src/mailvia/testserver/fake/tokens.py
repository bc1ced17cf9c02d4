"""The fake providers' consents: authorization codes, access and refresh tokens, revocation.

Thread-safe (one lock); time comes from the `clock` given. Refusals are values (`Refusal`),
turned into each provider's error body by `errors.py`. A consent is what one Allow on the
consent page created (OAuth calls it a grant; mailvia's `grant` gives sender identities);
revoking any of its tokens (or the account's consent) kills all of them, as Google's revoke
endpoint does (https://developers.google.com/identity/protocols/oauth2/web-server#tokenrevoke).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

CODE_LIFETIME = 600.0  # seconds, as both providers document for codes (10 minutes)
PROVIDERS = ("google", "microsoft")


@dataclass(frozen=True)
class Consent:
    """One consent: who allowed which client what. `tenant` is Microsoft's tid ("" for Google)."""

    id: str
    provider: str
    client_id: str
    account: str
    scopes: tuple[str, ...]
    offline: bool
    tenant: str = ""
    nonce: str | None = None
    revoked: bool = False


@dataclass(frozen=True)
class Issued:
    """Tokens handed out by a code exchange or a refresh (`refresh_token` None: none new)."""

    consent: Consent
    access_token: str
    expires_in: int
    refresh_token: str | None


@dataclass(frozen=True)
class Refusal:
    """Why a code, refresh token or access token was not accepted (see `REASONS`)."""

    reason: str
    consent: Consent | None = None


REASONS = (
    "code_unknown",
    "code_used",
    "code_expired",
    "client_mismatch",
    "redirect_mismatch",
    "verifier_missing",
    "verifier_mismatch",
    "refresh_unknown",
    "refresh_retired",
    "consent_revoked",
    "token_unknown",
    "token_expired",
)


@dataclass(frozen=True)
class Authorized:
    """A live access token: its consent and scopes."""

    consent: Consent
    scopes: tuple[str, ...]


@dataclass
class _Code:
    consent_id: str
    redirect_uri: str
    challenge: str
    expires_at: float
    used: bool = False


@dataclass
class _Access:
    consent_id: str
    expires_at: float


@dataclass
class _Refresh:
    consent_id: str
    retired: bool = False


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of `verifier` (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def fingerprint(token: str) -> str:
    """A short stable name for a token, for logs that must not hold the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class TokenFormats:
    """How a provider's codes and tokens look (opaque strings to clients)."""

    code: Callable[[], str]
    refresh: Callable[[], str]


GOOGLE_FORMATS = TokenFormats(
    code=lambda: "4/0" + secrets.token_urlsafe(40),
    refresh=lambda: "1//0" + secrets.token_urlsafe(48),
)
MICROSOFT_FORMATS = TokenFormats(
    code=lambda: "1.A" + secrets.token_urlsafe(64),
    refresh=lambda: "1.A" + secrets.token_urlsafe(96),
)
FORMATS = {"google": GOOGLE_FORMATS, "microsoft": MICROSOFT_FORMATS}

# Makes an access token for a consent expiring at the given time (Microsoft's is a signed JWT).
AccessMinter = Callable[[Consent, float], str]


def _opaque_access(consent: Consent, expires_at: float) -> str:
    return "ya29." + secrets.token_urlsafe(48)


@dataclass
class TokenStore:
    """Every consent and token the fake handed out. Safe to use from several threads.

    `rotate[provider]`: a refresh also returns a new refresh token. `retire_rotated`: the old
    one then stops working (off by default: Microsoft keeps old refresh tokens valid until they
    expire, https://learn.microsoft.com/entra/identity-platform/refresh-tokens).
    """

    clock: Callable[[], float] = time.time
    token_lifetime: int = 3600
    rotate: dict[str, bool] = field(default_factory=lambda: {"google": False, "microsoft": True})
    retire_rotated: bool = False
    minters: dict[str, AccessMinter] = field(default_factory=dict)
    _consents: dict[str, Consent] = field(default_factory=dict)
    _codes: dict[str, _Code] = field(default_factory=dict)
    _access: dict[str, _Access] = field(default_factory=dict)
    _refresh: dict[str, _Refresh] = field(default_factory=dict)
    _refreshes: Counter[str] = field(default_factory=Counter)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open_consent(
        self, consent: Consent, *, redirect_uri: str, challenge: str
    ) -> tuple[Consent, str]:
        """Record a consent (its `id` is assigned here); returns it and a new code."""
        with self._lock:
            consent = replace(consent, id=f"c{next(self._ids)}")
            self._consents[consent.id] = consent
            code = FORMATS[consent.provider].code()
            self._codes[code] = _Code(
                consent.id, redirect_uri, challenge, self.clock() + CODE_LIFETIME
            )
        return consent, code

    def has_offline_consent(self, provider: str, client_id: str, account: str) -> bool:
        """True when a live consent with refresh tokens exists (Google then gives no new one)."""
        key = (provider, client_id, account.lower())
        with self._lock:
            return any(
                (g.provider, g.client_id, g.account.lower()) == key and g.offline and not g.revoked
                for g in self._consents.values()
            )

    def redeem(
        self, *, provider: str, code: str, client_id: str, redirect_uri: str, verifier: str
    ) -> Issued | Refusal:
        """Exchange a code. A reused code revokes its consent, as Google does (RFC 6749 4.1.2)."""
        with self._lock:
            record = self._codes.get(code)
            consent = self._consents.get(record.consent_id) if record is not None else None
            if record is None or consent is None or consent.provider != provider:
                return Refusal("code_unknown")
            if record.used:
                self._revoke_locked(consent.id)
                return Refusal("code_used", consent)
            refusal = self._check_code(record, consent, client_id, redirect_uri, verifier)
            if refusal is not None:
                return refusal
            record.used = True
            if consent.revoked:
                return Refusal("consent_revoked", consent)
            return self._issue_locked(consent, with_refresh=consent.offline)

    def _check_code(
        self, record: _Code, consent: Consent, client_id: str, redirect_uri: str, verifier: str
    ) -> Refusal | None:
        if record.expires_at <= self.clock():
            return Refusal("code_expired", consent)
        if client_id != consent.client_id:
            return Refusal("client_mismatch", consent)
        if redirect_uri != record.redirect_uri:
            return Refusal("redirect_mismatch", consent)
        if not verifier:
            return Refusal("verifier_missing", consent)
        if not secrets.compare_digest(s256(verifier), record.challenge):
            return Refusal("verifier_mismatch", consent)
        return None

    def refresh(self, *, provider: str, refresh_token: str, client_id: str) -> Issued | Refusal:
        """A new access token (and, when rotating, a new refresh token) for a refresh token."""
        with self._lock:
            record = self._refresh.get(refresh_token)
            consent = self._consents.get(record.consent_id) if record is not None else None
            if record is None or consent is None or consent.provider != provider:
                return Refusal("refresh_unknown")
            if consent.revoked:
                return Refusal("consent_revoked", consent)
            if record.retired:
                return Refusal("refresh_retired", consent)
            if client_id != consent.client_id:
                return Refusal("client_mismatch", consent)
            rotate = self.rotate.get(provider, False)
            if rotate and self.retire_rotated:
                record.retired = True
            self._refreshes[consent.account.lower()] += 1
            return self._issue_locked(consent, with_refresh=rotate)

    def _issue_locked(self, consent: Consent, *, with_refresh: bool) -> Issued:
        expires_at = self.clock() + self.token_lifetime
        access = self.minters.get(consent.provider, _opaque_access)(consent, expires_at)
        self._access[access] = _Access(consent.id, expires_at)
        refresh = None
        if with_refresh:
            refresh = FORMATS[consent.provider].refresh()
            self._refresh[refresh] = _Refresh(consent.id)
        return Issued(consent, access, self.token_lifetime, refresh)

    def check_access(self, token: str) -> Authorized | Refusal:
        """Whether `token` is a live access token; never changes anything."""
        with self._lock:
            record = self._access.get(token)
            consent = self._consents.get(record.consent_id) if record is not None else None
            if record is None or consent is None:
                return Refusal("token_unknown")
            if consent.revoked:
                return Refusal("consent_revoked", consent)
            if record.expires_at <= self.clock():
                return Refusal("token_expired", consent)
            return Authorized(consent, consent.scopes)

    def consent_of(self, token: str) -> Consent | None:
        """The consent an access or refresh token belongs to, if the fake issued it."""
        with self._lock:
            record = self._access.get(token) or self._refresh.get(token)
            return self._consents.get(record.consent_id) if record is not None else None

    def revoke_token(self, token: str) -> Consent | None:
        """Revoke the consent of an access or refresh token (Google's revoke); None if unknown."""
        with self._lock:
            record = self._access.get(token) or self._refresh.get(token)
            consent = self._consents.get(record.consent_id) if record is not None else None
            if consent is None or consent.revoked:
                return None
            return self._revoke_locked(consent.id)

    def _revoke_locked(self, consent_id: str) -> Consent:
        consent = replace(self._consents[consent_id], revoked=True)
        self._consents[consent_id] = consent
        return consent

    def revoke_account(self, account: str, provider: str | None = None) -> int:
        """Revoke every live consent of `account` (a user removing consent); returns how many."""
        with self._lock:
            ids = [g.id for g in self._live(account, provider)]
            for consent_id in ids:
                self._revoke_locked(consent_id)
            return len(ids)

    def expire_account(self, account: str, provider: str | None = None) -> int:
        """Make the account's unexpired access tokens expire now; returns how many."""
        with self._lock:
            now = self.clock()
            ids = {g.id for g in self._live(account, provider)}
            live = [a for a in self._access.values() if a.consent_id in ids and a.expires_at > now]
            for record in live:
                record.expires_at = now
            return len(live)

    def _live(self, account: str, provider: str | None) -> list[Consent]:
        return [
            g
            for g in self._consents.values()
            if g.account.lower() == account.lower()
            and not g.revoked
            and provider in (None, g.provider)
        ]

    def refresh_counts(self) -> dict[str, int]:
        """Successful refreshes per account (lower-cased) since the start."""
        with self._lock:
            return dict(self._refreshes)

    def consents(self) -> list[Consent]:
        """Every consent so far, revoked ones included."""
        with self._lock:
            return list(self._consents.values())
