"""The header rule of every intake, applied to a message's bytes as they will be stored
(composed from the API's or the CLI's fields, or the client's own over the API or SMTP).

- The header section: at most MAX_HEADER_SECTION bytes, each field at most MAX_HEADER_FIELD
  (parsing is slow for huge fields), and nothing in it but fields and their folded lines.
- From: exactly one field, counting RFC 5322's obsolete `From :` (blanks before the colon),
  which some readers take as From; naming exactly one address.
- Sender: at most one field (counted the same way), naming exactly one address. Whose it may
  be is the sender's rights, checked by `Submitter` (it must be one of their identities).
- A From or Sender shown by a mail program (encoded words decoded, compatibility forms such as
  the fullwidth ＠ folded, invisible format characters dropped) shows no other address and
  hides no line break.

Pure: no I/O. Field names are compared case-insensitively, as mail programs do.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.utils import getaddresses
from typing import NamedTuple

from mailvia.domain.errors import InvalidHeader, InvalidInput, MisleadingHeader
from mailvia.domain.idn import unicode_address
from mailvia.outbox.addresses import MAX_HEADER_VALUE, check_address, check_clean

MAX_HEADER_SECTION = 256 * 1024
MAX_HEADER_FIELD = 64 * 1024
# A field name (printable ASCII but the colon), blanks allowed before the colon (obs-optional).
_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:")
_ADDRESS_LIKE = re.compile(r"[^\s<>\"]+@[^\s<>\"]+")


class Field(NamedTuple):
    """One header field: its name in lower case and its value unfolded (without the blank
    after the colon), read as UTF-8 (undecodable bytes kept as surrogates). A named tuple:
    a message has a dozen or more, made for each message an intake takes."""

    name: str
    value: str


@dataclass(frozen=True)
class Headers:
    """A message's header fields in order, and the addresses of its From and Sender."""

    fields: tuple[Field, ...]
    from_address: str
    sender_address: str | None

    def values(self, *names: str) -> list[str]:
        wanted = {name.lower() for name in names}
        return [field.value for field in self.fields if field.name in wanted]


def read_headers(content: bytes) -> Headers:
    """Apply the header rule to a message with CRLF line ends. Raises InvalidHeader (limits,
    a line that is not a field, a line break), MisleadingHeader (a second From or Sender, a
    name that shows another address), InvalidInput (no From; not exactly one address) and
    InvalidAddress."""
    fields = header_fields(content)
    return Headers(fields, _from_address(fields), _sender_address(fields))


def header_fields(content: bytes) -> tuple[Field, ...]:
    """The header section's fields. Raises InvalidHeader over the limits, or for a line that
    is neither a field nor the folded part of one."""
    head, blank, _ = content.partition(b"\r\n\r\n")
    if content.startswith(b"\r\n"):
        head = b""  # no header section at all
    elif not blank:
        head = head.removesuffix(b"\r\n")
    if len(head) > MAX_HEADER_SECTION:
        raise InvalidHeader(f"the header section is over {MAX_HEADER_SECTION} bytes")
    found: list[tuple[re.Match[bytes], list[bytes]]] = []
    for number, line in enumerate(head.split(b"\r\n") if head else (), start=1):
        if line[:1] in (b" ", b"\t"):
            if not found:
                raise InvalidHeader("the header section starts with a folded line")
            found[-1][1].append(line)
            continue
        match = _FIELD.match(line)
        if match is None:
            raise InvalidHeader(f"header line {number} is not a field (NAME: value)")
        found.append((match, [line]))
    return tuple(_field(match, lines) for match, lines in found)


def _field(name: re.Match[bytes], lines: list[bytes]) -> Field:
    if sum(map(len, lines)) + 2 * (len(lines) - 1) > MAX_HEADER_FIELD:
        raise InvalidHeader(f"a header field is over {MAX_HEADER_FIELD} bytes")
    whole = lines[0] if len(lines) == 1 else b"".join(lines)
    value = whole[name.end() :].decode("utf-8", "surrogateescape").lstrip(" \t")
    return Field(name.group(1).decode("ascii").lower(), value)


