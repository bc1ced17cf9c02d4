"""OAuth mailboxes: the providers, the scopes each transport needs, and when a token is due.

A Gmail or Microsoft 365 mailbox connects through the organization's own OAuth app
(authorization code with PKCE) and sends through the provider's API or SMTP XOAUTH2; no
password is stored. Scopes and defaults come from ../shared/research/providers_2026-12.md
(Google: `gmail.send` is only *sensitive*, `https://mail.google.com/` is *restricted* [N14];
Microsoft: `Mail.Send` for Graph [N4], `SMTP.Send` for XOAUTH2 [P5]).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

from mailvia.domain.channel import (
    Channel,
    ChannelState,
    Kind,
    Provider,
    TransportKind,
    own_mailbox,
)
from mailvia.domain.clock import Instant
from mailvia.domain.errors import InvalidInput
from mailvia.domain.presets import PRESETS
from mailvia.domain.replies import Reply

_IDENTITY = ("openid", "email")
SCOPES: dict[tuple[Provider, TransportKind], tuple[str, ...]] = {
    # https://developers.google.com/gmail/api/auth/scopes [N14]
    (Provider.GOOGLE, TransportKind.GMAIL_API): (
        *_IDENTITY,
        "https://www.googleapis.com/auth/gmail.send",
    ),
    # SMTP XOAUTH2 needs the full mail scope (restricted) [N14]
    (Provider.GOOGLE, TransportKind.SMTP): (*_IDENTITY, "https://mail.google.com/"),
    # https://learn.microsoft.com/graph/api/user-sendmail (Mail.Send) [N4]
    (Provider.MICROSOFT, TransportKind.GRAPH): (
        "https://graph.microsoft.com/Mail.Send",
        "offline_access",
        *_IDENTITY,
    ),
    # https://learn.microsoft.com/exchange/client-developer/legacy-protocols/
    # how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth [P5]
    (Provider.MICROSOFT, TransportKind.SMTP): (
        "https://outlook.office.com/SMTP.Send",
        "offline_access",
        *_IDENTITY,
    ),
}


def scopes_for(provider: Provider, transport: TransportKind) -> tuple[str, ...]:
    """The scopes to ask for. Raises InvalidInput for a transport the provider lacks."""
    try:
        return SCOPES[(provider, transport)]
    except KeyError:
        allowed = ", ".join(t for p, t in SCOPES if p is provider)
        raise InvalidInput(
            f"transport {transport}: a {provider.display_name} mailbox sends by {allowed}"
        ) from None


def transport_fits(provider: Provider, transport: TransportKind) -> bool:
    return (provider, transport) in SCOPES


REFRESH_AHEAD = 300.0  # seconds before expiry that a token is refreshed


@dataclass(frozen=True)
class TokenSet:
    """An access token, when it expires, and the refresh token to renew it. Never in a repr.
    `obtained_at`, when known, keeps a short-lived token from being due the moment it comes:
    it is renewed at half its life at the latest, not `ahead` seconds before its end."""

    access_token: str = field(repr=False)
    expires_at: Instant
    refresh_token: str | None = field(default=None, repr=False)
    scope: str = ""
    obtained_at: Instant | None = None

    def due(self, now: Instant, ahead: float = REFRESH_AHEAD) -> bool:
        """Whether the access token should be renewed before it is used at `now`."""
        if self.obtained_at is not None:
            ahead = min(ahead, max(0.0, (self.expires_at - self.obtained_at) / 2))
        return now >= self.expires_at - ahead


class AppSource(StrEnum):
    """Whose OAuth app a connection uses."""

    ORGANIZATION = "organization"  # the organization's own, entered by an admin
    OPERATOR = "operator"  # the operator-wide fallback from the settings


@dataclass(frozen=True)
class OAuthApp:
    """An OAuth client registered with a provider. `tenant` (Microsoft): a tenant id or
    domain, or `organizations` for any work account. The secret never appears in a repr."""

    provider: Provider
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    tenant: str | None = None
    source: AppSource = AppSource.ORGANIZATION


@dataclass(frozen=True)
class MailboxConsent:
    """What a finished consent yields: the tokens, and the mailbox's address as the provider
    vouches for it (a verified ID token, or its userinfo)."""

    tokens: TokenSet
    address: str


def expected_issuer(provider: Provider, authorize_url: str, tid: str | None = None) -> str:
    """The `iss` an ID token must carry. Google: the authorize URL's origin
    (`https://accounts.google.com` for the real one); Microsoft v2.0: the authorize URL with
    `/oauth2/v2.0/authorize` replaced by `/v2.0` and `{tenant}` by the token's `tid`
    (https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference)."""
    if provider is Provider.GOOGLE:
        parts = urlsplit(authorize_url)
        return f"{parts.scheme}://{parts.netloc}"
    base = authorize_url.replace("/oauth2/v2.0/authorize", "/v2.0")
    return base.replace("{tenant}", tid or "")


def reconnect_words(provider: Provider) -> str:
    return f"reconnect with {provider.display_name}"


class Refusal(StrEnum):
    """Why an OAuth mailbox has no token, as data (stored with its tokens' `failure` and with
    the channel it disconnected, never read back from the reply's words): the provider refused
    the mailbox's consent, or the app itself (the organization's own, or the operator's), or
    mailvia could not even ask (no app set up for it, no refresh token)."""

    CONSENT = "consent"
    ORGANIZATION_APP = "organization_app"
    OPERATOR_APP = "operator_app"
    NOT_ASKED = "not_asked"

    @property
    def app(self) -> AppSource | None:
        """Whose app the provider refused, or None: not the app."""
        return _APP_OF.get(self)

    @property
    def asked(self) -> bool:
        """Whether the provider was asked and refused (the consent or the app)."""
        return self is not Refusal.NOT_ASKED


_APP_OF = {
    Refusal.ORGANIZATION_APP: AppSource.ORGANIZATION,
    Refusal.OPERATOR_APP: AppSource.OPERATOR,
}
APP_REFUSALS = frozenset(_APP_OF)


def refusal_of(error: str, source: AppSource = AppSource.ORGANIZATION) -> Refusal:
    """The kind of a refresh the provider refused with `error`, through `source`'s app."""
    if error not in APP_REFUSED:
        return Refusal.CONSENT
    return Refusal.OPERATOR_APP if source is AppSource.OPERATOR else Refusal.ORGANIZATION_APP


def refusal(value: str | None) -> Refusal | None:
    """A stored or carried refusal kind, or None (none, or one this version does not know)."""
    try:
        return Refusal(value) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class RefusedApp:
    """An OAuth app the provider refused, as the organization's admins see it: whose, how many
    of its mailboxes are disconnected for it alone and come back once it is mended
    (`mailboxes`), how many were connected through a client since replaced (`stranded`: a
    refresh token works only with its own client, so their reps must reconnect), since when."""

    provider: Provider
    source: AppSource
    mailboxes: int
    since: Instant
    stranded: int = 0


def refused_apps(
    channels: list[Channel], current: Callable[[Channel], bool] = lambda _: True
) -> list[RefusedApp]:
    """The apps whose refusal keeps some of these channels disconnected (by their refusal's
    kind, as stored), one per provider and source; `current`: whether a channel's tokens are
    of the client its provider's app has now (only those come back when it is mended)."""
    found: dict[tuple[Provider, AppSource], list[Channel]] = {}
    for channel in channels:
        kind = refusal(channel.refusal)
        if channel.state is ChannelState.DISCONNECTED and channel.oauth and kind and kind.app:
            found.setdefault((channel.oauth, kind.app), []).append(channel)
    return [
        RefusedApp(
            p,
            s,
            sum(1 for c in cs if current(c)),
            min(c.state_changed_at or 0.0 for c in cs),
            sum(1 for c in cs if not current(c)),
        )
        for (p, s), cs in sorted(found.items())
    ]


# What a credential source settles with when no token can be had (CredentialsFailed). A 5xx
# at auth disconnects the channel and holds its mail; a 4xx is retried (domain/replies.py).
def consent_refused(
    provider: Provider, error: str, source: AppSource = AppSource.ORGANIZATION
) -> Reply:
    """The provider refused the refresh token (revoked consent, expired, invalid_grant), or
    the app itself (APP_REFUSED: its secret wrong or expired), whose `source` it names. The
    reply carries its kind (`refusal`)."""
    name = provider.display_name
    if error in APP_REFUSED:
        said = f"{app_refused_words(provider, source)} ({error})"
    else:
        said = f"{name} no longer honours the consent ({error})"
    text = f"mailvia: {said}: {reconnect_words(provider)}"
    return Reply(535, "5.7.8", text, refusal=refusal_of(error, source))


# RFC 6749 §5.2: the token endpoint refused the client (the app: its id or secret; Entra
# client secrets expire, the portal allows at most 24 months), not the mailbox's grant. Google
# also answers 401 `deleted_client` ("The OAuth client was deleted.", r-lib/httr#687) and
# `disabled_client` ("The OAuth client was disabled.", openpubkey/opkssh#617) at its token
# endpoint. Every mailbox of the app fails alike, and reconnecting fails too until the app
# is mended.
APP_REFUSED = frozenset(
    {"invalid_client", "unauthorized_client", "deleted_client", "disabled_client"}
)

_WHOSE = {AppSource.ORGANIZATION: "the organization's", AppSource.OPERATOR: "the operator's"}


def app_refused_words(provider: Provider, source: AppSource = AppSource.ORGANIZATION) -> str:
    return f"{provider.display_name} refused {_WHOSE[source]} OAuth app"


def app_fix(source: AppSource) -> str:
    """Who mends a refused app, and where: an admin on the Team channels page for the
    organization's own; for the operator's (the settings), whoever runs mailvia, or an admin
    who sets up the organization's own app instead."""
    if source is AppSource.OPERATOR:
        return (
            "it is the operator's app (mailvia's settings), so ask whoever runs mailvia to "
            "mend it, or an admin sets up the organization's own app on the Team channels page"
        )
    return "an admin enters the app's current client secret on the Team channels page"


def refused_app(reply: Reply | str | None) -> AppSource | None:
    """Whose app mailvia's own reply says the provider refused, or None. Exact: only a reply
    `consent_refused` builds for an APP_REFUSED error (a Reply, or a channel's state reason
    as stored: `535 5.7.8 mailvia: ...`), never a text that merely contains those words."""
    said = str(reply) if isinstance(reply, Reply) else (reply or "").strip()
    return _APP_REFUSALS.get(said)


def app_refused(reply: Reply | str | None) -> bool:
    return refused_app(reply) is not None


def app_of(reply: Reply) -> AppSource | None:
    """Whose app the provider refused when `reply` was given: by the refusal's kind it carries
    (`Reply.refusal`), else by mailvia's own exact words (`refused_app`: a stored reply read
    back without its kind); None: not an app's refusal."""
    kind = refusal(reply.refusal)
    return kind.app if kind is not None else refused_app(reply)


_APP_REFUSALS = {
    str(consent_refused(p, e, s)): s for p in Provider for e in APP_REFUSED for s in AppSource
}


def connect_refused(
    provider: Provider,
    error: str,
    *,
    at_callback: bool,
    source: AppSource = AppSource.ORGANIZATION,
) -> str:
    """What the rep reads when a connection ends with the provider's `error`: at the callback
    (the consent page's answer) or at the code exchange; with the next step to take."""
    name = provider.display_name
    if error in APP_REFUSED:
        return (
            f"{app_refused_words(provider, source)} ({error}): nothing was connected. Its "
            f"client ID or secret is wrong, or the secret has expired: {app_fix(source)}; "
            "then connect again."
        )
    if at_callback:
        return (
            f"{name} did not grant access ({error}): nothing was connected. If you chose "
            f"Deny, connect again and choose Allow; if {name} said an admin must approve "
            "the app, ask an admin of your organization's account to approve it."
        )
    return (
        f"{name} refused ({error}): nothing was connected. Connect again from My delivery "
        "channel; if it fails again, show this to an admin."
    )


def not_connected(provider: Provider, why: str = "no token is stored for this mailbox") -> Reply:
    """mailvia could not even ask the provider (no app set up for the mailbox, no refresh
    token): Refusal.NOT_ASKED."""
    text = f"mailvia: {why}: {reconnect_words(provider)}"
    return Reply(535, "5.7.8", text, refusal=Refusal.NOT_ASKED)


def token_unavailable(detail: str) -> Reply:
    """The token endpoint is down, answered 5xx or timed out: retry later."""
    return Reply(451, "4.4.2", f"mailvia: could not renew the access token: {detail}")


def refused_after_renewal(provider: Provider, reply: Reply) -> Reply:
    """The server refused a token renewed a moment ago: the consent itself no longer works."""
    name = provider.display_name
    return Reply(
        535,
        "5.7.8",
        f"mailvia: {name} refused a freshly renewed token ({reply}): {reconnect_words(provider)}",
    )


# Microsoft 365 replies that mean password (basic) sign-in is off for the mailbox or tenant
# (domain/probe.py HINTS cites them): the way out is the same channel connected by OAuth.
BASIC_AUTH_OFF = frozenset({(535, "5.7.139"), (535, "5.7.3"), (550, "5.7.30")})


def oauth_offer(channel: Channel) -> Provider | None:
    """The provider a password mailbox can be reconnected with by OAuth, turning it into an
    OAuth mailbox (in place: its held mail is kept); None for other channels. A password
    mailbox is one made from preset gmail or microsoft365, or one added by hand with no
    preset (`--host smtp.office365.com`) whose host is such a preset's own: Microsoft turns
    password SMTP off, and that channel must be able to move too."""
    if channel.oauth is not None or channel.kind is not Kind.SMTP:
        return None
    if channel.preset is not None:
        return next((p for p in Provider if p.preset == channel.preset), None)
    host = channel.host.lower().rstrip(".")
    return next((p for p in Provider if host in PRESETS[p.preset].hosts), None)


def connects_as(channel: Channel) -> Provider | None:
    """The provider whose OAuth consent turns into (or reconnects) this channel."""
    return channel.oauth or oauth_offer(channel)


def connect_blocked(channels: Iterable[Channel], user_id: str, provider: Provider) -> list[Channel]:
    """The user's own channels whose address connecting `provider` would be refused for
    (one address has one channel): each address's first by name, when none of its own
    channels is that provider's mailbox."""
    mine: dict[str, list[Channel]] = {}
    for channel in sorted(channels, key=lambda c: (c.name, c.id)):
        found = own_mailbox(channel)
        if found is not None and found[0] == user_id:
            mine.setdefault(found[1], []).append(channel)
    return [same[0] for same in mine.values() if all(connects_as(c) is not provider for c in same)]


def connect_taken(existing: Channel, provider: Provider) -> str:
    """The refusal of a `provider` consent for an address whose own channel `existing` is
    another server's: what the rep can do depends on what that channel is."""
    other = connects_as(existing)
    head = f"{existing.address} already has its own channel {existing.name!r}"
    if other is not None:
        return (
            f"{head}, a {other.display_name} mailbox: one address has one channel, so it "
            f"cannot be connected with {provider.display_name} too. Reconnect it with "
            f"{other.display_name}, or remove it first and then connect "
            f"{provider.display_name}"
        )
    return (
        f"{head}, through {existing.host}: one address has one channel, so connecting "
        f"{provider.display_name} would make a second. To send through "
        f"{provider.display_name} instead, remove that channel first (its waiting mail is "
        f"moved or cancelled then), and connect {provider.display_name} again"
    )


def basic_auth_off(channel: Channel) -> bool:
    """Whether the channel was disconnected because password sign-in is off (the Microsoft
    365 default for existing tenants from the end of December 2026 [P4])."""
    return channel.state is ChannelState.DISCONNECTED and basic_auth_refused(channel.state_reason)


def basic_auth_refused(reason: str | None) -> bool:
    """Whether a reply (as a channel's state reason shows it: `535 5.7.139 ...`) says that
    password sign-in is off."""
    code, _, rest = (reason or "").partition(" ")
    enhanced = rest.split(" ", 1)[0]
    return code.isdigit() and (int(code), enhanced) in BASIC_AUTH_OFF


__all__ = [
    "APP_REFUSALS",
    "APP_REFUSED",
    "BASIC_AUTH_OFF",
    "REFRESH_AHEAD",
    "SCOPES",
    "AppSource",
    "MailboxConsent",
    "OAuthApp",
    "Provider",
    "Refusal",
    "RefusedApp",
    "TokenSet",
    "app_fix",
    "app_refused",
    "app_refused_words",
    "basic_auth_off",
    "basic_auth_refused",
    "connect_blocked",
    "connect_refused",
    "connect_taken",
    "connects_as",
    "consent_refused",
    "expected_issuer",
    "not_connected",
    "oauth_offer",
    "reconnect_words",
    "refusal",
    "refusal_of",
    "refused_after_renewal",
    "refused_app",
    "refused_apps",
    "scopes_for",
    "token_unavailable",
    "transport_fits",
]
