"""The exception tree for misuse and faults; delivery failures are values, not exceptions.

    MailviaError
     ├── InvalidInput          bad input from a user or client (400/422, SMTP 5xx, exit 2)
     │    ├── InvalidAddress
     │    ├── InvalidHeader    CR/LF/NUL in a header, a name or an envelope address
     │    │    └── MisleadingHeader  a From or Sender that could show another author (SMTP 5.7.1)
     │    ├── MessageTooLarge
     │    ├── RequestTooLarge  an API request over its caps (messages, recipients) (413)
     │    ├── InvalidCursor    a list cursor not handed out for this list and caller (400)
     │    ├── InvalidChannel   a channel's fields do not fit together
     │    └── CannotCarry      the channel's provider API cannot carry the message as stored
     ├── NotFound              unknown or another organization's object (404)
     ├── Forbidden             the caller may not do this (403, SMTP 550 5.7.1)
     ├── Conflict              a name taken, an idempotency key reused with another body (409)
     ├── Unauthenticated       no or a bad token or password (401, SMTP 535)
     ├── RateLimited           too many requests or recipients from one API token (429)
     ├── OutboundRefused       the outbound address guard refused a target
     ├── SecretsUnavailable    the master key is missing or wrong: fail closed
     ├── CredentialsFailed     a channel's credentials could not be had (an OAuth consent
     │                         revoked, the token endpoint down): carries the reply to settle
     ├── ProviderRefused       an OAuth provider refused a consent or a token request
     │                         (invalid_grant, access_denied, a bad ID token): carries `error`
     ├── ProviderUnavailable   an OAuth provider could not be reached or answered 5xx
     └── StoreUnavailable      the database cannot be reached (503, SMTP 451)

Each ingress maps these in one place: HTTP status, SMTP reply, CLI exit code.
"""

from __future__ import annotations

from collections.abc import Iterable

from mailvia.domain.replies import Reply


class MailviaError(Exception):
    """Root of every error mailvia raises on purpose."""


class InvalidInput(MailviaError):
    """Input that can never be accepted as sent."""


class InvalidAddress(InvalidInput):
    """An email address that is malformed or not allowed here."""


class InvalidHeader(InvalidInput):
    """A header, display name or envelope value that would change the message's structure."""


class MisleadingHeader(InvalidHeader):
    """A From or Sender field that could show someone else as the author: a second From
    (also spelled `From :`), a display name showing another address."""


class MessageTooLarge(InvalidInput):
    """A message over the size limit."""


class RequestTooLarge(InvalidInput):
    """An API request carrying more messages or recipients than one request may."""


class UnsupportedMediaType(InvalidInput):
    """A request body declared as a media type the route does not take (the API takes JSON)."""


class InvalidCursor(InvalidInput):
    """A list cursor that this list did not hand out to this caller (made up, damaged, or
    another organization's or another list's)."""


class InvalidChannel(InvalidInput):
    """A channel whose fields do not fit together."""


class CannotCarry(InvalidInput):
    """A message its channel's transport (a provider's HTTP API) cannot carry as stored: over
    the API's size or recipient limit, or with headers naming people it is not sent to."""


class NotFound(MailviaError):
    """No such object, or one the caller may not see (never tells which)."""


def not_found(what: str, ref: str, where: str, existing: Iterable[str], kinds: str) -> NotFound:
    """`no channel 'jane-mailbox' in organization acme; its channels: a, b`: where it looked
    and what is there (only what the caller may see; the first ten, sorted)."""
    names = sorted(set(existing))
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    there = f"its {kinds}: {shown}" if names else f"it has no {kinds}"
    if where.startswith("any "):
        there = f"the {kinds}: {shown}" if names else f"there are no {kinds}"
    return NotFound(f"no {what} {ref!r} in {where}; {there}")


class Forbidden(MailviaError):
    """The caller is known but may not do this."""


class Conflict(MailviaError):
    """The request clashes with what exists."""


class Unauthenticated(MailviaError):
    """The caller could not be identified."""


class RateLimited(MailviaError):
    """Too many requests from one caller: one more is allowed in `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutboundRefused(MailviaError):
    """The outbound address guard refused to connect; one generic message for every reason."""


class SecretsUnavailable(MailviaError):
    """Secrets cannot be decrypted: the master key is missing or is not the one in use."""


class CredentialsFailed(MailviaError):
    """A channel's credentials could not be had. `reply` is what the attempt settles with, like
    a server's: a 5xx at auth (an OAuth consent revoked: the channel disconnects) or a 4xx (the
    token endpoint is down: the message is retried)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class ProviderRefused(MailviaError):
    """An OAuth provider refused: `error` is its code (`invalid_grant`, `access_denied`, ...)
    or mailvia's own (`id_token`) when what came back cannot be trusted."""

    def __init__(self, message: str, *, error: str) -> None:
        super().__init__(message)
        self.error = error


class ProviderUnavailable(MailviaError):
    """An OAuth provider's endpoint could not be reached, timed out or answered 5xx."""


class StoreUnavailable(MailviaError):
    """The outbox cannot be read or written right now."""
