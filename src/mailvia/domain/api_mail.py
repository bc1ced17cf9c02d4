"""What a mailbox provider's HTTP API can carry, and the bytes handed to it.

The Gmail API (`users.messages.send`) and Microsoft Graph (`sendMail` with MIME) take the
stored message as it is and send it to every address in its To, Cc and Bcc headers: there is
no envelope, and one request is one message (it cannot be split into several transactions as
SMTP's recipients can). So a message goes through an API only when

- every address its To/Cc/Bcc headers name is one of the recipients it is sent to now (else
  the provider would reach people the envelope does not: someone never meant to get it, or
  someone who already had it before the channel changed to an API);
- it has at most the API's recipients per message, and
- its request fits the API's size limit.

Envelope recipients that the To and Cc headers do not name are expressed as one `Bcc:` field
added to the bytes handed to the API (never to the stored bytes); the providers remove Bcc
before delivery ([N18]; https://learn.microsoft.com/graph/outlook-send-mime-message).
Pure: the standard library's header parser only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

from mailvia.domain.channel import TransportKind
from mailvia.domain.idn import ascii_address, unicode_address


@dataclass(frozen=True)
class ApiLimits:
    """One API's per-request limits. `max_size` is in bytes of what the API counts: the
    message itself (`base64` false: Gmail's media upload), or the request body holding it in
    base64 (Graph's MIME body)."""

    max_size: int
    max_recipients: int
    base64: bool = False

    def request_size(self, size: int) -> int:
        """What a message of `size` bytes counts against `max_size`."""
        return 4 * ((size + 2) // 3) if self.base64 else size


# Gmail API `messages.send` media upload: maxSize 36,700,160 bytes (35 MiB) in Google's
# discovery document (gmail.v1.json, mediaUpload); 100 recipients a message [P7].
GMAIL_API_MAX_SIZE = 36_700_160
# Graph: about 4 MB a request appears only in a Microsoft Q&A answer [N7] (unverified: the
# setting MAILVIA_GRAPH_API_MAX_SIZE changes it); 500 recipients a message [P1].
GRAPH_API_MAX_SIZE = 4 * 1024 * 1024

DEFAULT_LIMITS: dict[TransportKind, ApiLimits] = {
    TransportKind.GMAIL_API: ApiLimits(GMAIL_API_MAX_SIZE, 100),
    TransportKind.GRAPH: ApiLimits(GRAPH_API_MAX_SIZE, 500, base64=True),
}


def _header_block(content: bytes) -> bytes:
    head, sep, _ = content.partition(b"\r\n\r\n")
    return head + sep if sep else content


def address_key(address: str) -> str:
    """The form addresses are compared in: lower-cased, the domain's IDNA A-labels decoded
    (a header writes `xn--bcher-kva.example` for the envelope's `bücher.example`)."""
    return unicode_address(address.strip().lower())


def header_recipients(content: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(To and Cc addresses, Bcc addresses) the message's headers name, as `address_key`
    gives them, in order, without repeats; a group's name (`undisclosed-recipients:;`)
    names nobody."""
    text = _header_block(content)
    headers = BytesHeaderParser(policy=compat32).parsebytes(text)

    def named(*names: str) -> tuple[str, ...]:
        values = [str(v) for name in names for v in headers.get_all(name, []) or []]
        found = (address_key(address) for _, address in getaddresses(values))
        return tuple(dict.fromkeys(a for a in found if "@" in a))

    return named("To", "Cc"), named("Bcc")


def refusal(
    transport: TransportKind,
    limits: ApiLimits,
    *,
    recipients: Sequence[str],
    content: bytes,
    max_recipients: int | None = None,
) -> str | None:
    """Why the API cannot carry this message to exactly `recipients` as stored; None when it
    can. `max_recipients`: the channel's own limit, when lower than the API's."""
    wanted = {address_key(r) for r in recipients}
    shown, hidden = header_recipients(content)
    extra = [a for a in (*shown, *hidden) if a not in wanted]
    if extra:
        names = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        return (
            f"{transport} sends to every address in the To, Cc and Bcc headers, and {names} "
            "would get this message though not among its recipients now: send it through an "
            "SMTP channel, or make the headers name only its recipients"
        )
    cap = min(limits.max_recipients, max_recipients or limits.max_recipients)
    if len(wanted) > cap:
        return (
            f"{transport} takes at most {cap} recipients a message and cannot split one as "
            f"SMTP does; this message has {len(wanted)}: send it in parts"
        )
    size = limits.request_size(len(as_sent(content, recipients)))
    if size > limits.max_size:
        counted = "in base64" if limits.base64 else ""
        return (
            f"{transport} takes requests of at most {limits.max_size} bytes; this message is "
            f"{size} bytes {counted}".rstrip()
        )
    return None


def without_bcc(content: bytes) -> bytes:
    """The message without its Bcc fields (and their folded lines), the body untouched."""
    head, sep, body = content.partition(b"\r\n\r\n")
    kept: list[bytes] = []
    skipping = False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            kept.append(line)
    return b"\r\n".join(kept) + sep + body


def as_sent(content: bytes, recipients: Sequence[str]) -> bytes:
    """The bytes handed to the API: the stored ones, with one Bcc field naming the
    recipients that To and Cc do not (any Bcc field the message had is replaced by it)."""
    shown, hidden = header_recipients(content)
    bcc = [r for r in dict.fromkeys(recipients) if address_key(r) not in set(shown)]
    if not bcc and not hidden:
        return content
    stripped = without_bcc(content) if hidden else content
    if not bcc:
        return stripped
    # One address a line (folded), so no line grows past RFC 5322's 998 characters.
    written = (ascii_address(r) for r in bcc)  # A-labels: no UTF-8 where it need not be
    return b"Bcc: " + ",\r\n ".join(written).encode("utf-8") + b"\r\n" + stripped


__all__ = [
    "DEFAULT_LIMITS",
    "GMAIL_API_MAX_SIZE",
    "GRAPH_API_MAX_SIZE",
    "ApiLimits",
    "as_sent",
    "header_recipients",
    "refusal",
    "without_bcc",
]
