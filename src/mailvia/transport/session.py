"""One SMTP connection to a channel's server: opened (connect, TLS, EHLO, AUTH: handshake.py),
then carrying transactions one at a time.

The session drives aiosmtplib's command-level calls itself (never `sendmail`), so it knows
the stage of every failure and keeps each recipient's reply. Failures are values: every
aiosmtplib, socket and ssl exception is mapped at this edge (smtp_errors.py's table).

When the server offers PIPELINING (RFC 2920), a transaction's MAIL, RCPTs and DATA go in one
write (pipelining.py makes the lines; replyqueue.py's protocol keeps every reply) and the
replies are read in order; the body waits for DATA's 354. Each failure ends with the stage
and replies the one-command-at-a-time path gives it.

Security `starttls` is mandatory STARTTLS: aiosmtplib's `connect` runs with `start_tls=False`
and handshake.py sends STARTTLS itself, failing when it is not offered (the same guarantee as
`start_tls=True`, with the stage known). Its default `None`, which an attacker can strip, is
never used. Credentials are never sent on a connection without TLS, nor with a mechanism the
server does not offer, and never appear in a reply's text.

"Test connection" runs this same code (probe.py): each step (resolve, connect, TLS, EHLO,
AUTH) is reported to an optional observer (observe.py) with the server's reply, and the
exception that ends a step is shown to it before it is mapped here.

Side effects: network I/O to the channel's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiosmtplib import (
    SMTP,
    SMTPException,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
)
from aiosmtplib.protocol import SMTPProtocol

from mailvia.domain.channel import Channel
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.idn import command_address, needs_smtputf8
from mailvia.domain.message import Envelope
from mailvia.domain.probe import Step
from mailvia.domain.replies import Reply, Stage
from mailvia.outbox.ports import Credentials
from mailvia.transport.data import encode_data
from mailvia.transport.guard import OutboundGuard
from mailvia.transport.handshake import Progress, authenticate, client, connect, greet, secure
from mailvia.transport.observe import NO_OBSERVER, Observer
from mailvia.transport.pipelining import UNSENDABLE, Batch, batch, mail_refused, rcpt_reply
from mailvia.transport.replyqueue import ReplyQueue
from mailvia.transport.smtp_errors import (
    BAD_SENDER,
    NO_SMTPUTF8,
    StepRefused,
    map_error,
)

_CHUNK = 64 * 1024
_FRESH = 2.0  # seconds a cleanly ended connection is reused without RSET
_QUIT_TIMEOUT = 5.0


class SessionFailed(Exception):
    """Opening a session failed; `result` says at which stage and with which reply."""

    def __init__(self, result: TransactionResult) -> None:
        super().__init__(str(result.reply))
        self.result = result


async def open_session(
    channel: Channel,
    credentials: Credentials | None,
    *,
    guard: OutboundGuard,
    helo_name: str,
    fingerprint: str = "",
    observer: Observer = NO_OBSERVER,
) -> Session:
    """Connect to the channel's server, secure the connection as the channel demands, EHLO
    and authenticate, telling `observer` each step. Raises SessionFailed (with the stage and
    reply) on any failure."""
    progress = Progress(Stage.CONNECT, observer)
    smtp: SMTP | None = None
    try:
        sock, context = await connect(channel, guard, progress)
        smtp = client(channel, sock, helo_name, context)
        await greet(smtp, channel, progress)
        await secure(smtp, channel, progress)
        await authenticate(smtp, channel, credentials, progress)
    except BaseException as error:
        if smtp is not None:
            smtp.close()
        failure = map_error(error, progress.stage) if isinstance(error, Exception) else None
        if failure is None:
            raise
        observer.failed(error)
        raise SessionFailed(TransactionResult(progress.stage, failure.reply)) from error
    return Session(smtp, channel, fingerprint)


class Session:
    """An open, authenticated connection that carries one transaction at a time."""

    def __init__(self, smtp: SMTP, channel: Channel, fingerprint: str = "") -> None:
        self.smtp = smtp
        self.channel = channel
        self.fingerprint = fingerprint
        self._broken = False
        self._clean_at: float | None = None  # when a transaction last ended with a reply

    def fresh(self) -> bool:
        """Whether the last transaction ended cleanly just now: the server is waiting for a
        new MAIL and no RSET round trip is needed to know the connection is alive."""
        return self._clean_at is not None and time.monotonic() - self._clean_at < _FRESH

    @property
    def usable(self) -> bool:
        """Whether another transaction may go over this connection."""
        return not self._broken and self.smtp.is_connected

    async def reset(self) -> bool:
        """Send RSET before reusing the connection; False (and closed) when it is gone."""
        try:
            await self.smtp.rset(timeout=self.channel.timeouts.command)
        except (SMTPException, OSError, TimeoutError):
            self.close()
            return False
        return True

    def close(self) -> None:
        """Drop the connection at once."""
        self._broken = True
        self.smtp.close()

    async def aclose(self) -> None:
        """Say QUIT (briefly) and close."""
        if self.smtp.is_connected:
            with contextlib.suppress(SMTPException, OSError, TimeoutError):
                await self.smtp.quit(timeout=min(self.channel.timeouts.command, _QUIT_TIMEOUT))
        self.close()

    async def transact(
        self, envelope: Envelope, content: bytes, observer: Observer = NO_OBSERVER
    ) -> TransactionResult:
        """Run one mail transaction: MAIL, RCPT per recipient, DATA. Never raises for a
        delivery failure; a connection that errored is closed (`usable` turns false)."""
        progress = Progress(Stage.MAIL, observer)
        progress.step(Stage.MAIL, Step.MESSAGE)
        self._clean_at = None
        try:
            result = await self._transact(envelope, content, progress)
            if self.usable:
                self._clean_at = time.monotonic()
            return result
        except Exception as error:
            failure = map_error(error, progress.stage, after_dot=progress.after_dot)
            if failure is None or not failure.keeps_connection:
                self.close()
            if failure is None:
                raise
            observer.failed(error)
            return TransactionResult(
                progress.stage,
                failure.reply,
                dict(progress.rcpt_replies),
                possible_duplicate=failure.possible_duplicate,
            )

    async def try_sender(self, address: str) -> Reply:
        """MAIL FROM:<address> and, when the server takes it, RSET: whether this server takes
        mail from `address`, as a delivery's first command asks it. No RCPT, no DATA: nothing
        is sent. The server's refusal is the reply; a lost connection raises what aiosmtplib
        raises (the caller maps it)."""
        utf8 = needs_smtputf8(address) and self.smtp.supports_extension("smtputf8")
        encoding = "utf-8" if utf8 else "ascii"
        try:
            response = await self.smtp.mail(
                command_address(address, encoding),
                options=["SMTPUTF8"] if utf8 else [],
                encoding=encoding,
                timeout=self.channel.timeouts.command,
            )
        except SMTPResponseException as refused:
            if not 400 <= refused.code < 600 or refused.code == 421:
                raise
            return Reply.parse(refused.code, refused.message)
        except (UnicodeEncodeError, ValueError) as error:
            raise StepRefused(BAD_SENDER) from error
        await self.smtp.rset(timeout=self.channel.timeouts.command)
        return Reply.parse(response.code, response.message)

    async def _transact(
        self, envelope: Envelope, content: bytes, progress: Progress
    ) -> TransactionResult:
        options, utf8 = self._mail_options(envelope, content)
        encoding = "utf-8" if utf8 else "ascii"
        protocol = self.smtp.protocol
        if self.smtp.supports_extension("pipelining") and isinstance(protocol, ReplyQueue):
            commands = batch(envelope, options, encoding)
            if commands is not None:
                return await self._pipelined(protocol, commands, envelope, content, progress)
        try:
            await self.smtp.mail(
                command_address(envelope.mail_from, encoding),
                options=options,
                encoding=encoding,
                timeout=self.channel.timeouts.command,
            )
        except ValueError as error:  # cannot be written on a command line (intake's job)
            raise StepRefused(BAD_SENDER) from error
        progress.stage = Stage.RCPT
        for address in envelope.rcpt_to:
            reply = await self._rcpt(address, encoding)
            progress.rcpt_replies[address] = reply
            if reply.code == 421 or not self.smtp.is_connected:
                self.close()
                return TransactionResult(Stage.RCPT, reply, dict(progress.rcpt_replies))
        if not any(reply.positive for reply in progress.rcpt_replies.values()):
            if not await self.reset():
                self.close()
            return TransactionResult(Stage.RCPT, None, dict(progress.rcpt_replies))
        progress.stage = Stage.DATA
        return await self._data(content, progress)

    async def _pipelined(
        self,
        protocol: ReplyQueue,
        commands: Batch,
        envelope: Envelope,
        content: bytes,
        progress: Progress,
    ) -> TransactionResult:
        """MAIL, the RCPTs and DATA in one write (RFC 2920), their replies read in order, each
        within its phase's timeout; the body only after DATA's 354. It ends as the sequential
        path ends: the same stage, the same replies per recipient, the same exceptions."""
        timeouts = self.channel.timeouts
        protocol.expect(commands.replies)
        protocol.write(commands.commands)
        response = await protocol.read_response(timeout=timeouts.command)
        refused = mail_refused(response, envelope.mail_from)
        if refused is not None:
            if 400 <= refused.code < 600 and refused.code != 421:
                await self._settle_batch(protocol, commands.sent + 1)
            raise refused
        progress.stage = Stage.RCPT
        replies = progress.rcpt_replies
        for address, local in commands.recipients:
            if local is None:
                response = await protocol.read_response(timeout=timeouts.command)
                local = rcpt_reply(response, address)
            replies[address] = local
            if local.code == 421:
                self.close()
                return TransactionResult(Stage.RCPT, local, dict(replies))
        if not any(reply.positive for reply in replies.values()):
            await self._settle_batch(protocol, 1)
            if self.usable and not await self.reset():
                self.close()
            return TransactionResult(Stage.RCPT, None, dict(replies))
        progress.stage = Stage.DATA
        response = await protocol.read_response(timeout=timeouts.data_init)
        if response.code != 354:
            raise SMTPResponseException(response.code, response.message)
        return await self._body(protocol, content, progress)

    async def _settle_batch(self, protocol: ReplyQueue, count: int) -> None:
        """Read the `count` replies a failed batch is still owed, the last being DATA's (RFC
        2920 §3.1: check every reply; a DATA accepted anyway gets a single dot, whose reply
        is read too). The connection is closed when one does not come or says 421."""
        timeouts = self.channel.timeouts
        try:
            for left in range(count, 0, -1):
                timeout = timeouts.command if left > 1 else timeouts.data_init
                response = await protocol.read_response(timeout=timeout)
                if response.code == 421:
                    break
            if response.code == 354:
                protocol.write(b".\r\n")
                response = await protocol.read_response(timeout=timeouts.data_end)
        except (SMTPException, OSError, TimeoutError):
            self.close()
            return
        if response.code == 421:
            self.close()

    def _mail_options(self, envelope: Envelope, content: bytes) -> tuple[list[str], bool]:
        """ESMTP options for MAIL: SMTPUTF8 for an address whose local part is not ASCII
        (a domain alone goes as IDNA A-labels, as the headers write it), 8BITMIME for 8-bit
        content, each only when the server offers it."""
        options: list[str] = []
        utf8 = any(needs_smtputf8(a) for a in (envelope.mail_from, *envelope.rcpt_to))
        utf8 = utf8 and self.smtp.supports_extension("smtputf8")
        if utf8:
            options.append("SMTPUTF8")
        if not content.isascii() and self.smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        return options, utf8

    async def _rcpt(self, address: str, encoding: str) -> Reply:
        try:
            response = await self.smtp.rcpt(
                command_address(address, encoding),
                encoding=encoding,
                timeout=self.channel.timeouts.command,
            )
        except SMTPRecipientRefused as refused:
            if not 400 <= refused.code < 600:
                raise  # a malformed or unexpected reply: the session is out of step
            return Reply.parse(refused.code, refused.message)
        except UnicodeEncodeError:
            return NO_SMTPUTF8
        except ValueError:
            return UNSENDABLE
        return Reply.parse(response.code, response.message)

    async def _data(self, content: bytes, progress: Progress) -> TransactionResult:
        """DATA, then the body."""
        response = await self.smtp.execute_command(b"DATA", timeout=self.channel.timeouts.data_init)
        if response.code != 354:
            raise SMTPResponseException(response.code, response.message)
        protocol = self.smtp.protocol
        if protocol is None:
            raise SMTPServerDisconnected("connection lost")
        return await self._body(protocol, content, progress)

    async def _body(
        self, protocol: SMTPProtocol, content: bytes, progress: Progress
    ) -> TransactionResult:
        """After 354: the body and the final dot (a large body in chunks), the final reply."""
        timeouts = self.channel.timeouts
        payload = encode_data(content)
        if len(payload) <= _CHUNK:
            # One write with the final dot: a syscall less, and a small trailing segment never
            # waits for a delayed ACK. (Nothing is buffered before it, so no flow control.)
            protocol.write(payload + b".\r\n")
        else:
            await self._write_chunks(protocol, payload)
            protocol.write(b".\r\n")
        progress.after_dot = True
        progress.stage = Stage.DATA_END
        response = await protocol.read_response(timeout=timeouts.data_end)
        if not (200 <= response.code < 300 or 400 <= response.code < 600):
            raise SMTPResponseException(response.code, response.message)
        reply = Reply.parse(response.code, response.message)
        if response.code == 421:
            self.close()
        return TransactionResult(Stage.DATA_END, reply, dict(progress.rcpt_replies))

    async def _write_chunks(self, protocol: SMTPProtocol, payload: bytes) -> None:
        """A large body in chunks, each waited out under flow control (bounded by data_block):
        the wait also yields to the loop, so a server that hung up mid-body is noticed before
        the final dot is written."""
        drain = getattr(protocol, "_drain_helper", None)  # flow control, if aiosmtplib has it
        for start in range(0, len(payload), _CHUNK):
            protocol.write(payload[start : start + _CHUNK])
            if drain is not None:
                # wait_for, not asyncio.timeout: it runs the drain as a task of its own, so the
                # loop turns even when the transport is not paused and a server that hung up
                # mid-body is seen before the dot (the body then was not delivered, and is
                # not flagged as possibly delivered). Its fault on Python 3.11 is kept: a
                # cancel that comes in the very turn a drain completes is lost (the send goes
                # on to its end); asyncio.timeout (replyqueue's connect) would not turn the
                # loop (tests/integration/test_delivery.py, the connection dropped mid-data).
                await asyncio.wait_for(drain(), self.channel.timeouts.data_block)
