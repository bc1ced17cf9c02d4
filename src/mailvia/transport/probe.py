"""Test connection: the code that delivers, run once on a one-off connection, step by step.

`Prober.probe` runs session.py's `open_session` (resolve, connect, TLS, EHLO, AUTH) and, with
`to`, one transaction (without, MAIL FROM `mail_from` then RSET: the `sender` step), or for a
channel sending through a provider's HTTP API that adapter's request (apis.py), with an
observer that records each step with the server's own reply; the first failing step ends the
probe, with a hint from `domain/probe.py`. It never uses the pool.
The whole probe, DNS and the closing QUIT included, fits in one budget (10 s by default).

So the rules of delivery hold here by construction: the outbound address guard checks every
address the host resolves to, and the TCP connection goes to a checked address while TLS
verifies the certificate for the host name; TLS always verifies (tls.py); credentials never go
over a connection without TLS; no detail or reply carries the password or token, plain or
AUTH-encoded. A target the guard refuses gets one generic message, whatever is (or is not)
listening there.

Side effects: DNS look-ups and one SMTP connection to the channel's server (or one HTTPS
request to the provider's API); with `to`, one test message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl
from dataclasses import dataclass, field
from email.utils import formatdate, make_msgid

from aiosmtplib import SMTPException, SMTPResponseException

from mailvia.domain.channel import Channel, Timeouts, TransportKind
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.errors import OutboundRefused
from mailvia.domain.message import Envelope
from mailvia.domain.probe import (
    REFUSED_BY_SERVER,
    ProbeFailure,
    ProbeReport,
    ProbeStep,
    Step,
    hint_for,
    sender_hint,
)
from mailvia.domain.replies import Reply, Stage, network_failure
from mailvia.outbox.ports import Credentials
from mailvia.transport.apis import MailApiTransport
from mailvia.transport.guard import REFUSED_MESSAGE, OutboundGuard
from mailvia.transport.pool import scrubbed
from mailvia.transport.session import Session, SessionFailed, open_session
from mailvia.transport.smtp_errors import StepRefused
from mailvia.transport.tls import find_tls_error, is_closed_during_handshake, tls_reply

BUDGET = 10.0
_QUIT_TIMEOUT = 1.0
# OpenSSL X509_V_ERR_* codes (openssl/x509_vfy.h) behind ssl.SSLCertVerificationError.
_NAME_MISMATCH = frozenset({62, 64})  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
_EXPIRED = frozenset({9, 10})  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED
_UNTRUSTED = frozenset({2, 18, 19, 20, 21})  # self-signed or an unknown issuer


@dataclass
class StepRecorder:
    """The probe's observer: the steps that passed, the step running, and the step that
    failed (from the exception that ended it, mapped to a hint)."""

    channel: Channel
    budget: float
    steps: list[ProbeStep] = field(default_factory=list)
    current: Step = Step.RESOLVE
    where: str = ""  # "connected to ADDRESS port N"
    failure: list[ProbeStep] = field(default_factory=list)

    def begin(self, step: Step, detail: str = "") -> None:
        self.current = step
        if step is Step.CONNECT and detail:
            self.where = detail

    def passed(self, step: Step, detail: str, reply: str | None = None) -> None:
        self.steps.append(ProbeStep(str(step), True, detail, reply))

    def failed(self, error: BaseException) -> None:
        if not self.failure and isinstance(error, Exception):
            self.failure = _failed_steps(self, error) or []

    def timed_out(self) -> None:
        detail = f"no answer within the {self.budget:g} s budget"
        self.failure = [_failed(self.current, ProbeFailure.TIMEOUT, detail)]

    def refused(self, reply: Reply | None) -> None:
        """A failure that came as a value (a refused recipient, an API's answer)."""
        if not self.failure and reply is not None:
            step = self.current
            self.failure = [
                ProbeStep(
                    str(step),
                    False,
                    REFUSED_BY_SERVER[step],
                    str(reply),
                    hint_for(reply, channel=self.channel),
                )
            ]

    def report(
        self, credentials: Credentials | None, delivery: TransactionResult | None
    ) -> ProbeReport:
        return ProbeReport.of(_scrubbed([*self.steps, *self.failure], credentials), delivery)


class Prober:
    """Tests a channel step by step with the code that delivers (the Prober port). `guard`
    vets every address, as for delivery; `helo_name` is the EHLO name (default: this host's
    FQDN); `apis` sends a test message of an API mailbox."""

    def __init__(
        self,
        guard: OutboundGuard,
        helo_name: str | None = None,
        *,
        apis: MailApiTransport | None = None,
    ) -> None:
        self.guard = guard
        self.apis = apis
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
        (`content`, or one made here) from `mail_from`; without `to`, `mail_from` alone is
        tried as MAIL FROM then RSET (the `sender` step: nothing is sent). Never raises for a
        failure of the server, the network or TLS: the report says which step failed and why."""
        timeouts = Timeouts(*(timeout,) * len(dataclasses.fields(Timeouts)))
        channel = dataclasses.replace(channel, timeouts=timeouts)
        recorder = StepRecorder(channel, timeout)
        deadline = asyncio.get_running_loop().time() + timeout
        delivery: TransactionResult | None = None
        session: Session | None = None
        try:
            async with asyncio.timeout_at(deadline):
                if channel.transport is not TransportKind.SMTP:
                    delivery = await self._api(channel, credentials, recorder, to, content)
                else:
                    session = await open_session(
                        channel, credentials, guard=self.guard,
                        helo_name=await self._helo(), observer=recorder,
                    )  # fmt: skip
                    if to is not None:
                        delivery = await _message(session, recorder, to, mail_from, content)
                    elif mail_from is not None:
                        await _sender(session, recorder, mail_from)
        except SessionFailed as failed:
            delivery = failed.result if to is not None else None
            recorder.refused(failed.result.reply)
        except TimeoutError:
            recorder.timed_out()
            delivery = _late(recorder) if to is not None else None
        finally:
            await _close(session, recorder, deadline)
        return recorder.report(credentials, delivery)

    async def _api(
        self,
        channel: Channel,
        credentials: Credentials | None,
        recorder: StepRecorder,
        to: str | None,
        content: bytes | None,
    ) -> TransactionResult | None:
        """An API mailbox: nothing to try without a test message (its send-only scope does
        not allow reading the profile); with one, the adapter's one request."""
        if to is None or self.apis is None:
            return None
        sender = channel.address or ""
        envelope = Envelope(sender, (to,))
        result = await self.apis.send(
            channel, credentials, envelope, content or sample_message(sender, to), recorder
        )
        _settle_message(recorder, result, sender, to)
        return result

    async def _helo(self) -> str:
        if self._helo_name is None:
            name = await asyncio.to_thread(socket.getfqdn)
            usable = name.isascii() and name.strip() and not any(c.isspace() for c in name)
            self._helo_name = name if usable else "localhost"
        return self._helo_name


async def _message(
    session: Session, recorder: StepRecorder, to: str, mail_from: str | None, content: bytes | None
) -> TransactionResult:
    sender = mail_from if mail_from is not None else _default_sender(recorder.channel)
    envelope = Envelope(sender, (to,))
    result = await session.transact(envelope, content or sample_message(sender, to), recorder)
    _settle_message(recorder, result, sender, to)
    return result


async def _sender(session: Session, recorder: StepRecorder, sender: str) -> None:
    """The `sender` step: MAIL FROM `sender`, then RSET, so a server that refuses the
    channel's sender (and so every message) fails the test, not only the next delivery."""
    recorder.begin(Step.SENDER)
    try:
        reply = await session.try_sender(sender)
    except Exception as error:
        session.close()
        recorder.failed(error)
        if not recorder.failure:
            raise
        return
    if reply.positive:
        detail = f"the server takes mail from {sender or '<>'} (then RSET: nothing was sent)"
        recorder.passed(Step.SENDER, detail, str(reply))
        return
    refused = f"the server refused mail from {sender or '<>'}"
    recorder.failure = [ProbeStep(str(Step.SENDER), False, refused, str(reply), sender_hint(reply))]


def _settle_message(
    recorder: StepRecorder, result: TransactionResult, sender: str, to: str
) -> None:
    reply = result.reply
    if reply is not None and result.stage in (Stage.DATA_END, Stage.API) and _accepted(result):
        detail = f"test message from {sender or '<>'} to {to} accepted"
        recorder.passed(
            Step.MESSAGE, detail, str(reply) if result.stage is Stage.DATA_END else reply.text
        )
        return
    refused = [r for r in result.rcpt_replies.values() if not r.positive]
    recorder.refused(refused[0] if refused else reply)


def _accepted(result: TransactionResult) -> bool:
    reply = result.reply
    if reply is None:
        return False
    if result.stage is Stage.API:
        return reply.enhanced is None and 200 <= reply.code < 300
    return 200 <= reply.code < 300


def _late(recorder: StepRecorder) -> TransactionResult:
    """What a test message that ran out of time settles with (where it stood is unknown)."""
    return TransactionResult(Stage.DATA, network_failure("no answer within the test's budget"))


def _default_sender(channel: Channel) -> str:
    if channel.address:
        return channel.address
    username = channel.username or ""
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


def _failed_steps(recorder: StepRecorder, error: Exception) -> list[ProbeStep] | None:
    """The step(s) an exception ends the probe with; None when it is not a probe failure."""
    tls = find_tls_error(error)
    if tls is not None and not is_closed_during_handshake(tls):
        steps = []
        if recorder.current is Step.CONNECT and recorder.where:  # implicit TLS: no handshake
            steps.append(ProbeStep(str(Step.CONNECT), True, recorder.where))
        return [*steps, _tls_failure(tls)]
    step = _failure(recorder, error)
    return None if step is None else [step]


def _tls_failure(error: ssl.SSLError) -> ProbeStep:
    detail = tls_reply(error).text.removeprefix("mailvia: ")
    kind = ProbeFailure.TLS_FAILED
    if isinstance(error, ssl.SSLCertVerificationError):
        code = error.verify_code
        if code in _NAME_MISMATCH:
            kind = ProbeFailure.NAME_MISMATCH
        elif code in _EXPIRED:
            kind = ProbeFailure.EXPIRED_CERTIFICATE
        elif code in _UNTRUSTED:
            kind = ProbeFailure.UNTRUSTED_CERTIFICATE
    return ProbeStep(str(Step.TLS), False, detail, None, hint_for(failure=kind))


def _failure(recorder: StepRecorder, error: Exception) -> ProbeStep | None:
    step, channel = recorder.current, recorder.channel
    if isinstance(error, StepRefused):
        if error.kind is None:
            hint = hint_for(error.reply, channel=channel)
            return ProbeStep(str(step), False, error.detail, None, hint)
        return _failed(step, error.kind, error.detail, error.server_reply)
    if isinstance(error, OutboundRefused):  # one message, whatever the reason or the port
        return _failed(step, ProbeFailure.REFUSED_TARGET, REFUSED_MESSAGE)
    if isinstance(error, SMTPResponseException) and 400 <= error.code < 600:
        reply = Reply.parse(error.code, error.message)
        hint = hint_for(reply, channel=channel)
        return ProbeStep(str(step), False, REFUSED_BY_SERVER[step], str(reply), hint)
    if isinstance(error, socket.gaierror):
        return _failed(step, ProbeFailure.NOT_RESOLVED, f"{channel.host} does not resolve")
    if isinstance(error, TimeoutError):
        detail = f"no answer within the {recorder.budget:g} s budget"
        return _failed(step, ProbeFailure.TIMEOUT, detail)
    if isinstance(error, ConnectionRefusedError):
        detail = f"connection refused on port {channel.port}"
        return _failed(step, ProbeFailure.CONNECTION_REFUSED, detail)
    if isinstance(error, OSError | SMTPException):
        return _failed(step, ProbeFailure.CONNECTION_LOST, "the server closed the connection")
    return None


def _failed(step: Step, failure: ProbeFailure, detail: str, reply: str | None = None) -> ProbeStep:
    return ProbeStep(str(step), False, detail, reply, hint_for(failure=failure))


async def _close(session: Session | None, recorder: StepRecorder, deadline: float) -> None:
    """QUIT politely after a passing probe (within the budget); otherwise just close."""
    if session is None:
        return
    left = deadline - asyncio.get_running_loop().time()
    if not recorder.failure and session.usable and left > 0.05:
        with contextlib.suppress(SMTPException, OSError, TimeoutError):
            async with asyncio.timeout(min(_QUIT_TIMEOUT, left)):  # not wait_for: replyqueue
                await session.aclose()
    session.close()


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


SmtpProber = Prober  # the name this adapter had before it also tested API mailboxes
