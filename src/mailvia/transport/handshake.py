"""Opening an SMTP connection to a channel's server, step by step: resolve and connect
(every address checked by the guard), TLS (implicit, or mandatory STARTTLS sent by this
module), EHLO, AUTH. Each step is told to the progress's observer (observe.py) and records
the stage a failure is mapped with (session.py's `open_session` maps it).

Credentials are never sent on a connection without TLS, nor with a mechanism the server does
not offer.

Side effects: network I/O to the channel's server.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass, field

from aiosmtplib import (
    SMTP,
    SMTPConnectError,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from mailvia.domain.channel import Auth, Channel, Kind, Security
from mailvia.domain.probe import ProbeFailure, Step
from mailvia.domain.replies import Reply, Stage, tls_refused
from mailvia.outbox.ports import Credentials
from mailvia.transport.guard import OutboundGuard
from mailvia.transport.observe import NO_OBSERVER, Observer
from mailvia.transport.replyqueue import Client
from mailvia.transport.smtp_errors import NO_CREDENTIALS, StepRefused, first_line
from mailvia.transport.tls import client_context, describe_tls


@dataclass
class Progress:
    """How far a session or transaction got, for mapping the failure that stops it."""

    stage: Stage
    observer: Observer = NO_OBSERVER
    after_dot: bool = False
    rcpt_replies: dict[str, Reply] = field(default_factory=dict)
    ehlo: str | None = None  # the last EHLO reply's first line
    where: str = ""  # "connected to ADDRESS port N"

    def step(self, stage: Stage, step: Step, detail: str = "") -> None:
        self.stage = stage
        self.observer.begin(step, detail)


async def connect(
    channel: Channel, guard: OutboundGuard, progress: Progress
) -> tuple[socket.socket, ssl.SSLContext | None]:
    """Resolve the host, check every address (the pool, the operator's relay, skips the
    check) and open TCP to the first checked address that answers, within the connect
    timeout; the TLS context is made on the way (a bad CA fails here)."""
    host, port, check = channel.host, channel.port, channel.kind is not Kind.POOL
    progress.step(Stage.CONNECT, Step.RESOLVE)
    async with asyncio.timeout(channel.timeouts.connect):
        addresses = await guard.resolve(host, port)
        if check:
            guard.check(addresses)
        found = ", ".join(str(a) for a in addresses)
        progress.observer.passed(Step.RESOLVE, f"{host} resolves to {found}")
        progress.step(Stage.CONNECT, Step.CONNECT)
        context = None
        if channel.security is not Security.NONE:
            context = await asyncio.to_thread(client_context, channel.ca_pem)
        sock, address = await guard.connect_first(addresses, port)
    progress.where = f"connected to {address} port {port}"
    progress.step(Stage.CONNECT, Step.CONNECT, progress.where)
    return sock, context


def client(
    channel: Channel, sock: socket.socket, helo_name: str, context: ssl.SSLContext | None
) -> SMTP:
    """An aiosmtplib client over the checked socket (reading replies with a ReplyQueue, so
    commands can be pipelined); it takes the socket over."""
    try:
        return Client(
            hostname=channel.host,  # the TLS server name and the certificate's host
            sock=sock,
            local_hostname=helo_name,
            use_tls=channel.security is Security.TLS,
            start_tls=False,  # STARTTLS is sent (and required) by `secure` below
            tls_context=context,
            timeout=channel.timeouts.command,
        )
    except BaseException:
        sock.close()
        raise


def _extensions(smtp: SMTP) -> str:
    found = ", ".join(
        f"{name.upper()} {params}".strip() for name, params in smtp.esmtp_extensions.items()
    )
    return f"extensions: {found or 'none'}"


async def greet(smtp: SMTP, channel: Channel, progress: Progress) -> None:
    """Set up the socket (the TLS handshake for implicit TLS), read the greeting, EHLO."""
    observer = progress.observer
    progress.stage = Stage.CONNECT if channel.security is Security.TLS else Stage.GREETING
    try:
        greeting = await smtp.connect(timeout=channel.timeouts.greeting)
    except SMTPConnectError as error:
        # Connected (and handshaken), then the greeting was refused, lost or late.
        cause = error.__cause__
        if isinstance(error, SMTPResponseException) or isinstance(
            cause, SMTPServerDisconnected | SMTPTimeoutError
        ):
            progress.stage = Stage.GREETING
        raise
    observer.passed(Step.CONNECT, progress.where, first_line(greeting))
    if channel.security is Security.TLS:
        observer.passed(Step.TLS, describe_tls(smtp.get_transport_info("ssl_object")))
    elif channel.security is Security.NONE:
        observer.passed(Step.TLS, "skipped: security none sends in clear (allowed networks only)")
    progress.step(Stage.EHLO, Step.EHLO)
    response = await smtp.ehlo(timeout=channel.timeouts.command)
    progress.ehlo = first_line(response)
    if channel.security is not Security.STARTTLS:
        observer.passed(Step.EHLO, _extensions(smtp), progress.ehlo)


async def secure(smtp: SMTP, channel: Channel, progress: Progress) -> None:
    if channel.security is not Security.STARTTLS:
        return
    progress.step(Stage.STARTTLS, Step.TLS)
    if not smtp.supports_extension("starttls"):
        raise StepRefused(
            tls_refused("the server does not offer STARTTLS"),
            ProbeFailure.NO_STARTTLS,
            server_reply=progress.ehlo,
        )
    response = await smtp.starttls(server_hostname=channel.host, timeout=channel.timeouts.command)
    progress.observer.passed(
        Step.TLS, describe_tls(smtp.get_transport_info("ssl_object")), first_line(response)
    )
    progress.step(Stage.EHLO, Step.EHLO)  # RFC 3207 §4.2: forget what was learnt before TLS
    response = await smtp.ehlo(timeout=channel.timeouts.command)
    progress.observer.passed(Step.EHLO, _extensions(smtp), first_line(response))


async def authenticate(
    smtp: SMTP, channel: Channel, credentials: Credentials | None, progress: Progress
) -> None:
    progress.step(Stage.AUTH, Step.AUTH)
    if channel.auth is Auth.NONE:
        detail = "skipped: the channel sends without signing in (auth none)"
        progress.observer.passed(Step.AUTH, detail)
        return
    _check_auth(smtp, channel, credentials)
    assert credentials is not None  # _check_auth refused the session otherwise
    user, secret, timeout = credentials.username, credentials.password, channel.timeouts.command
    if channel.auth is Auth.PLAIN:
        response = await smtp.auth_plain(user, secret, timeout=timeout)
    elif channel.auth is Auth.LOGIN:
        response = await smtp.auth_login(user, secret, timeout=timeout)
    else:  # XOAUTH2: the caller passes a fresh access token as the password
        response = await smtp.auth_xoauth2(user, secret, timeout=timeout)
    mechanism = str(channel.auth).upper()
    detail = f"signed in as {user} with {mechanism}"
    progress.observer.passed(Step.AUTH, detail, first_line(response))


def _check_auth(smtp: SMTP, channel: Channel, credentials: Credentials | None) -> None:
    """Refuse to sign in without credentials, without TLS, or with a mechanism the server
    does not offer (RFC 4954 §4: 504 5.5.4 for an unsupported mechanism)."""
    if credentials is None:
        raise StepRefused(NO_CREDENTIALS, ProbeFailure.NO_CREDENTIALS)
    if smtp.get_transport_info("sslcontext") is None:
        reply = tls_refused("credentials are never sent without TLS")
        raise StepRefused(reply, ProbeFailure.NO_STARTTLS)
    mechanism, offered = str(channel.auth), smtp.server_auth_methods
    if not offered:
        reply = Reply(504, "5.5.4", "mailvia: the server does not offer AUTH")
        raise StepRefused(reply, ProbeFailure.AUTH_NOT_OFFERED)
    if mechanism not in offered:
        detail = f"the server offers {' '.join(offered).upper()}, not {mechanism.upper()}"
        raise StepRefused(
            Reply(504, "5.5.4", f"mailvia: {detail}"), ProbeFailure.MECHANISM_NOT_OFFERED
        )
