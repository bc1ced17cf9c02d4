"""SMTP submission (aiosmtpd): a STARTTLS port and an implicit-TLS port into the one submit
use case. Login = the user's email, password = an API token, only under TLS; or no login from
a trusted network. Protocol errors are replies (`replies.reply_for` maps errors).

Side effects: listens on TCP sockets; commits each accepted message to the outbox (in a
worker thread, the store being synchronous) before it replies 250.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from mailvia.domain.errors import Forbidden, MailviaError, Unauthenticated
from mailvia.domain.message import Envelope as MessageEnvelope
from mailvia.domain.signins import SUBMISSION, FailedSignIns
from mailvia.domain.tenancy import User
from mailvia.ingress.smtp.auth import OneAtATime
from mailvia.ingress.smtp.connections import Capped, ConnectionLimit
from mailvia.ingress.smtp.data import ChunkedData
from mailvia.ingress.smtp.idle import LazyIdleTimer
from mailvia.ingress.smtp.intake import Arrived, Intake
from mailvia.ingress.smtp.replies import (
    AUTH_REQUIRED,
    BAD_CREDENTIALS,
    LOCKED_OUT,
    SHUTTING_DOWN,
    TOO_MANY_RECIPIENTS,
    Command,
    accepted,
    as_written,
    reply_for,
    written_path,
)
from mailvia.outbox.addresses import check_address, login_key
from mailvia.outbox.compose import MAX_RECIPIENTS
from mailvia.outbox.group_commit import PlannedGroupCommit
from mailvia.outbox.metrics import rejection_reason
from mailvia.outbox.receipts import Receipt
from mailvia.outbox.services import Services
from mailvia.outbox.submit import EachPlan
from mailvia.settings import Network

log = logging.getLogger("mailvia.submission")
_UNKNOWN = object()
INLINE_CHECK_BYTES = 256 * 1024  # larger messages are checked in a worker thread
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# `<local@domain>`, then the parameters (blanks before them skipped, as aiosmtpd does; a
# comment there takes aiosmtpd's own parse)
_PLAIN_PATH = re.compile(
    rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*(?![ \t(])(.*)", re.S
)
T = TypeVar("T")


class SubmissionServer:
    """The submission listeners of one process and what their connections share.

    `trusted_networks` maps client networks to organization names (the organizations must
    exist: raises NotFound); `connections` caps the connections held at once. Seams for
    tests: `signins` (failed logins), `clock` (time.time for messages), `monotonic` (the time
    of failed logins), `sleep` (their waits)."""

    def __init__(
        self,
        services: Services,
        *,
        tls_context: ssl.SSLContext,
        trusted_networks: Sequence[tuple[Network, str]] = (),
        signins: FailedSignIns | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        hostname: str | None = None,
        connections: ConnectionLimit | None = None,
    ) -> None:
        self.services = services
        self.connections = connections if connections is not None else ConnectionLimit()
        self.tls_context = tls_context
        self.trusted = tuple(
            (net, services.tenancy.organization(name).id) for net, name in trusted_networks
        )
        self.signins = signins or FailedSignIns(SUBMISSION)
        self.turns = OneAtATime()
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.hostname = hostname or socket.gethostname()
        limit = services.max_message_size
        too_big = f"552 5.3.4 Message too big: the limit is {limit} bytes"
        self.reworded = {  # aiosmtpd's own replies, with enhanced status codes
            "552 Error: Too much mail data": too_big,
            "552 Error: message size exceeds fixed maximum message size": too_big,
            "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.6 Line too long (RFC 5321 "
            "allows 998 characters)",
            "503 Already authenticated": "503 5.5.1 Already authenticated",
            "535 5.7.8 Authentication credentials invalid": BAD_CREDENTIALS,
        }
        self.live: set[SubmissionSMTP] = set()
        self._servers: list[asyncio.Server] = []
        self._pending: set[asyncio.Future[Any]] = set()
        self._accepting = 0  # messages handed to the group commit and not yet answered
        self.stopping = False  # `stop` has begun: no new connection, no new transaction
        self.intake = Intake(services, clock)
        self.group: PlannedGroupCommit[Arrived, EachPlan, Receipt] = PlannedGroupCommit(
            self.intake.plan, self.intake.write, self.run
        )

    async def start(
        self,
        *,
        sock: socket.socket | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        implicit_tls: bool = False,
    ) -> asyncio.Server:
        """Listen on `sock` (already bound), or on `host:port` (0 picks a free port)."""
        loop = asyncio.get_running_loop()
        ssl_context = self.tls_context if implicit_tls else None

        def factory() -> SubmissionSMTP:
            return SubmissionSMTP(self, implicit_tls=implicit_tls)

        if sock is not None:
            server = await loop.create_server(factory, sock=sock, ssl=ssl_context)
        else:
            server = await loop.create_server(factory, host, port, ssl=ssl_context)
        self._servers.append(server)
        return server

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking mail: stop listening; tell each connection between transactions that
        the service is shutting down (421 4.3.2) and close it; let those in a transaction
        finish it (a next MAIL is told the same; QUIT still gets its 221) and the messages
        already received be committed and answered (the running group commit and those
        waiting for it), up to `grace` seconds; then tell every connection left the same and
        close it (a client whose transaction ended a moment ago reads 421 4.3.2 at its next
        command, not a dropped connection)."""
        self.stopping = True
        for server in self._servers:
            server.close()
        for connection in list(self.live):
            if not connection.in_transaction:
                connection.shut()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while loop.time() < deadline:
            busy = any(c.in_transaction for c in self.live)
            if not (busy or self._pending or self._accepting):
                break
            await asyncio.sleep(0.01)
        for connection in list(self.live):
            connection.shut()  # one that ended its transaction meanwhile is told too
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Call the synchronous store side in a worker thread; it finishes even if the client
        leaves meanwhile (and `stop` waits for it)."""
        task = asyncio.ensure_future(asyncio.to_thread(func, *args))
        self._pending.add(task)
        task.add_done_callback(_settled(self._pending))
        return await asyncio.shield(task)

    def trusted_organization(self, session: Session) -> str | None:
        """The organization id whose trusted network the client is in, if any (worked out
        once per connection)."""
        known = getattr(session, "trusted", _UNKNOWN)
        if known is not _UNKNOWN:
            return cast(str | None, known)
        address = _client_address(session)
        found = None
        if address is not None:
            found = next((org for net, org in self.trusted if address in net), None)
        if isinstance(session, QuietSession):
            session.trusted = found
        return found

    # -- the steps of a session ---------------------------------------------------------

    async def login(self, connection: SubmissionSMTP, login: bytes, token: bytes) -> AuthResult:
        """Check a login after the client's failures allow it, one at a time per client;
        refuses a locked-out client with 454 and hangs up."""
        email = login.decode("utf-8", "replace")
        peer = connection.peer_host
        async with self.turns.turn(peer):
            return await self._login(connection, email, peer, token)

    async def _login(
        self, connection: SubmissionSMTP, email: str, peer: str, token: bytes
    ) -> AuthResult:
        login = login_key(email)  # every spelling of a login is one account, as looked up
        verdict = self.signins.verdict(login, peer, self.monotonic())
        if verdict.wait and not verdict.locked:
            await self.sleep(verdict.wait)
            verdict = self.signins.verdict(login, peer, self.monotonic())
        if verdict.locked:
            return await connection.lock_out(email)
        attempt = self.signins.begin(login, peer, self.monotonic())
        try:
            user = await self.run(self._check_login, login, token.decode("utf-8", "replace"))
        except Unauthenticated:
            if self.signins.failed(attempt, self.monotonic()):
                return await connection.lock_out(email)
            return AuthResult(success=False, handled=False)  # aiosmtpd: 535, reworded
        except Exception as exc:
            self.signins.forget(attempt, succeeded=False)
            await connection.push(reply_for(exc, Command.AUTH))
            return AuthResult(success=False, handled=True)
        self.signins.forget(attempt, succeeded=True)
        return AuthResult(success=True, auth_data=user)

    def _check_login(self, login: str, token: str) -> User:
        """The token's user, if `login` (as `login_key` gives it) is theirs."""
        user = self.services.tokens.authenticate(token)
        if not hmac.compare_digest(user.email.lower().encode(), login.encode()):
            raise Unauthenticated("the token is not this login's")
        return user

    async def check_sender(self, session: Session, address: str) -> None:
        """MAIL FROM must be an identity of the logged-in user, or of a user of the trusted
        network's organization. Raises InvalidAddress, Forbidden. An address found good is
        not looked up again on this connection (DATA checks the message's From anyway). The
        address is judged in its normal form, as the From is (a domain's A-labels are its
        U-labels: `jane@xn--strae-oqa.test` is `jane@straße.test`)."""
        address = check_address(address, "sender")
        known: set[str] = getattr(session, "senders", set())
        if address.lower() in known:
            return
        user = session.auth_data if session.authenticated else None
        if isinstance(user, User):
            await self.run(self.services.submitter.check_sender, user, address)
        else:
            organization = self.trusted_organization(session)
            if organization is None:
                raise Forbidden("authentication required")  # MAIL answers 530 before this
            await self.run(self.services.tenancy.sender_for, organization, address)
        known.add(address.lower())

    async def accept(self, session: Session, envelope: Envelope) -> Receipt:
        """Validate the client's bytes and submit them; returns once they are committed
        (together with what other connections sent meanwhile: group commit)."""
        user = session.auth_data if session.authenticated else None
        content = envelope.original_content or b""
        given = MessageEnvelope(str(envelope.mail_from), tuple(envelope.rcpt_tos))
        if len(content) <= INLINE_CHECK_BYTES:  # about 0.3 ms: not worth a thread
            composed = self.intake.compose(content, given)
        else:  # a large message's scans would hold the event loop up
            composed = await self.run(self.intake.compose, content, given)
        arrived = Arrived(
            composed, user if isinstance(user, User) else None, self.trusted_organization(session)
        )
        self._accepting += 1
        try:
            return await self.group.put(arrived)
        finally:
            self._accepting -= 1


