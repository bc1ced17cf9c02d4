"""One SMTP connection of the test server: aiosmtpd's protocol with faults, AUTH and logging.

Side effects: replies on the socket, closes it on `drop`, stores accepted messages via `Capture`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hmac
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from mailvia.testserver import xoauth2
from mailvia.testserver.capture import Capture, SessionRecord
from mailvia.testserver.faults import (
    RECIPIENT_REPLIES,
    Action,
    BadTls,
    Drop,
    FaultBook,
    FaultsFile,
    NoReply,
    RecipientCounter,
    Reply,
    Stall,
)
from mailvia.testserver.xoauth2 import Xoauth2Check

# RFC 4954 section 4: an AUTH line (an XOAUTH2 token is a long JWT) may be 12288 octets.
AUTH_LINE_LIMIT = 12288
HOSTNAME = "localhost"
IDENT = "mailvia testserver"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
AUTH_DISABLED = "502 5.5.1 Authentication not enabled"
DATA_GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"
TLS_GO_AHEAD = "220 2.0.0 Ready to start TLS"
NOT_TLS = b"this is not TLS\r\n" * 4


@dataclass
class ServerState:
    """What all connections of one server share; `faults` may be replaced at any time."""

    capture: Capture
    faults: FaultBook
    faults_file: FaultsFile | None
    users: dict[str, str] | None
    implicit_tls: bool
    xoauth2: Xoauth2Check | None = None
    pipelining: bool = True  # offer PIPELINING in the EHLO reply
    recipients: RecipientCounter = field(default_factory=RecipientCounter)
    live: set[FaultySMTP] = field(default_factory=set)
    pending: set[asyncio.Future[str]] = field(default_factory=set)

    @property
    def auth_enabled(self) -> bool:
        """True when AUTH is offered (and then required before MAIL)."""
        return self.users is not None or self.xoauth2 is not None

    def auth_excluded(self) -> list[str]:
        """The mechanisms not to offer: XOAUTH2 without a check, PLAIN/LOGIN beside XOAUTH2
        without users. (With no AUTH at all, `handle_AUTH` answers 502 to every mechanism.)"""
        if self.xoauth2 is None:
            return ["XOAUTH2"]
        return [] if self.users is not None else ["PLAIN", "LOGIN"]

    def connection_book(self) -> FaultBook | None:
        """The faults file's rules for a new connection (re-read now), if there is a file."""
        return self.faults_file.book() if self.faults_file is not None else None


class FaultEnvelope(Envelope):  # type: ignore[misc]
    """An envelope that remembers a `disconnect-in-data@` recipient."""

    def __init__(self) -> None:
        super().__init__()
        self.drop_in_data = False