def _only(fields: Iterable[Field], name: str) -> list[str]:
    return [field.value for field in fields if field.name == name]


def _from_address(fields: Sequence[Field]) -> str:
    found = _only(fields, "from")
    if not found:
        raise InvalidInput("the message has no From header")
    if len(found) > 1:
        raise MisleadingHeader("the message has more than one From header (`From :` counts)")
    return mailbox(found[0], "From header")


def _sender_address(fields: Sequence[Field]) -> str | None:
    found = _only(fields, "sender")
    if len(found) > 1:
        raise MisleadingHeader("the message has more than one Sender header")
    return mailbox(found[0], "Sender header") if found else None


def mailbox(value: str, what: str) -> str:
    """The one address of a From or Sender value, read as mail programs show it: the shown
    text may not show another address or hide a line break. A value found good is
    remembered (the check is pure, and the same From values come back all day) if it is no
    longer than a line may be (a value of encoded words may be 64 KiB and still pass: 4,096
    of those would hold 256 MB); a refused one is judged again each time."""
    known = _MAILBOXES.get(value)
    if known is None:
        known = _mailbox(value, what)
        if len(value) > MAX_HEADER_VALUE:
            return known
        if len(_MAILBOXES) >= _MAILBOXES_KEPT:
            _MAILBOXES.clear()
        _MAILBOXES[value] = known
    return known


_MAILBOXES: dict[str, str] = {}  # a good From or Sender value -> its address
_MAILBOXES_KEPT = 4096


def _mailbox(value: str, what: str) -> str:
    shown = check_clean(_decoded_words(value), what)
    try:
        found = getaddresses([value])
    except (ValueError, IndexError, AttributeError, TypeError, LookupError) as exc:
        # The email package's parser fails in many ways on malformed headers.
        raise InvalidHeader(f"the {what} cannot be parsed ({type(exc).__name__})") from None
    if len(found) != 1 or not found[0][1]:
        raise InvalidInput(f"the {what} must name exactly one address")
    address = check_address(found[0][1], what)
    for other in _ADDRESS_LIKE.findall(as_read(shown)):
        if unicode_address(other.strip(".,;:'\"()[]<>")).lower() != as_read(address).lower():
            raise MisleadingHeader(f"the {what}'s name shows another address ({other})")
    return address


def as_read(text: str) -> str:
    """Text as a reader takes it in: compatibility forms folded (fullwidth ＠ and small ﹫
    are @), format characters that show nothing (zero-width spaces, direction marks) dropped."""
    if text.isascii():
        return text  # NFKC leaves ASCII as it is, and no ASCII character is a format one
    folded = unicodedata.normalize("NFKC", text)
    return "".join(c for c in folded if unicodedata.category(c) != "Cf")


def _decoded_words(value: str) -> str:
    """The header value with RFC 2047 encoded words decoded (as mail programs show it)."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError) as exc:
        raise InvalidHeader(f"an encoded word cannot be decoded ({type(exc).__name__})") from None


SUBJECT_MAX = 500  # characters of a subject kept for the pages (search, lists)
_SUBJECT = re.compile(rb"(?:\A|\r\n)subject[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.IGNORECASE)


def subject_of(content: bytes) -> str:
    """The message's Subject as mail programs show it (encoded words decoded, folding and
    blanks collapsed, cut to SUBJECT_MAX characters), '' when it has none. Never raises: a
    subject that cannot be decoded is shown as sent."""
    head = content.partition(b"\r\n\r\n")[0]
    found = _SUBJECT.search(head)
    if found is None:
        return ""
    value = found.group(1).decode("utf-8", "replace")
    with contextlib.suppress(InvalidHeader):
        value = _decoded_words(value)
    return " ".join(value.split())[:SUBJECT_MAX]
