"""OAuth mailboxes: the providers, the scopes each transport needs, and when a token is due.

A Gmail or Microsoft 365 mailbox connects through the organization's own OAuth app
(authorization code with PKCE) and sends through the provider's API or SMTP XOAUTH2; no
password is stored. Scopes and defaults come from ../shared/research/providers_2026-12.md
(Google: `gmail.send` is only *sensitive*, `https://mail.google.com/` is *restricted* [N14];
Microsoft: `Mail.Send` for Graph [N4], `SMTP.Send` for XOAUTH2 [P5]).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailvia.domain.channel import Provider, TransportKind
from mailvia.domain.clock import Instant
from mailvia.domain.errors import InvalidInput

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
    """An access token, when it expires, and the refresh token to renew it. Never in a repr."""

    access_token: str = field(repr=False)
    expires_at: Instant
    refresh_token: str | None = field(default=None, repr=False)
    scope: str = ""

    def due(self, now: Instant, ahead: float = REFRESH_AHEAD) -> bool:
        """Whether the access token should be renewed before it is used at `now`."""
        return now >= self.expires_at - ahead


__all__ = [
    "REFRESH_AHEAD",
    "SCOPES",
    "Provider",
    "TokenSet",
    "scopes_for",
    "transport_fits",
]
