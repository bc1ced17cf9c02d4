"""Message composition and the door's checks on a message: the same for every intake.

Fields (API, CLI) are composed into MIME bytes; a client's own bytes (API raw, SMTP, CLI
files) are kept as sent. Either way the bytes then pass the one header rule
(`headers.read_headers`: limits, one From, one Sender, no display name showing another
address); addresses are checked with email-validator; CR, LF or NUL in any header, display
name or envelope address is refused; the message is stored with CRLF line endings and a
Message-ID.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, getaddresses, make_msgid

from mailvia.domain.api_mail import without_bcc
from mailvia.domain.errors import (
    InvalidAddress,
    InvalidHeader,
    InvalidInput,
    MessageTooLarge,
)
from mailvia.domain.idn import ascii_address, needs_smtputf8
from mailvia.domain.message import Envelope
from mailvia.outbox.addresses import check_address, check_clean
from mailvia.outbox.headers import Field, Headers, header_fields, read_headers

_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
# Headers a caller may not set through `headers`, by name (lowercase), with what to do instead:
# a field of the draft sets it, mailvia writes it, or only a raw message or a server does.
_WRITES = "mailvia writes it; to write it yourself, send the whole message as raw"
_RESERVED: dict[str, str] = {
    **{
        h.lower(): f"set it with the field {field}, not in headers"
        for h, field in (
            ("From", "from"),
            ("To", "to"),
            ("Cc", "cc"),
            ("Bcc", "bcc"),
            ("Reply-To", "reply_to"),
            ("Subject", "subject"),
        )
    },
    **dict.fromkeys(
        ("date", "message-id", "mime-version", "content-type", "content-transfer-encoding"),
        _WRITES,
    ),
    "sender": "only a whole message sent as raw carries it (mailvia does not write one)",
    "return-path": "the receiving server writes it from the envelope's mail_from (send the "
    "message as raw with an envelope to choose that address)",
    "received": "the servers the message passes through add it",
}
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
    """A message ready for the outbox: envelope, header From (and Sender) address and the
    exact bytes."""

    envelope: Envelope
    from_address: str
    content: bytes
    sender_address: str | None = None


def parse_mailbox(text: str, what: str) -> tuple[str, str]:
    """`Name <a@b>` or `a@b` → (display name, checked address)."""
    check_clean(text, what)
    found = getaddresses([text])
    if len(found) != 1 or text.count("<") > 1 or text.count(">") > 1:
        raise InvalidAddress(f"{what} {text!r}: give exactly one address")
    name, address = found[0]
    if not address:
        raise InvalidAddress(f"{what} {text!r}: not an email address")
    if address not in text:  # the parser glued words on: `a@example.com junk` → `...comjunk`
        raise InvalidAddress(f"{what} {text!r}: give one address, alone or as Name <address>")
    try:
        return name, check_address(address, what)
    except InvalidAddress as exc:  # quote what was given, not the parser's part of it
        raise InvalidAddress(
            str(exc).replace(f"{what} {address!r}", f"{what} {text!r}", 1)
        ) from None


_UNDECODABLE = re.compile("[\ud800-\udfff]")  # a byte that was not UTF-8, as Python read it


def _check_decoded(draft: Draft) -> None:
    """Refuse a field holding an undecodable byte (a command line's argument in another
    encoding reaches Python as a lone surrogate): it cannot be written as UTF-8 anywhere."""
    fields = {
        "from": draft.from_,
        "reply_to": draft.reply_to,
        "subject": draft.subject,
        "text": draft.text,
        "html": draft.html,
        "to": ", ".join(draft.to),
        "cc": ", ".join(draft.cc),
        "bcc": ", ".join(draft.bcc),
        **{f"header {name}": str(value) for name, value in draft.headers.items()},
    }
    for what, value in fields.items():
        if value and _UNDECODABLE.search(value):
            raise InvalidHeader(f"{what}: not valid UTF-8 (a byte in another encoding)")


def compose(draft: Draft, *, now: float, max_size: int) -> Composed:
    """Build the MIME message from fields; raises InvalidInput subclasses."""
    _check_decoded(draft)
    from_name, from_address = parse_mailbox(draft.from_, "from")
    groups = {
        k: [parse_mailbox(a, k) for a in v]
        for k, v in (("to", draft.to), ("cc", draft.cc), ("bcc", draft.bcc))
    }
    recipients = [addr for k in ("to", "cc", "bcc") for _, addr in groups[k]]
    _check_recipient_count(recipients)
    if draft.text is None and draft.html is None:
        raise InvalidInput("a message needs text, html or raw content")
    reply_to = parse_mailbox(draft.reply_to, "reply_to") if draft.reply_to else None
    # SMTPUTF8 as the envelope decides it (the session's rule, transport/session.py): a
    # header in UTF-8 in a message sent without it would be 8-bit where 7-bit is owed.
    utf8 = any(needs_smtputf8(a) for a in (from_address, *recipients))
    if reply_to and needs_smtputf8(reply_to[1]) and not utf8:
        raise InvalidAddress(
            f"reply_to {draft.reply_to!r}: an address whose local part is not ASCII can be "
            "written only in a message sent with SMTPUTF8 (the sender's or a recipient's "
            "local part not ASCII either)"
        )
    msg = EmailMessage(policy=SMTPUTF8 if utf8 else SMTP)
    msg["From"] = _mailbox(from_name, from_address, utf8)
    for key in ("to", "cc"):
        if groups[key]:
            msg[key.capitalize()] = ", ".join(_mailbox(n, a, utf8) for n, a in groups[key])
    if reply_to:
        msg["Reply-To"] = _mailbox(*reply_to, utf8)
    _set_subject(msg, check_clean(draft.subject, "subject"), utf8)
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    msg["Message-ID"] = make_msgid(domain=ascii_address(from_address).rpartition("@")[2])
    msg["MIME-Version"] = "1.0"
    _add_headers(msg, draft.headers)
    _set_body(msg, draft.text, draft.html)
    content = _checked_size(msg.as_bytes(), max_size)
    headers = read_headers(content)  # the rule every intake applies, on the bytes composed
    return _composed(Envelope(headers.from_address, tuple(recipients)), headers, content)


def _mailbox(name: str, address: str, utf8: bool) -> str:
    """`Name <address>` as the header is written: in a message that is not SMTPUTF8 the
    domain as IDNA A-labels and the name as an encoded word (never one inside the address,
    RFC 2047 §5); in an SMTPUTF8 one (an address whose local part is not ASCII) all in
    UTF-8 (RFC 6532)."""
    local, _, domain = (address if utf8 else ascii_address(address)).rpartition("@")
    return str(Address(display_name=name, username=local, domain=domain))


def _set_subject(msg: EmailMessage, subject: str, utf8: bool) -> None:
    """The Subject, written so that unfolding and decoding give `subject` back: when it may be
    written as it is (ASCII, or any text in an SMTPUTF8 message), on one line if it fits, else
    folded at its blanks into lines of at most 78 characters; otherwise as encoded words by
    `email.header` (RFC 2047: each of whole characters, the blanks inside them, lines within
    78 characters). The policy's own folder wrote a long one's empty encoded words
    (`=?utf-8?q??=`), split a character across two words or wrote one inside another, lost
    or added blanks between words, and began with a fold (tests/unit/test_subject_fold.py).
    Stored with `set_raw`: the policy keeps lines this short as they are written."""
    as_it_is = utf8 or subject.isascii()
    if as_it_is and len(_SUBJECT + subject) <= _FOLD_AT:
        msg["Subject"] = subject
        return
    lines = _folded_at_blanks(_SUBJECT + subject) if as_it_is else None
    if lines is not None:
        msg.set_raw("Subject", "\r\n".join(lines).removeprefix(_SUBJECT))
        return
    # maxlinelen 76: each encoded word at most 75 characters, a line holding one at most 76
    # (RFC 2047 §2); the default of 78 wrote words of 77.
    header = Header(subject, "utf-8", maxlinelen=76, header_name="Subject")
    msg.set_raw("Subject", header.encode(linesep="\r\n"))


_SUBJECT = "Subject: "
_FOLD_AT = 78  # RFC 5322 §2.1.1: a line SHOULD be at most 78 characters
_BEFORE_BLANK = re.compile(r"(?=[ \t])")


def _folded_at_blanks(field: str) -> list[str] | None:
    """`field` (`Name: value`) in lines of at most 78 characters, each after the first
    starting with the blank it was folded before, so unfolding (RFC 5322 §3.2.2) gives it
    back; None when a word does not fit on a line (the first holds the first word), or a
    line would hold only blanks. Pure."""
    pieces = _BEFORE_BLANK.split(field)  # after the first, each starts with a blank
    lines = ["".join(pieces[:2])]
    for piece in pieces[2:]:
        if len(lines[-1]) + len(piece) > _FOLD_AT and lines[-1].strip():
            lines.append(piece)
        else:
            lines[-1] += piece
    if all(len(line) <= _FOLD_AT and line.strip() for line in lines):
        return lines
    return None


def _add_headers(msg: EmailMessage, headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise InvalidHeader(f"header name {name!r} is not valid")
        refused = _RESERVED.get(name.lower())
        if refused is not None:
            raise InvalidInput(f"header {name}: {refused}")
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


def inspect_raw(
    content: bytes, *, envelope: Envelope | None, max_size: int, crlf_only: bool = False
) -> Composed:
    """Take a client's own RFC 5322 bytes: keep them (headers are added only at the top),
    derive the envelope from the headers when none is given. `crlf_only`: the caller has
    already refused bare LF and CR (`has_bare_line_ends`), so there is nothing to
    normalise. Raises InvalidInput and its kinds (see `headers.read_headers`)."""
    _checked_size(content, max_size)
    if not crlf_only:
        content = normalise_crlf(content)
    headers = read_headers(content)
    if envelope is None:
        envelope = _envelope_from_headers(headers)
        content = _strip_bcc(content)
    else:
        envelope = Envelope(
            check_address(envelope.mail_from, "envelope mail_from") if envelope.mail_from else "",
            tuple(check_address(r, "envelope rcpt_to") for r in envelope.rcpt_to),
        )
    _check_recipient_count(envelope.rcpt_to)
    if not headers.values("Message-ID"):
        msgid = make_msgid(domain=headers.from_address.rpartition("@")[2])
        content = f"Message-ID: {msgid}\r\n".encode() + content
    return _composed(envelope, headers, _checked_size(content, max_size))


def _composed(envelope: Envelope, headers: Headers, content: bytes) -> Composed:
    return Composed(envelope, headers.from_address, content, headers.sender_address)


def header_recipient_count(content: bytes) -> int:
    """How many addresses a message's To, Cc and Bcc fields name, before anything is checked
    (to hold a request to its caps before the work of checking it). Raises InvalidInput."""
    headers = header_fields(normalise_crlf(content))
    return sum(1 for _, address in _header_recipients(headers) if address)


def _header_recipients(headers: Headers | Sequence[Field]) -> list[tuple[str, str]]:
    fields = headers.fields if isinstance(headers, Headers) else headers
    values = [f.value for f in fields if f.name in ("to", "cc", "bcc")]
    try:
        return getaddresses(values)
    except (ValueError, IndexError, AttributeError, TypeError, LookupError) as exc:
        # The email package's parser fails in many ways on malformed headers.
        raise InvalidHeader(f"a header cannot be parsed ({type(exc).__name__})") from None


def _envelope_from_headers(headers: Headers) -> Envelope:
    written = "\n".join(f.value for f in headers.fields if f.name in ("to", "cc", "bcc"))
    recipients = []
    for _, address in _header_recipients(headers):
        if not address:
            continue
        if address not in written:  # glued on by the parser: `a@example.com junk` → `...comjunk`
            raise InvalidAddress(
                f"recipient {address!r} is not written in the To, Cc or Bcc fields as read: "
                "give each address alone or as Name <address>"
            )
        recipients.append(check_address(address, "recipient"))
    return Envelope(headers.from_address, tuple(dict.fromkeys(recipients)))


_BCC = re.compile(rb"bcc[ \t]*:", re.I)


def _strip_bcc(content: bytes) -> bytes:
    """Remove Bcc header fields (with their folded lines) from the header block."""
    return without_bcc(content)
