"""What the mail APIs read from a raw message and what they keep: recipients, sender, the copy.

Pure functions on bytes. Both APIs take recipients from the To, Cc and Bcc headers and send
recipients a copy without Bcc (https://developers.google.com/gmail/api/guides/sending,
https://learn.microsoft.com/graph/outlook-send-mime-message). The header block is edited as
bytes so everything else stays exactly as the client sent it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


@dataclass(frozen=True)
class Parsed:
    """A raw message's sender and recipients as the APIs see them."""

    from_addresses: tuple[str, ...]
    recipients: tuple[str, ...]


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """(header block with its final line end, the rest from the blank line on)."""
    match = _HEADER_END.search(raw)
    if match is None:
        return raw, b""
    cut = match.start() + (2 if raw[match.start() : match.start() + 2] == b"\r\n" else 1)
    return raw[:cut], raw[cut:]


def _fields(header: bytes) -> list[bytes]:
    """The header fields, each with its continuation lines and line ends."""
    fields: list[bytes] = []
    for line in header.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _name(field: bytes) -> bytes:
    match = _FIELD_NAME.match(field)
    return match.group(1).lower() if match else b""


def parse(raw: bytes) -> Parsed:
    """The From addresses and the To/Cc/Bcc recipients (in that order, without repeats)."""
    header, _ = split_header(raw)
    message = BytesHeaderParser(policy=compat32).parsebytes(header)

    def addresses(*names: str) -> tuple[str, ...]:
        values = [str(v) for name in names for v in message.get_all(name, [])]
        found = [address.strip() for _, address in getaddresses(values)]
        return tuple(dict.fromkeys(a for a in found if "@" in a))

    return Parsed(addresses("from"), addresses("to", "cc", "bcc"))


def without_bcc(raw: bytes) -> bytes:
    """The message as recipients see it: the Bcc field (with its continuation lines) removed."""
    header, rest = split_header(raw)
    kept = [field for field in _fields(header) if _name(field) != b"bcc"]
    return b"".join(kept) + rest


def with_from(raw: bytes, address: str) -> bytes:
    """The message with its From field replaced by `address` (Gmail sends as the account)."""
    header, rest = split_header(raw)
    fields = _fields(header)
    eol = b"\r\n" if b"\r\n" in header else b"\n"
    new = b"From: " + address.encode("utf-8") + eol
    replaced = [new if _name(field) == b"from" else field for field in fields]
    if new not in replaced:
        replaced.insert(0, new)
    return b"".join(replaced) + rest
