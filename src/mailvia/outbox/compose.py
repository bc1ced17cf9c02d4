"""Validation at the door and message composition: the same checks for every intake.

Addresses are checked with email-validator (international addresses allowed); CR, LF or NUL
in any header, display name or envelope address is refused; the message is stored with CRLF
line endings and a Message-ID.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import HeaderParser
from email.policy import SMTP, compat32
from email.utils import format_datetime, getaddresses, make_msgid

from email_validator import EmailNotValidError, validate_email

from mailvia.domain.api_mail import without_bcc
from mailvia.domain.errors import (
    InvalidAddress,
    InvalidHeader,
    InvalidInput,
    MailviaError,
    MessageTooLarge,
)
from mailvia.domain.message import Envelope

# CR, LF and NUL, and what Python's email package also treats as a line break.
_FORBIDDEN = re.compile("[\r\n\0\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
MAX_HEADER_VALUE = 998  # RFC 5322 §2.1.1's line limit, for one field's value
MAX_HEADER_SECTION = 256 * 1024
MAX_RAW_FIELD = 64 * 1024
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
# Headers with their own fields: a caller may not set them through `headers`.
_RESERVED = frozenset(
    h.lower()
    for h in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Reply-To",
        "Subject",
        "Sender",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Return-Path",
        "Received",
    )
)
MAX_RECIPIENTS = 1000


@dataclass(frozen=True)
class Draft:
    """A message given as fields (API, CLI)."""

    from_: str
    to: Sequence[str] = ()
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    reply_to: str | None = None
    subject: str = ""
    text: str | None = None
    html: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Composed:
    """A message ready for the outbox: envelope, header From address and the exact bytes."""

    envelope: Envelope
    from_address: str
    content: bytes


def check_clean(value: str, what: str) -> str:
    """Refuse line breaks and NUL, which would let a value start a new header or command,
    and values longer than a header line may be."""
    if _FORBIDDEN.search(value):
        raise InvalidHeader(f"{what}: line breaks and NUL characters are not allowed")
    if len(value) > MAX_HEADER_VALUE:
        raise InvalidHeader(f"{what}: at most {MAX_HEADER_VALUE} characters")
    return value


_NOT_UTF8 = re.compile("[\ud800-\udfff\ufffd]")  # undecodable bytes, as read


def check_address(address: str, what: str = "address") -> str:
    """A syntactically valid address (no DNS look-up), normalised; raises InvalidAddress."""
    check_clean(address, what)
    if _NOT_UTF8.search(address):
        raise InvalidAddress(f"{what}: not valid UTF-8")
    if any(c in address for c in "<>,;\"' ") or "(" in address:
        raise InvalidAddress(f"{what} {address!r}: give a bare address like name@example.com")
    normalised = _normalised(address)
    if isinstance(normalised, EmailNotValidError):
        raise InvalidAddress(f"{what} {address!r}: {normalised}") from normalised
    return normalised


@functools.lru_cache(maxsize=8192)
def _normalised(address: str) -> str | EmailNotValidError:
    """email-validator's verdict, remembered: an address is checked at MAIL or RCPT and again
    with the message, and the same senders come back all day."""
    try:
        # test_environment: `.test` domains are allowed (RFC 6761), for demos and tests.
        result = validate_email(
            address, check_deliverability=False, allow_smtputf8=True, test_environment=True
        )
    except EmailNotValidError as exc:
        return exc
    return str(result.normalized)


_LOGIN = re.compile(r"^[^@\s<>,;\"'()\x00-\x1f]+@[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$", re.I)


def check_login(email: str) -> str:
    """A user's sign-in email: an address, or `name@localhost`-style for local accounts."""
    email = email.strip().lower()
    if _LOGIN.match(email) and email.endswith("@localhost"):
        return email
    return check_address(email, "email").lower()


def parse_mailbox(text: str, what: str) -> tuple[str, str]:
    """`Name <a@b>` or `a@b` → (display name, checked address)."""
    check_clean(text, what)
    found = getaddresses([text])
    if len(found) != 1 or text.count("<") > 1 or text.count(">") > 1:
        raise InvalidAddress(f"{what} {text!r}: give exactly one address")
    name, address = found[0]
    if not address:
        raise InvalidAddress(f"{what} {text!r}: not an email address")
    return name, check_address(address, what)


def compose(draft: Draft, *, now: float, max_size: int) -> Composed:
    """Build the MIME message from fields; raises InvalidInput subclasses."""
    from_name, from_address = parse_mailbox(draft.from_, "from")
    groups = {
        k: [parse_mailbox(a, k) for a in v]
        for k, v in (("to", draft.to), ("cc", draft.cc), ("bcc", draft.bcc))
    }
    recipients = [addr for k in ("to", "cc", "bcc") for _, addr in groups[k]]
    _check_recipient_count(recipients)
    if draft.text is None and draft.html is None:
        raise InvalidInput("a message needs text, html or raw content")
    msg = EmailMessage(policy=SMTP)
    msg["From"] = _mailbox(from_name, from_address)
    for key in ("to", "cc"):
        if groups[key]:
            msg[key.capitalize()] = ", ".join(_mailbox(n, a) for n, a in groups[key])
    if draft.reply_to:
        msg["Reply-To"] = _mailbox(*parse_mailbox(draft.reply_to, "reply_to"))
    msg["Subject"] = check_clean(draft.subject, "subject")
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    msg["Message-ID"] = make_msgid(domain=from_address.rpartition("@")[2])
    msg["MIME-Version"] = "1.0"
    _add_headers(msg, draft.headers)
    _set_body(msg, draft.text, draft.html)
    content = msg.as_bytes()
    return Composed(
        Envelope(from_address, tuple(recipients)), from_address, _checked_size(content, max_size)
    )