class QuietSession(Session):  # type: ignore[misc]
    """aiosmtpd's session without the deprecation warning it logs for its own `login_data` use."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class FaultySMTP(SMTP):  # type: ignore[misc]
    """aiosmtpd's SMTP protocol plus fault injection, a command log and our own AUTH rules."""

    # aiosmtpd sizes its line reader by this at construction; DATA lines are still held to
    # RFC 5321's 1001 (restored on the instance below, which DATA checks each line against).
    line_length_limit = AUTH_LINE_LIMIT + 2

    def __init__(self, state: ServerState, tls_context: ssl.SSLContext | None) -> None:
        super().__init__(
            _HANDLER,
            hostname=HOSTNAME,
            ident=IDENT,
            tls_context=tls_context,
            enable_SMTPUTF8=True,
            # AUTH needs STARTTLS when we offer it; implicit TLS or no TLS at all allow it now.
            auth_require_tls=tls_context is not None,
            authenticator=self._check_login,
            auth_exclude_mechanism=state.auth_excluded(),
            # Given explicitly: aiosmtpd's own lookup toggles warning filters, racy in threads.
            loop=asyncio.get_running_loop(),
        )
        self.line_length_limit = SMTP.line_length_limit
        # aiosmtpd keeps these limits in a class-wide dict; each connection gets its own.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self.command_size_limits["AUTH"] = AUTH_LINE_LIMIT
        self.state = state
        self.record: SessionRecord | None = None
        self._file_book: FaultBook | None = None
        self.oauth_account: str | None = None  # the mailbox an XOAUTH2 token opened
        self._greeted = False
        self._next_early = False  # the next command was already waiting (see `_note`)
        self._smtp_methods = {
            verb: self._logged(verb, method) for verb, method in self._smtp_methods.items()
        }

    # -- connection life --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.record is None
        super().connection_made(transport)
        if first:
            self.record = self.state.capture.open_session()
            self.record.tls = self.state.implicit_tls
            self._file_book = self.state.connection_book()
            self.state.live.add(self)
        elif self.record is not None and self._tls_protocol is not None:
            self.record.tls = True

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.state.live.discard(self)
        if self.record is not None:
            self.state.capture.close_session(self.record)

    def _create_session(self) -> QuietSession:
        return QuietSession(self.loop)

    def _create_envelope(self) -> FaultEnvelope:
        return FaultEnvelope()

    def close_now(self) -> None:
        """Close the connection now, also when a STARTTLS handshake is still under way."""
        if self.transport is not None:
            self.transport.close()
        # Closing only the TLS layer would wait for the peer; the socket below goes at once.
        if self._original_transport is not None:
            self._original_transport.close()

    # -- faults -----------------------------------------------------------------------------

    def take(self, stage: str) -> Action | None:
        """The fault for this command of `stage`: the faults file first, then the server's."""
        action = self._file_book.take(stage) if self._file_book is not None else None
        return action if action is not None else self.state.faults.take(stage)

    async def perform(self, action: Action | None) -> str | None:
        """Carry out `action`; return a reply to send instead of the normal one, or None to go on.

        `drop`, `stall` (no seconds), `noreply` and a 421 reply never return: the connection ends.
        """
        match action:
            case None:
                return None
            case Reply(code=421, text=text):
                await super().push(text)
                await self.hang_up()
            case Reply(text=text):
                return text
            case Drop():
                await self.hang_up()
            case Stall(seconds=None):
                await self.hold()
            case Stall(seconds=seconds):
                await asyncio.sleep(seconds or 0.0)
                self._reset_timeout()
                return None
            case NoReply():
                await self.swallow()
        raise AssertionError(f"unknown fault action {action!r}")

    async def hang_up(self) -> NoReturn:
        """Close the connection without a word and wait to be cancelled by `connection_lost`."""
        self.close_now()
        await self.hold()

    async def hold(self) -> NoReturn:
        """Send nothing and keep the connection open until the client (or the server) closes it."""
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable: the future is never resolved")

    async def swallow(self) -> NoReturn:
        """Read and ignore whatever the client sends; close when it closes."""
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        while await self._reader.read(4096):
            pass
        await self.hang_up()

    # -- capture ----------------------------------------------------------------------------

    def store(self, envelope: Envelope) -> str:
        """Store the message just received; returns its maildir name."""
        content: bytes = envelope.original_content or b""
        # aiosmtpd hands the null reverse-path over as "<>"; the log says "" for it.
        mail_from = "" if envelope.mail_from in (None, "<>") else str(envelope.mail_from)
        extra = {"via": "smtp", "account": self.oauth_account} if self.oauth_account else None
        return self.state.capture.store(content, mail_from, list(envelope.rcpt_tos), extra=extra)

    async def store_later(self, seconds: float, envelope: Envelope) -> str:
        """Wait, then store; the message is stored even if the client hangs up meanwhile."""

        async def later() -> str:
            await asyncio.sleep(seconds)
            return self.store(envelope)

        task = asyncio.ensure_future(later())
        self.state.pending.add(task)
        task.add_done_callback(self.state.pending.discard)
        unique = await asyncio.shield(task)
        self._reset_timeout()
        return unique

    # -- commands ---------------------------------------------------------------------------

    def _logged(
        self, verb: str, method: Callable[[str | None], Awaitable[None]]
    ) -> Callable[[str | None], Awaitable[None]]:
        @functools.wraps(method)
        async def run(arg: str | None) -> None:
            self._note(verb)
            if not await self._fault_before(verb, arg):
                await method(arg)
                if verb == "STARTTLS":
                    self._check_handshake()

        return run

    def _note(self, verb: str) -> None:
        """Log the command, and whether it came before the previous command's reply: the
        input still unread when a command is taken up arrived before its reply."""
        waiting = bool(getattr(self._reader, "_buffer", b""))
        if self.record is not None:
            self.record.commands.append(verb)
            if self._next_early:
                self.record.early.append(verb)
            if verb == "DATA" and waiting:
                self.record.early.append("BODY")
        self._next_early = waiting and verb != "DATA"

    def _check_handshake(self) -> None:
        # A client that leaves during the handshake makes asyncio report success without ever
        # telling aiosmtpd the connection is gone; the session would hang until the server stops.
        transport = self.transport
        if self._tls_protocol is not None and transport is not None and transport.is_closing():
            self.connection_lost(None)

    async def _fault_before(self, verb: str, arg: str | None) -> bool:
        """Faults of commands aiosmtpd has no early hook for; True when the command is done."""
        if verb == "STARTTLS" and not arg and self.tls_context and self._tls_protocol is None:
            action = self.take("starttls")
            if isinstance(action, BadTls):
                await self._fail_handshake()
            reply = await self.perform(action)
        elif verb == "DATA" and not arg and isinstance(self.envelope, FaultEnvelope):
            reply = await self._data_fault(self.envelope)
        else:
            return False
        if reply is None:
            return False
        await super().push(reply)
        return True

    async def _data_fault(self, envelope: FaultEnvelope) -> str | None:
        if not envelope.rcpt_tos:
            return None  # aiosmtpd answers 503 itself
        action = self.take("data")
        if isinstance(action, Drop):
            await self._drop_during_body()
        reply = await self.perform(action)
        if reply is not None:
            return reply
        body = self.take("body")
        if isinstance(body, Drop) or envelope.drop_in_data:
            await self._drop_during_body()
        if isinstance(body, Stall):
            await self._stall_during_body()
        return None

    async def _drop_during_body(self) -> NoReturn:
        await super().push(DATA_GO_AHEAD)
        with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await self._reader.readuntil(b"\r\n")
        await self.hang_up()

    async def _stall_during_body(self) -> NoReturn:
        """Say 354, then read nothing more: a client's writes back up until it gives up."""
        await super().push(DATA_GO_AHEAD)
        if isinstance(self.transport, asyncio.ReadTransport):
            self.transport.pause_reading()
        await self.hold()

    async def _fail_handshake(self) -> NoReturn:
        """Say 220 to STARTTLS, answer the client's TLS hello with plain text, and wait for
        the client to give up (closing first could reset the connection before it reads)."""
        await super().push(TLS_GO_AHEAD)
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reader.read(4096), 5.0)  # the client's hello
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.write(NOT_TLS)
        await self.swallow()

    async def push(self, status: Any) -> None:
        if not self._greeted:
            self._greeted = True
            reply = await self.perform(self.take("greeting"))
            if reply is not None:
                await super().push(reply)
                if not reply.startswith("2"):
                    await self.hang_up()
                return
        await super().push(status)

    def _check_login(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        users = self.state.users or {}
        if isinstance(data, LoginPassword):
            login = data.login.decode("utf-8", "replace")
            expected = users.get(login)
            given = data.password.decode("utf-8", "replace")
            if expected is not None and hmac.compare_digest(expected, given):
                if self.record is not None:
                    self.record.auth_user = login
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    async def auth_XOAUTH2(self, _server: SMTP, args: list[str]) -> AuthResult:
        """SASL XOAUTH2 as Gmail and Office 365 answer it (see `xoauth2.authenticate`)."""
        if self.state.xoauth2 is None:  # not offered; aiosmtpd refuses it before we get here
            return AuthResult(success=False, handled=False)
        result, account = await xoauth2.authenticate(self.challenge_auth, self.state.xoauth2, args)
        if account is not None:
            self.oauth_account = account
            if self.record is not None:
                self.record.auth_user = account
        return result


class Handler:
    """aiosmtpd hooks; each acts on the `FaultySMTP` connection it is called with."""

    async def handle_EHLO(
        self,
        server: FaultySMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        reply = await server.perform(server.take("ehlo"))
        if reply is not None:
            return [reply]
        session.host_name = hostname
        lines = [line for line in responses[:-1] if _keep_ehlo_line(server, line)]
        if server.state.pipelining:
            lines.append("250-PIPELINING")
        return [*lines, responses[-1]]

    async def handle_HELO(
        self, server: FaultySMTP, session: Session, envelope: Envelope, hostname: str
    ) -> object:
        reply = await server.perform(server.take("ehlo"))
        return reply if reply is not None else MISSING

    async def handle_AUTH(
        self, server: FaultySMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> object:
        if not server.state.auth_enabled:
            return AUTH_DISABLED
        reply = await server.perform(server.take("auth"))
        return reply if reply is not None else MISSING

    async def handle_MAIL(
        self,
        server: FaultySMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> object:
        if server.state.auth_enabled and not session.authenticated:
            return AUTH_REQUIRED
        reply = await server.perform(server.take("mail"))
        return reply if reply is not None else MISSING

    async def handle_RCPT(
        self,
        server: FaultySMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> object:
        reply = await server.perform(server.take("rcpt"))
        if reply is not None:
            return reply
        fault = server.state.recipients.take(address)
        if fault is None:
            return MISSING
        if fault.kind == "stall":
            await server.hold()
        if fault.kind == "disconnect-in-data" and isinstance(envelope, FaultEnvelope):
            envelope.drop_in_data = True
            return MISSING
        return RECIPIENT_REPLIES.get(fault.kind, MISSING)

    async def handle_RSET(self, server: FaultySMTP, session: Session, envelope: Envelope) -> object:
        reply = await server.perform(server.take("rset"))
        return reply if reply is not None else MISSING

    async def handle_DATA(self, server: FaultySMTP, session: Session, envelope: Envelope) -> str:
        action = server.take("data-end")
        if isinstance(action, Stall) and action.seconds is not None:
            unique = await server.store_later(action.seconds, envelope)
            return f"250 2.0.0 OK queued as {unique}"
        reply = await server.perform(action)
        if reply is not None and not reply.startswith("2"):
            return reply
        unique = server.store(envelope)
        return reply if reply is not None else f"250 2.0.0 OK queued as {unique}"


def _keep_ehlo_line(server: FaultySMTP, line: str) -> bool:
    return not (not server.state.auth_enabled and line[4:].upper().startswith("AUTH"))


_HANDLER = Handler()
