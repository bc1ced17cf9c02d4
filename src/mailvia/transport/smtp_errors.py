"""What an exception in an SMTP session means: the reply to settle with, mapped at this edge.

Failures are values: every aiosmtplib, socket and ssl exception of session.py is mapped here,
in `map_error`:

    exception                                  stage          reply
    OutboundRefused (the address guard)        connect        550 5.4.4 "will not connect"
    socket.gaierror                            connect        451 4.4.2 network_failure
    refused / reset / unreachable / timeout    connect        451 4.4.2 network_failure
    ssl verification or handshake error        connect (TLS)  530 5.7.10 tls_refused
                                               or starttls
    STARTTLS not offered (security starttls)   starttls       530 5.7.10 tls_refused
    a 4xx/5xx reply (SMTPResponseException)    where it came  Reply.parse(code, text)
    disconnect / timeout before the final dot  where it came  451 4.4.2 network_failure
    disconnect / timeout after the final dot   data-end       451 4.4.2 timeout_after_dot,
                                                              possible_duplicate=True
    a malformed or unexpected reply            where it came  as a disconnect
    anything else                              -              raised (a bug, not a failure)

Pure: no I/O.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from aiosmtplib import SMTPException, SMTPResponse, SMTPResponseException

from mailvia.domain.errors import OutboundRefused
from mailvia.domain.probe import ProbeFailure
from mailvia.domain.replies import Reply, Stage, network_failure, timeout_after_dot
from mailvia.transport.tls import find_tls_error, is_closed_during_handshake, tls_reply

REFUSED_REPLY = Reply(550, "5.4.4", "mailvia: will not connect to this host")
BAD_SENDER = Reply(553, "5.1.7", "mailvia: the sender address cannot be sent")
NO_SMTPUTF8 = Reply(553, "5.6.7", "mailvia: the server does not offer SMTPUTF8")
NO_CREDENTIALS = Reply(535, "5.7.8", "mailvia: no credentials are stored for this channel")


class StepRefused(Exception):
    """A step mailvia itself ends (something the server lacks, or a rule of delivery): the
    reply it settles with, and for "Test connection" the kind of failure, what happened and
    the server's last reply."""

    def __init__(
        self,
        reply: Reply,
        kind: ProbeFailure | None = None,
        detail: str = "",
        server_reply: str | None = None,
    ) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.kind = kind
        self.detail = detail or reply.text.removeprefix("mailvia: ")
        self.server_reply = server_reply


@dataclass(frozen=True)
class ErrorReply:
    """What an exception means: the reply, and whether the connection can carry on."""

    reply: Reply
    keeps_connection: bool = False
    possible_duplicate: bool = False


def _lost(what: str, stage: Stage, *, after_dot: bool) -> ErrorReply:
    if after_dot:
        return ErrorReply(timeout_after_dot(what), possible_duplicate=True)
    if stage is Stage.CONNECT:
        # One text for refused, reset, unreachable and timed out: no port-scan oracle.
        return ErrorReply(network_failure("could not connect to the server"))
    return ErrorReply(network_failure(f"{what} at {stage}"))


def map_error(error: BaseException, stage: Stage, *, after_dot: bool = False) -> ErrorReply | None:
    """Map an exception raised at `stage` to its reply; None when it is not a delivery
    failure (a bug), which the caller re-raises. Pure."""
    if isinstance(error, StepRefused):
        return ErrorReply(error.reply)
    if isinstance(error, OutboundRefused):
        return ErrorReply(REFUSED_REPLY)
    if isinstance(error, SMTPResponseException):
        if 400 <= error.code < 600:
            reply = Reply.parse(error.code, error.message)
            return ErrorReply(reply, keeps_connection=error.code != 421)
        return _lost("unexpected reply", stage, after_dot=after_dot)
    tls = find_tls_error(error)
    if tls is not None and not is_closed_during_handshake(tls):
        return ErrorReply(tls_reply(tls))
    if isinstance(error, socket.gaierror):
        return ErrorReply(network_failure("the host name did not resolve"))
    if isinstance(error, TimeoutError):
        return _lost("no reply" if after_dot else "timed out", stage, after_dot=after_dot)
    if isinstance(error, OSError | SMTPException):
        return _lost("connection lost", stage, after_dot=after_dot)
    return None


def first_line(response: SMTPResponse) -> str:
    """`CODE text` of a reply's first line, as people read it."""
    line = response.message.split("\n", 1)[0].strip()
    return f"{response.code} {line}".strip()