def _mailbox(name: str, address: str) -> str:
    local, _, domain = address.rpartition("@")
    return str(Address(display_name=name, username=local, domain=domain))


def _add_headers(msg: EmailMessage, headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise InvalidHeader(f"header name {name!r} is not valid")
        if name.lower() in _RESERVED or name.lower() in ("date", "message-id"):
            raise InvalidInput(f"header {name}: set it with its own field, not in headers")
        msg[name] = check_clean(str(value), f"header {name}")


def _set_body(msg: EmailMessage, text: str | None, html: str | None) -> None:
    for value, what in ((text, "text"), (html, "html")):
        if value is not None and "\0" in value:
            raise InvalidInput(f"{what}: NUL characters are not allowed")
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")


def _check_recipient_count(recipients: Sequence[str]) -> None:
    if not recipients:
        raise InvalidInput("a message needs at least one recipient (to, cc or bcc)")
    if len(recipients) > MAX_RECIPIENTS:
        raise InvalidInput(f"at most {MAX_RECIPIENTS} recipients per message")


def _checked_size(content: bytes, max_size: int) -> bytes:
    if len(content) > max_size:
        raise MessageTooLarge(f"the message is {len(content)} bytes; the limit is {max_size}")
    return content


def normalise_crlf(content: bytes) -> bytes:
    """Every line ending as CRLF (bare LF and bare CR become CRLF)."""
    if not has_bare_line_ends(content):
        return content
    return re.sub(rb"\r\n|\r|\n", b"\r\n", content)


def has_bare_line_ends(content: bytes) -> bool:
    """Whether any LF is not preceded by CR, or any CR not followed by LF."""
    crlf = content.count(b"\r\n")
    return content.count(b"\n") != crlf or content.count(b"\r") != crlf


def inspect_raw(content: bytes, *, envelope: Envelope | None, max_size: int) -> Composed:
    """Take a client's own RFC 5322 bytes: keep them (headers are added only at the top),
    derive the envelope from the headers when none is given."""
    _checked_size(content, max_size)
    content = normalise_crlf(content)
    _check_header_section(content)
    try:
        # compat32: the raw field values, without the header registry's costly parse of each
        # (addresses are taken out with getaddresses and checked by email-validator).
        text = content.decode("utf-8", "surrogateescape")  # SMTPUTF8 headers are UTF-8
        headers = HeaderParser(policy=compat32).parsestr(text)
        from_address = _from_address(headers.get_all("From", []) or [])
        derived = _envelope_from_headers(headers, from_address) if envelope is None else None
        has_message_id = headers.get("Message-ID") is not None
    except MailviaError:
        raise
    except (ValueError, IndexError, AttributeError, TypeError, LookupError) as exc:
        # The email package's parser fails in many ways on malformed headers.
        raise InvalidHeader(f"a header cannot be parsed ({type(exc).__name__})") from None
    if envelope is None:
        assert derived is not None
        envelope = derived
        content = _strip_bcc(content)
    else:
        envelope = Envelope(
            check_address(envelope.mail_from, "envelope mail_from") if envelope.mail_from else "",
            tuple(check_address(r, "envelope rcpt_to") for r in envelope.rcpt_to),
        )
    _check_recipient_count(envelope.rcpt_to)
    if not has_message_id:
        msgid = make_msgid(domain=from_address.rpartition("@")[2])
        content = f"Message-ID: {msgid}\r\n".encode() + content
    return Composed(envelope, from_address, _checked_size(content, max_size))


def _check_header_section(content: bytes) -> None:
    head = content.partition(b"\r\n\r\n")[0]
    if len(head) > MAX_HEADER_SECTION:
        raise InvalidHeader(f"the header section is over {MAX_HEADER_SECTION} bytes")
    if any(len(field) > MAX_RAW_FIELD for field in re.split(rb"\r\n(?![ \t])", head)):
        raise InvalidHeader(f"a header field is over {MAX_RAW_FIELD} bytes")


def _unfolded(value: object) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", str(value or ""))


def _from_address(fields: Sequence[object]) -> str:
    """The address of the one From field. Its display name is read as mail programs show it
    (RFC 2047 encoded words decoded) and may not show another address or hide line breaks."""
    if not fields:
        raise InvalidInput("the message has no From header")
    if len(fields) > 1:
        raise InvalidHeader("the message has more than one From header")
    raw = _unfolded(fields[0])
    shown = check_clean(_decoded_words(raw), "From header")
    found = getaddresses([raw])
    if len(found) != 1 or not found[0][1]:
        raise InvalidInput("the From header must name exactly one address")
    address = check_address(found[0][1], "From header")
    for other in _ADDRESS_LIKE.findall(shown):
        if other.strip(".,;:'\"()[]<>").lower() != address.lower():
            raise InvalidHeader(f"the From header's name shows another address ({other})")
    return address


_ADDRESS_LIKE = re.compile(r"[^\s<>\"]+@[^\s<>\"]+")


def _decoded_words(value: str) -> str:
    """The header value with RFC 2047 encoded words decoded (as mail programs show it)."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError) as exc:
        raise InvalidHeader(f"an encoded word cannot be decoded ({type(exc).__name__})") from None


def _envelope_from_headers(headers: Message, from_address: str) -> Envelope:
    values: list[str] = []
    for key in ("To", "Cc", "Bcc"):
        values.extend(_unfolded(v) for v in headers.get_all(key, []) or [])
    recipients = [check_address(a, "recipient") for _, a in getaddresses(values) if a]
    return Envelope(from_address, tuple(dict.fromkeys(recipients)))


def _strip_bcc(content: bytes) -> bytes:
    """Remove Bcc header fields (with their folded lines) from the header block."""
    return without_bcc(content)