class QuietSession(Session):  # type: ignore[misc]
    """aiosmtpd's session without the deprecation warning it logs for its own `login_data`;
    `senders`: the MAIL FROM addresses already found good on this connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.senders: set[str] = set()
        self.trusted: object = _UNKNOWN  # the trusted network's organization id, or None

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class SubmissionSMTP(Capped, ChunkedData, LazyIdleTimer, SMTP):  # type: ignore[misc]
    """One submission connection: aiosmtpd's protocol with our AUTH check and replies, held
    to the connection caps (`Capped`), reading DATA in chunks (`ChunkedData`), its idle
    timer moved rather than set again at each command (`LazyIdleTimer`)."""

    def __init__(self, server: SubmissionServer, *, implicit_tls: bool) -> None:
        super().__init__(
            _HANDLER,
            hostname=server.hostname,
            ident="mailvia",
            data_size_limit=server.services.max_message_size,
            enable_SMTPUTF8=True,
            # On the implicit-TLS port the connection is TLS already: no STARTTLS to offer.
            tls_context=None if implicit_tls else server.tls_context,
            auth_require_tls=not implicit_tls,
            authenticator=_defer_to_login,
            loop=asyncio.get_running_loop(),
        )
        self.submission = server
        self.written = ""  # the last MAIL or RCPT path as the client wrote it

    @property
    def peer_host(self) -> str:
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else ""

    @property
    def connection_limit(self) -> ConnectionLimit:
        return self.submission.connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.submission.stopping and self.client is None:
            self.refused = True  # Capped then passes nothing on; never admitted
            cast(asyncio.WriteTransport, transport).write(f"{SHUTTING_DOWN}\r\n".encode())
            transport.close()
            return
        super().connection_made(transport)
        if not self.refused:
            self.submission.live.add(self)

    @property
    def in_transaction(self) -> bool:
        """Between MAIL and the reply to DATA (or RSET)."""
        envelope = self.envelope
        return envelope is not None and envelope.mail_from is not None

    def shut(self) -> None:
        """Tell the client the service is shutting down (421 4.3.2), and close."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            cast(asyncio.WriteTransport, transport).write(f"{SHUTTING_DOWN}\r\n".encode())
        self.close_now()

    async def smtp_MAIL(self, arg: str) -> None:
        if self.submission.stopping:
            self.shut()
            return
        await super().smtp_MAIL(arg)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.submission.live.discard(self)

    def _create_session(self) -> QuietSession:
        return QuietSession(self.loop)

    def close_now(self) -> None:
        """Close the connection, also during a STARTTLS handshake."""
        if self.transport is not None:
            self.transport.close()
        if self._original_transport is not None:
            self._original_transport.close()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's parse of `<address> params`, with a fast path for the plain
        `<local@domain>` nearly every client sends (aiosmtpd's own makes a class per call)."""
        self.written = written_path(arg)
        plain = _PLAIN_PATH.match(arg)
        if plain is None:
            return super()._getaddr(arg)  # type: ignore[no-any-return]
        address, rest = plain.group(1), plain.group(2)
        local = address.rpartition("@")[0]
        if self.local_part_limit and len(local) > self.local_part_limit:
            return None, None
        return address, rest

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = self.submission.reworded.get(status, status)
        await super().push(status)

    async def lock_out(self, login: str) -> AuthResult:
        log.warning(
            "client %s locked out after failed logins (the last for %r)", self.peer_host, login
        )
        await self.push(LOCKED_OUT)
        self.close_now()
        return AuthResult(success=False, handled=True)

    # aiosmtpd decodes the credentials and hands them to `_defer_to_login`, which passes them
    # back here unjudged: checking them needs the store (a thread) and may wait (failed logins).
    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._judge(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._judge(await super().auth_LOGIN(_, args))

    async def _judge(self, result: AuthResult) -> AuthResult:
        credentials = result.auth_data
        if result.success or not isinstance(credentials, LoginPassword):
            return result  # not decodable: aiosmtpd has answered
        return await self.submission.login(self, credentials.login, credentials.password)


def _defer_to_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    return AuthResult(success=False, handled=True, auth_data=data)


class Handler:
    """aiosmtpd hooks; each acts through the connection's `SubmissionServer`."""

    async def handle_MAIL(
        self,
        conn: SubmissionSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> object:
        if not session.authenticated and conn.submission.trusted_organization(session) is None:
            return AUTH_REQUIRED
        try:
            await conn.submission.check_sender(session, address)
        except Exception as exc:
            return _refuse(conn, as_written(exc, address, conn.written), Command.MAIL)
        return MISSING

    async def handle_RCPT(
        self,
        conn: SubmissionSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> object:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return TOO_MANY_RECIPIENTS
        try:
            check_address(address, "recipient")
        except Exception as exc:
            return _refuse(conn, as_written(exc, address, conn.written), Command.RCPT)
        return MISSING

    async def handle_DATA(self, conn: SubmissionSMTP, session: Session, envelope: Envelope) -> str:
        try:
            receipt = await conn.submission.accept(session, envelope)
        except Exception as exc:
            return _refuse(conn, exc, Command.DATA)
        log.info("%s %s from %s", receipt.state, receipt.id, conn.peer_host)
        return accepted(receipt)

    async def handle_exception(self, error: Exception) -> str:
        return reply_for(error, Command.OTHER)


def _refuse(conn: SubmissionSMTP, exc: Exception, command: Command) -> str:
    """The reply for an error, counting a refused message in the metrics."""
    if isinstance(exc, MailviaError):
        conn.submission.services.metrics.rejected("smtp", rejection_reason(exc))
    return reply_for(exc, command)


def _client_address(session: Session) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    peer = session.peer
    if not isinstance(peer, tuple) or not peer:
        return None
    try:
        address = ipaddress.ip_address(str(peer[0]).partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _settled(pending: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        pending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a client that left is not an unhandled error

    return done


_HANDLER = Handler()
