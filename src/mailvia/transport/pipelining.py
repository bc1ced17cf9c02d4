"""A transaction's envelope as one batch of commands (SMTP PIPELINING, RFC 2920).

When the server offers PIPELINING, MAIL FROM, every RCPT TO and DATA go out in one write and
their replies are read in order (session.py). Every command line is made here first, so an
address that cannot be written on a command line is caught before anything is sent, with the
reply the sequential path gives it: the sender's fails the transaction with BAD_SENDER, a
recipient's is that recipient's local refusal (NO_SMTPUTF8, or 553 5.1.3) and its RCPT is
left out of the batch.

The lines are those aiosmtplib's `mail` and `rcpt` write (its address quoting and its check
for control characters); `mail_refused` and `rcpt_reply` read the replies as those two calls
and session.py's `_rcpt` read them.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from aiosmtplib import SMTPRecipientRefused, SMTPResponse, SMTPSenderRefused
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX

from mailvia.domain.idn import command_address
from mailvia.domain.message import Envelope
from mailvia.domain.replies import Reply
from mailvia.transport.smtp_errors import BAD_SENDER, NO_SMTPUTF8, StepRefused

UNSENDABLE = Reply(553, "5.1.3", "mailvia: the address cannot be sent")
_DATA = b"DATA\r\n"
# Addresses quoted as aiosmtplib quotes them (`email.utils.parseaddr`, ~20 us an address: 6%
# of a worker's event loop at ~3,500 msg/s, bench/deliver.py), each worked out once: a
# channel sends from a few addresses to recurring ones. A refusal (ValueError) is not kept,
# and `_line`'s check for control characters runs on every line: an unsendable address is
# refused every time, as before.
QUOTED_ADDRESSES = 4096
_quoted = lru_cache(maxsize=QUOTED_ADDRESSES)(quote_address)


@dataclass(frozen=True)
class Batch:
    """MAIL, the RCPTs that can be sent and DATA, as one write; `recipients` in envelope
    order, each with its local refusal, or None when its RCPT is in the batch."""

    commands: bytes
    recipients: tuple[tuple[str, Reply | None], ...]

    @property
    def sent(self) -> int:
        """How many RCPTs are in the batch."""
        return sum(1 for _, refusal in self.recipients if refusal is None)

    @property
    def replies(self) -> int:
        """How many replies the batch is owed: MAIL's, each RCPT's, DATA's."""
        return self.sent + 2


def batch(envelope: Envelope, options: list[str], encoding: str) -> Batch | None:
    """The envelope's batch; None when no RCPT can be sent (the sequential path then gives
    the result). Raises StepRefused(BAD_SENDER) when the sender cannot be written."""
    try:
        lines = [_line(b"MAIL", b"FROM:", envelope.mail_from, options, encoding)]
    except ValueError as error:
        raise StepRefused(BAD_SENDER) from error
    recipients: list[tuple[str, Reply | None]] = []
    for address in envelope.rcpt_to:
        try:
            lines.append(_line(b"RCPT", b"TO:", address, [], encoding))
        except UnicodeEncodeError:
            recipients.append((address, NO_SMTPUTF8))
        except ValueError:
            recipients.append((address, UNSENDABLE))
        else:
            recipients.append((address, None))
    if len(lines) == 1:  # MAIL alone
        return None
    lines.append(_DATA)
    return Batch(b"".join(lines), tuple(recipients))


def _line(verb: bytes, prefix: bytes, address: str, options: list[str], encoding: str) -> bytes:
    """One command line as aiosmtplib writes it. Raises ValueError (UnicodeEncodeError for
    an address the encoding cannot carry). Without SMTPUTF8 a domain goes as A-labels."""
    args = [verb, prefix + _quoted(command_address(address, encoding)).encode(encoding)]
    args.extend(option.encode("ascii") for option in options)
    if any(COMMAND_INJECTION_REGEX.search(arg) for arg in args):
        raise ValueError("Command arg contains a prohibited control character")
    return b" ".join(args) + b"\r\n"


def mail_refused(response: SMTPResponse, sender: str) -> SMTPSenderRefused | None:
    """The refusal of MAIL (anything but 250, as aiosmtplib's `mail`), or None."""
    if response.code == 250:
        return None
    return SMTPSenderRefused(response.code, response.message, sender)


def rcpt_reply(response: SMTPResponse, address: str) -> Reply:
    """A recipient's reply: 250/251 accepted, 4xx/5xx refused (as aiosmtplib's `rcpt` and
    session.py's `_rcpt`). Raises SMTPRecipientRefused for any other code: out of step."""
    if response.code not in (250, 251) and not 400 <= response.code < 600:
        raise SMTPRecipientRefused(response.code, response.message, address)
    return Reply.parse(response.code, response.message)
