"""Test connection: resolve, connect, TLS, EHLO, AUTH and an optional test message, step by step.

`SmtpProber.probe` opens its own one-off connection (never the pool) and reports each step with
the server's own reply; the first failing step ends the probe, with a hint from
`domain/probe.py`. The whole probe, DNS and the closing QUIT included, fits in one budget
(10 s by default).

The rules of delivery hold here too (see session.py): the outbound address guard checks every
address the host resolves to, and the TCP connection goes to a checked address while TLS
verifies the certificate for the host name; TLS always verifies (tls.py); credentials never go
over a connection without TLS; no detail or reply carries the password, plain or AUTH-encoded.
A target the guard refuses gets one generic message, whatever is (or is not) listening there.

Side effects: DNS look-ups and one SMTP connection to the channel's server; with `to`, one
test message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import formatdate, make_msgid
from typing import Any

from aiosmtplib import SMTP, SMTPException, SMTPResponse, SMTPResponseException

from mailvia.domain.channel import Auth, Channel, Kind, Security, Timeouts
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.errors import OutboundRefused
from mailvia.domain.probe import (
    REFUSED_BY_SERVER,
    Failure,
    ProbeReport,
    ProbeStep,
    Step,
    describe_certificate,
    hint_for,
)
from mailvia.domain.replies import Reply, Stage
from mailvia.outbox.ports import Credentials
from mailvia.transport.guard import REFUSED_MESSAGE, IPAddress, OutboundGuard
from mailvia.transport.pool import scrubbed
from mailvia.transport.tls import (
    client_context,
    find_tls_error,
    is_closed_during_handshake,
    tls_reply,
)

BUDGET = 10.0
_QUIT_TIMEOUT = 1.0
# OpenSSL X509_V_ERR_* codes (openssl/x509_vfy.h) behind ssl.SSLCertVerificationError.
_NAME_MISMATCH = frozenset({62, 64})  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
_EXPIRED = frozenset({9, 10})  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED
_UNTRUSTED = frozenset({2, 18, 19, 20, 21})  # self-signed or an unknown issuer


class _StepFailed(Exception):
    """A step that fails without an exception of its own (something the server lacks)."""

    def __init__(self, failure: Failure, detail: str, reply: str | None = None) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail
        self.reply = reply


@dataclass
class _Run:
    """One probe in progress: the steps so far, the step running, the open connection."""

    channel: Channel
    credentials: Credentials | None
    budget: float
    deadline: float  # on the event loop's clock
    steps: list[ProbeStep] = field(default_factory=list)
    current: Step = Step.RESOLVE
    where: str = ""  # "connected to ADDRESS port N"
    smtp: SMTP | None = None

    def left(self) -> float:
        """Seconds left of the budget (a little above zero, so a late call fails fast)."""
        return max(0.01, self.deadline - asyncio.get_running_loop().time())

    def passed(self, step: Step, detail: str, reply: str | None = None) -> None:
        self.steps.append(ProbeStep(str(step), True, detail, reply))


class SmtpProber:
    """Tests a channel step by step (the Prober port). `guard` vets every address, as for
    delivery; `helo_name` is the EHLO name (default: this host's FQDN)."""

    def __init__(self, guard: OutboundGuard, helo_name: str | None = None) -> None:
        self.guard = guard
        self._helo_name = helo_name

    async def probe(
        self,
        channel: Channel,
        credentials: Credentials | None,
        *,
        to: str | None = None,
        mail_from: str | None = None,
        content: bytes | None = None,
        timeout: float = BUDGET,
    ) -> ProbeReport:
        """Run the steps within `timeout` seconds in all; with `to`, send a small test message
        (`content`, or one made here) from `mail_from`. Never raises for a failure of the
        server, the network or TLS: the report says which step failed and why."""
        loop = asyncio.get_running_loop()
        timeouts = Timeouts(*(timeout,) * len(dataclasses.fields(Timeouts)))
        run = _Run(
            dataclasses.replace(channel, timeouts=timeouts),
            credentials,
            timeout,
            loop.time() + timeout,
        )
        try:
            async with asyncio.timeout_at(run.deadline):
                await self._steps(run, to, mail_from, content)
        except Exception as error:
            failed = _failed_steps(run, error)
            if failed is None:
                raise  # not a failure of the server, the network or TLS: a bug
            run.steps.extend(failed)
        finally:
            await _close(run)
        return ProbeReport.of(_scrubbed(run.steps, credentials))

    async def _steps(
        self, run: _Run, to: str | None, mail_from: str | None, content: bytes | None
    ) -> None:
        addresses = await self._resolve(run)
        await self._connect(run, addresses)
        await _tls(run)
        await _ehlo(run)
        await _auth(run)
        if to is not None:
            await _message(run, to, mail_from, content)

    async def _resolve(self, run: _Run) -> list[IPAddress]:
        channel = run.channel
        addresses = await self.guard.resolve(channel.host, channel.port)
        if channel.kind is not Kind.POOL:  # the pool is the operator's own relay
            self.guard.check(addresses)
        found = ", ".join(str(a) for a in addresses)
        run.passed(Step.RESOLVE, f"{channel.host} resolves to {found}")
        return addresses

    async def _connect(self, run: _Run, addresses: Sequence[IPAddress]) -> None:
        """TCP to a checked address, then (implicit TLS) the handshake, then the greeting."""
        run.current = Step.CONNECT
        channel = run.channel
        context = None
        if channel.security is not Security.NONE:
            context = await asyncio.to_thread(client_context, channel.ca_pem)
        sock = await self._open(run, addresses)
        helo = await self._helo()
        try:
            run.smtp = SMTP(
                hostname=channel.host,  # the TLS server name and the certificate's host
                sock=sock,
                local_hostname=helo,
                use_tls=channel.security is Security.TLS,
                start_tls=False,  # STARTTLS is sent (and required) by _tls below
                tls_context=context,
                timeout=run.left(),
            )
        except BaseException:
            sock.close()
            raise
        greeting = await run.smtp.connect(timeout=run.left())
        run.passed(Step.CONNECT, run.where, _first_line(greeting))

    async def _open(self, run: _Run, addresses: Sequence[IPAddress]) -> socket.socket:
        """A socket connected to the first checked address that answers (each is an address
        literal, so the guard neither resolves nor lets a second DNS answer in)."""
        port, check = run.channel.port, run.channel.kind is not Kind.POOL
        error: OSError = OSError(f"no address to connect to on port {port}")
        for address in addresses:
            try:
                sock = await self.guard.connect(str(address), port, timeout=run.left(), check=check)
            except TimeoutError:
                raise
            except OSError as exc:
                error = exc
                continue
            run.where = f"connected to {address} port {port}"
            return sock
        raise error

    async def _helo(self) -> str:
        if self._helo_name is None:
            name = await asyncio.to_thread(socket.getfqdn)
            usable = name.isascii() and name.strip() and not any(c.isspace() for c in name)
            self._helo_name = name if usable else "localhost"
        return self._helo_name


def _smtp(run: _Run) -> SMTP:
    if run.smtp is None:
        raise RuntimeError("no connection")  # a bug: the steps run in order
    return run.smtp


async def _tls(run: _Run) -> None:
    channel, smtp = run.channel, _smtp(run)
    if channel.security is Security.NONE:
        run.passed(Step.TLS, "skipped: security none sends in clear (allowed networks only)")
        return
    reply = None
    if channel.security is Security.STARTTLS:
        run.current = Step.EHLO
        ehlo = await smtp.ehlo(timeout=run.left())
        run.current = Step.TLS
        if not smtp.supports_extension("starttls"):
            detail = "the server does not offer STARTTLS"
            raise _StepFailed(Failure.NO_STARTTLS, detail, _first_line(ehlo))
        reply = _first_line(await smtp.starttls(server_hostname=channel.host, timeout=run.left()))
    run.current = Step.TLS
    run.passed(Step.TLS, describe_tls(smtp.get_transport_info("ssl_object")), reply)


async def _ehlo(run: _Run) -> None:
    run.current = Step.EHLO
    smtp = _smtp(run)
    response = await smtp.ehlo(timeout=run.left())  # after STARTTLS: forget what came before
    extensions = ", ".join(
        f"{name.upper()} {params}".strip() for name, params in smtp.esmtp_extensions.items()
    )
    run.passed(Step.EHLO, f"extensions: {extensions or 'none'}", _first_line(response))


async def _auth(run: _Run) -> None:
    run.current = Step.AUTH
    channel, smtp, credentials = run.channel, _smtp(run), run.credentials
    if channel.auth is Auth.NONE:
        run.passed(Step.AUTH, "skipped: the channel sends without signing in (auth none)")
        return
    if credentials is None:
        raise _StepFailed(Failure.NO_CREDENTIALS, "no credentials are stored for this channel")
    if smtp.get_transport_info("sslcontext") is None:
        raise _StepFailed(Failure.NO_STARTTLS, "credentials are never sent without TLS")
    mechanism, offered = str(channel.auth), smtp.server_auth_methods
    if not offered:
        raise _StepFailed(Failure.AUTH_NOT_OFFERED, "the server does not offer AUTH")
    if mechanism not in offered:
        detail = f"the server offers {' '.join(offered).upper()}, not {mechanism.upper()}"
        raise _StepFailed(Failure.MECHANISM_NOT_OFFERED, detail)
    user, secret, timeout = credentials.username, credentials.password, run.left()
    if channel.auth is Auth.PLAIN:
        response = await smtp.auth_plain(user, secret, timeout=timeout)
    elif channel.auth is Auth.LOGIN:
        response = await smtp.auth_login(user, secret, timeout=timeout)
    else:  # XOAUTH2: the caller passes a fresh access token as the password
        response = await smtp.auth_xoauth2(user, secret, timeout=timeout)
    run.passed(Step.AUTH, f"signed in as {user} with {mechanism.upper()}", _first_line(response))


async def _message(run: _Run, to: str, mail_from: str | None, content: bytes | None) -> None:
    run.current = Step.MESSAGE
    smtp = _smtp(run)
    sender = mail_from if mail_from is not None else _default_sender(run)
    await smtp.mail(sender, timeout=run.left())
    await smtp.rcpt(to, timeout=run.left())
    response = await smtp.data(content or sample_message(sender, to), timeout=run.left())
    detail = f"test message from {sender or '<>'} to {to} accepted"
    run.passed(Step.MESSAGE, detail, _first_line(response))


def _default_sender(run: _Run) -> str:
    if run.channel.address:
        return run.channel.address
    username = run.credentials.username if run.credentials else ""
    return username if "@" in username else ""


def sample_message(sender: str, to: str) -> bytes:
    """A small plain-text test message."""
    domain = (sender or to).rpartition("@")[2] or "mailvia.invalid"
    lines = (
        f"From: {sender or to}",
        f"To: {to}",
        "Subject: mailvia test message",
        f"Date: {formatdate(localtime=False)}",
        f"Message-ID: {make_msgid('mailvia-test', domain=domain)}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "This is a test message from mailvia: the channel works.",
        "",
    )
    return "\r\n".join(lines).encode("ascii", "replace")


def describe_tls(ssl_object: Any) -> str:
    """`TLSv1.3 (cipher); certificate CN=... (DNS:..., IP:...), valid until DATE (N days)`."""
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return "TLS established"
    cipher = ssl_object.cipher()
    version = f"{ssl_object.version()} ({cipher[0]})" if cipher else str(ssl_object.version())
    return f"{version}; {describe_certificate(ssl_object.getpeercert() or {}, time.time())}"


def _first_line(response: SMTPResponse) -> str:
    line = response.message.split("\n", 1)[0].strip()
    return f"{response.code} {line}".strip()


def _failed_steps(run: _Run, error: Exception) -> list[ProbeStep] | None:
    """The step(s) an exception ends the probe with; None when it is not a probe failure."""
    tls = find_tls_error(error)
    if tls is not None and not is_closed_during_handshake(tls):
        steps = []
        if run.current is Step.CONNECT and run.where:  # implicit TLS: connected, no handshake
            steps.append(ProbeStep(str(Step.CONNECT), True, run.where))
        return [*steps, _tls_failure(tls)]
    step = _failure(run, error)
    return None if step is None else [step]


def _tls_failure(error: ssl.SSLError) -> ProbeStep:
    detail = tls_reply(error).text.removeprefix("mailvia: ")
    kind = Failure.TLS_FAILED
    if isinstance(error, ssl.SSLCertVerificationError):
        code = error.verify_code
        if code in _NAME_MISMATCH:
            kind = Failure.NAME_MISMATCH
        elif code in _EXPIRED:
            kind = Failure.EXPIRED_CERTIFICATE
        elif code in _UNTRUSTED:
            kind = Failure.UNTRUSTED_CERTIFICATE
    return ProbeStep(str(Step.TLS), False, detail, None, hint_for(failure=kind))


def _failure(run: _Run, error: Exception) -> ProbeStep | None:
    step, channel = run.current, run.channel
    if isinstance(error, _StepFailed):
        return _failed(step, error.failure, error.detail, error.reply)
    if isinstance(error, OutboundRefused):  # one message, whatever the reason or the port
        return _failed(step, Failure.REFUSED_TARGET, REFUSED_MESSAGE)
    if isinstance(error, SMTPResponseException) and 400 <= error.code < 600:
        reply = Reply.parse(error.code, error.message)
        return ProbeStep(str(step), False, REFUSED_BY_SERVER[step], str(reply), hint_for(reply))
    if isinstance(error, socket.gaierror):
        return _failed(step, Failure.NOT_RESOLVED, f"{channel.host} does not resolve")
    if isinstance(error, TimeoutError):
        detail = f"no answer within the {run.budget:g} s budget"
        return _failed(step, Failure.TIMEOUT, detail)
    if isinstance(error, ConnectionRefusedError):
        return _failed(
            step, Failure.CONNECTION_REFUSED, f"connection refused on port {channel.port}"
        )
    if isinstance(error, OSError | SMTPException):
        return _failed(step, Failure.CONNECTION_LOST, "the server closed the connection")
    return None


def _failed(step: Step, failure: Failure, detail: str, reply: str | None = None) -> ProbeStep:
    return ProbeStep(str(step), False, detail, reply, hint_for(failure=failure))


async def _close(run: _Run) -> None:
    """QUIT politely after a passing probe (within the budget); otherwise just close."""
    smtp = run.smtp
    if smtp is None:
        return
    left = run.deadline - asyncio.get_running_loop().time()
    passed = all(step.ok for step in run.steps)
    if passed and smtp.is_connected and left > 0.05:
        with contextlib.suppress(SMTPException, OSError, TimeoutError):
            await smtp.quit(timeout=min(_QUIT_TIMEOUT, left))
    smtp.close()


def _clean(text: str, credentials: Credentials) -> str:
    # pool.scrubbed knows every form the password takes on the wire (plain, PLAIN, LOGIN,
    # XOAUTH2); it works on a result, so the text rides in one.
    result = scrubbed(TransactionResult(Stage.AUTH, Reply(0, None, text)), credentials)
    return result.reply.text if result.reply is not None else text


def _scrubbed(steps: list[ProbeStep], credentials: Credentials | None) -> list[ProbeStep]:
    if credentials is None or not credentials.password:
        return steps
    return [
        dataclasses.replace(
            step,
            detail=_clean(step.detail, credentials),
            reply=_clean(step.reply, credentials) if step.reply is not None else None,
        )
        for step in steps
    ]
