"""SMTP submission's replies: the fixed ones, and `reply_for`, the one place that maps the
MailviaError tree to a reply. Faults are logged here and never shown to the client."""

from __future__ import annotations

import logging
import re
from enum import StrEnum

from mailvia.domain.channel import ChannelState, Kind
from mailvia.domain.errors import (
    Forbidden,
    InvalidAddress,
    InvalidInput,
    MessageTooLarge,
    MisleadingHeader,
    SecretsUnavailable,
    StoreUnavailable,
    Unauthenticated,
)
from mailvia.domain.message import State
from mailvia.domain.oauth import AppSource, refusal
from mailvia.outbox.compose import MAX_RECIPIENTS
from mailvia.outbox.receipts import Receipt

log = logging.getLogger("mailvia.submission")

AUTH_REQUIRED = "530 5.7.0 Authentication required"
LOCKED_OUT = "454 4.7.0 Too many failed logins, try again later"
TOO_MANY_RECIPIENTS = f"452 4.5.3 Too many recipients (at most {MAX_RECIPIENTS} a message)"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"  # RFC 3463 4.3.2
UNAVAILABLE = "451 4.3.0 Temporarily unable to accept mail, try again later"
AUTH_UNAVAILABLE = "454 4.7.0 Temporary authentication failure, try again later"  # RFC 4954
# A mail client shows this text; a rep who typed their sign-in password learns what it takes.
BAD_CREDENTIALS = (
    "535 5.7.8 Authentication credentials invalid: the user name is your email, the password "
    "an API token (API tokens page), not your sign-in password"
)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")


class Command(StrEnum):
    """Which of the client's commands a reply answers (not the delivery `Stage` of
    domain/replies.py, which says where an outbound session stopped)."""

    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    OTHER = "other"


def accepted(receipt: Receipt) -> str:
    """The reply to DATA for a committed message: 250 whether it is queued or held (it is
    safe either way), but held mail says so and why, in words a mail client shows: which
    channel (and mailbox) waits for what, so that the rep reconnects it. One line of ASCII
    (a channel's name may be any text)."""
    if receipt.state is not State.HELD:
        return f"250 2.0.0 Ok: queued as {receipt.id}"
    channel = receipt.channel
    mailbox = f" for {channel.address}" if channel.address else ""
    app = refusal(channel.refusal)
    if channel.kind is Kind.POOL:  # the operator's: no rep reconnects or resumes it
        why = (
            f"is {channel.state}: it is the operator's to mend, and it is sent once the "
            "shared pool sends again"
        )
    elif channel.state is ChannelState.DISCONNECTED and app is not None and app.app is not None:
        who = "an admin" if app.app is AppSource.ORGANIZATION else "whoever runs mailvia"
        why = f"is disconnected: the provider refused the OAuth app; sent once {who} mends it"
    elif channel.state is ChannelState.DISCONNECTED:
        why = "is disconnected: reconnect it in mailvia and it is sent then"
    elif channel.state is ChannelState.PAUSED:
        why = "is paused: it is sent when the channel is resumed"
    else:  # held by the organization's fallback on another channel's state
        why = f"is {channel.state}: it is sent when the channel is active again"
    text = f"Ok: held as {receipt.id}, not sent yet: channel '{channel.name}'{mailbox} {why}"
    text = _UNPRINTABLE.sub(" ", text).encode("ascii", "replace").decode("ascii")
    return f"250 2.0.0 {text[:400]}"


# How much of a refused address a reply quotes (a command line may be 512 octets long).
_SHOWN = 64


def written_path(arg: str) -> str:
    """A MAIL or RCPT path as the client wrote it: between its angle brackets when it has
    them. aiosmtpd hands the hooks its own rewriting (`"not an address"`, quoted, for
    `<not an address>`), which is not what the client sent."""
    arg = arg.strip()
    if not arg.startswith("<"):
        return arg
    end = arg.find(">")
    return arg[1:end] if end != -1 else arg[1:]


def as_written(error: Exception, address: str, written: str | None) -> Exception:
    """An InvalidAddress quoting aiosmtpd's rewriting of `address`, made to quote what the
    client wrote instead: on one line, at most _SHOWN characters. Any other error as is."""
    quoted = repr(address)
    if not isinstance(error, InvalidAddress) or written is None or quoted not in str(error):
        return error
    line = _UNPRINTABLE.sub(" ", written).strip()
    shown = repr(line if len(line) <= _SHOWN else line[:_SHOWN] + "...")
    return InvalidAddress(str(error).replace(quoted, shown, 1))


def reply_for(error: BaseException, command: Command) -> str:
    """The one place that turns an error into an SMTP reply; faults are logged, never shown."""
    text = _UNPRINTABLE.sub(" ", str(error)).strip()[:300]
    match error:
        case InvalidAddress() if command is Command.MAIL:
            return f"501 5.1.7 {text}"
        case InvalidAddress() if command is Command.RCPT:
            return f"553 5.1.3 {text}"
        case MessageTooLarge():
            return f"552 5.3.4 {text}"
        case MisleadingHeader():  # RFC 3463: delivery not authorized, message refused
            return f"550 5.7.1 {text}"
        case InvalidInput():
            return f"554 5.6.0 {text}"
        case Forbidden():
            return f"550 5.7.1 {text}"
        case Unauthenticated():
            return BAD_CREDENTIALS
        case StoreUnavailable() | SecretsUnavailable():
            log.warning("submission at %s: %s", command, error)
        case _:
            log.error("submission at %s failed", command, exc_info=error)
    return AUTH_UNAVAILABLE if command is Command.AUTH else UNAVAILABLE
