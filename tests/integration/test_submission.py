"""SMTP submission against a real listener on 127.0.0.1:0, with the services of a `World`.

Clients are real: stdlib smtplib (run in a worker thread, since it blocks and the server runs
on the test's event loop) and raw sockets for smuggling and STARTTLS injection. Delivery goes
to the project's test SMTP server through `dispatcher.run_once`. Failed logins are timed on a
fake clock whose `sleep` only records the delay, so lockouts take no real time.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailvia.domain.channel import Auth, ChannelState, Scope, Security
from mailvia.domain.errors import StoreUnavailable
from mailvia.domain.message import State
from mailvia.domain.signins import SUBMISSION, FailedSignIns
from mailvia.domain.tenancy import User
from mailvia.ingress.smtp.server import SubmissionServer
from mailvia.outbox.channels import ChannelSpec
from mailvia.outbox.receipts import Receipt
from mailvia.outbox.records import MessageFilter
from mailvia.outbox.services import Services
from mailvia.outbox.submit import EachPlan, Submission, Submitter
from mailvia.testserver import TestServer
from support.world import Certs, World, make_certs

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")

JANE = "jane@acme.test"
BOB = "bob@example.com"
HOSTNAME = "submit.test"
QUEUED = re.compile(r"^2\.0\.0 Ok: queued as (msg_[0-9a-z]+)$")
SMUGGLED = (
    b"MAIL FROM:<jane@acme.test>\r\nRCPT TO:<eve@example.com>\r\nDATA\r\n"
    b"From: jane@acme.test\r\nTo: eve@example.com\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"
)


def message(
    subject: str = "hello", *, sender: str = "Jane <jane@acme.test>", body: bytes = b"hi"
) -> bytes:
    return (
        f"From: {sender}\r\nTo: Bob <{BOB}>\r\nSubject: {subject}\r\n\r\n".encode() + body + b"\r\n"
    )


class FakeClock:
    """The clock of failed logins; `sleep` records each wait and moves the clock on."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Rig:
    """A World, certificates, a token for jane, and submission servers started on demand."""

    def __init__(self, world: World, certs: Certs) -> None:
        self.world = world
        self.certs = certs
        self.clock = FakeClock()
        self.token = world.services.tokens.create(JANE, "smtp", time.time())
        self.servers: list[SubmissionServer] = []
        self.context = ssl.create_default_context()
        self.context.verify_flags |= ssl.VERIFY_X509_STRICT
        certs.ca.configure_trust(self.context)

    async def start(
        self, *, implicit_tls: bool = False, services: Services | None = None, **kw: Any
    ) -> int:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(self.certs.cert, self.certs.key)
        server = SubmissionServer(
            services or self.world.services,
            tls_context=server_context,
            signins=FailedSignIns(SUBMISSION),
            monotonic=self.clock,
            sleep=self.clock.sleep,
            hostname=HOSTNAME,
            **kw,
        )
        listener = await server.start(host="127.0.0.1", port=0, implicit_tls=implicit_tls)
        self.servers.append(server)
        return int(listener.sockets[0].getsockname()[1])

    async def client(
        self,
        port: int,
        action: Callable[[smtplib.SMTP], T],
        *,
        implicit_tls: bool = False,
        starttls: bool = True,
        threads: Executor | None = None,
        source: str = "127.0.0.1",
    ) -> T:
        """Connect with smtplib from `source` (any loopback address: Linux routes 127/8 to lo;
        STARTTLS unless told not to), run `action` in a thread (of `threads`: many clients at
        once must not take the server's own worker threads)."""

        def run() -> T:
            client: smtplib.SMTP
            at = (source, 0)
            if implicit_tls:
                client = smtplib.SMTP_SSL(
                    "127.0.0.1", port, context=self.context, timeout=10, source_address=at
                )
            else:
                client = smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=at)
            with client:
                client.ehlo("client.test")
                if starttls and not implicit_tls:
                    client.starttls(context=self.context)
                    client.ehlo("client.test")
                return action(client)

        return await asyncio.get_running_loop().run_in_executor(threads, run)

    def messages(self, user: User | None = None) -> list[Any]:
        org = (user or self.world.jane).organization_id
        return self.world.store.list_messages(MessageFilter(org, limit=500))[0]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    world = World(tmp_path / "data")
    rig = Rig(world, make_certs(tmp_path / "certs"))
    yield rig
    for server in rig.servers:
        await server.stop()
    await world.close()


def auth_plain(login: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{login}\0{password}".encode()).decode()


def send(
    client: smtplib.SMTP, content: bytes, *, mail_from: str = JANE, to: Sequence[str] = (BOB,)
) -> tuple[int, str]:
    """MAIL, RCPT, DATA; the first reply that is not 250 (or DATA's final reply)."""
    code, text = client.mail(mail_from)
    for rcpt in to if code == 250 else ():
        code, text = client.rcpt(rcpt)
        if code != 250:
            break
    if code == 250:
        code, text = client.data(content)
    return code, text.decode()


def login_and_send(token: str, content: bytes, **kw: Any) -> Callable[[smtplib.SMTP], Any]:
    def action(client: smtplib.SMTP) -> tuple[int, str]:
        client.login(JANE, token)
        return send(client, content, **kw)

    return action


def add_channel(rig: Rig, port: int = 9) -> None:
    """An address channel for jane (port 9: nothing is delivered in tests that use it)."""
    rig.world.channel(port, certs=rig.certs)


# --- accepted mail --------------------------------------------------------------------------

RAW = (
    b"From: Jane <jane@acme.test>\r\n"
    b"To: Bob <bob@example.com>\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
    b"Message-ID: <first@acme.test>\r\n"
    b"X-Client-Header:   kept   as sent\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"caf\xc3\xa9\r\n"
    b".a line that starts with a dot\r\n"
    b"..and one with two\r\n"
    b"\r\n"
    b"   trailing spaces   \r\n"
    b"-- \r\n"
    b"Jane\r\n"
)


async def test_starttls_auth_commits_before_250_and_the_client_bytes_arrive_intact(
    rig: Rig, tmp_path: Path
) -> None:
    world = rig.world
    async with TestServer(
        tls_cert=rig.certs.cert, tls_key=rig.certs.key, auth={"jane": "secret"},
        maildir=tmp_path / "caught",
    ) as sink:  # fmt: skip
        world.channel(sink.port, certs=rig.certs)
        port = await rig.start()
        no_id = RAW.replace(b"Message-ID: <first@acme.test>\r\n", b"")

        def session(client: smtplib.SMTP) -> list[tuple[int, str, Any]]:
            assert "starttls" not in client.esmtp_features  # offered before the upgrade only
            assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
            assert client.esmtp_features["size"] == str(world.services.max_message_size)
            client.login(JANE, rig.token)
            results = []
            for content in (RAW, no_id):
                code, text = send(client, content, to=(BOB, "carol@example.net"))
                found = QUEUED.match(text)
                # Checked on receipt of the reply: the message is committed already.
                view = world.store.get_message(found.group(1)) if found else None
                results.append((code, text, view))
            return results

        results = await rig.client(port, session)
        for code, text, view in results:
            assert code == 250 and view is not None, text
            assert view.user_id == world.jane.id and view.envelope.mail_from == JANE
            assert view.envelope.rcpt_to == (BOB, "carol@example.net")
        assert await world.services.dispatcher.run_once(time.time) == 2
        got = sorted(await sink.wait_for(2), key=lambda e: len(e["content"]))
    first, second = (e["content"] for e in got)
    assert first == RAW  # byte for byte: nothing added, nothing re-encoded
    added, _, rest = second.partition(b"\r\n")
    assert rest == no_id and re.fullmatch(rb"Message-ID: <[^>\r\n]+@acme\.test>", added)
    assert all(e["rcpt_to"] == [BOB, "carol@example.net"] for e in got)


async def test_implicit_tls_port_accepts_a_login_and_a_message(rig: Rig) -> None:
    add_channel(rig)
    port = await rig.start(implicit_tls=True)

    def session(client: smtplib.SMTP) -> tuple[int, str]:
        assert "starttls" not in client.esmtp_features
        assert "PLAIN" in client.esmtp_features["auth"]
        return login_and_send(rig.token, message())(client)

    code, text = await rig.client(port, session, implicit_tls=True)
    assert code == 250 and QUEUED.match(text), text
    assert len(rig.messages()) == 1


async def test_held_mail_is_accepted_with_a_reply_that_says_it_is_held_and_why(
    rig: Rig,
) -> None:
    """250 (the message is committed, safe), but a client showing the reply tells the rep
    that the mail waits, on which channel and mailbox, and what sends it: as the API's
    `held` and its warning say."""
    channel = rig.world.channel(9, certs=rig.certs, name="Jane's Bo\u00eete")  # any text
    store, now = rig.world.store, time.time()
    store.set_channel_state(channel.id, ChannelState.DISCONNECTED, "535 5.7.8 bad login", now)
    port = await rig.start()
    code, text = await rig.client(port, login_and_send(rig.token, message("one")))
    held = re.fullmatch(r"2\.0\.0 Ok: held as (msg_[0-9a-z]+), not sent yet: (.*)", text)
    assert code == 250 and held, text
    assert store.get_message(held.group(1)).state is State.HELD
    assert held.group(2) == (
        "channel 'Jane's Bo?te' for jane@acme.test is disconnected: reconnect it in mailvia "
        "and it is sent then"
    )
    store.set_channel_state(channel.id, ChannelState.PAUSED, "paused by boss", now)
    code, text = await rig.client(port, login_and_send(rig.token, message("two")))
    assert code == 250 and text.endswith("is paused: it is sent when the channel is resumed")
    store.set_channel_state(channel.id, ChannelState.ACTIVE, None, now)
    code, text = await rig.client(port, login_and_send(rig.token, message("three")))
    assert code == 250 and QUEUED.match(text), text


async def test_mail_for_the_pool_paused_since_the_server_started_is_answered_held(
    tmp_path: Path,
) -> None:
    """Jane has no channel: her mail takes the shared pool, which the operator pauses (or the
    dispatcher disconnects) after the server started. The 250 says held, in words that send
    no rep to reconnect the operator's pool; resumed, queued."""
    relay = "smtp://pool-login:pool-pass@relay.example.net:2525?security=starttls"
    rig = Rig(World(tmp_path / "data", pool_relay=relay), make_certs(tmp_path / "certs"))
    try:
        store = rig.world.store
        port = await rig.start()
        code, text = await rig.client(port, login_and_send(rig.token, message("one")))
        assert code == 250 and QUEUED.match(text), text
        for state in (ChannelState.PAUSED, ChannelState.DISCONNECTED):
            store.set_channel_state("ch_pool", state, "421 4.7.0 acct-4711", time.time())
            code, text = await rig.client(port, login_and_send(rig.token, message(str(state))))
            held = re.fullmatch(r"2\.0\.0 Ok: held as (msg_[0-9a-z]+), not sent yet: (.*)", text)
            assert code == 250 and held, text
            assert store.get_message(held.group(1)).state is State.HELD
            assert held.group(2) == (
                f"channel 'shared pool' is {state}: it is the operator's to mend, and it is "
                "sent once the shared pool sends again"
            )
        store.set_channel_state("ch_pool", ChannelState.ACTIVE, None, time.time())
        code, text = await rig.client(port, login_and_send(rig.token, message("three")))
        assert code == 250 and QUEUED.match(text), text
    finally:
        for server in rig.servers:
            await server.stop()
        await rig.world.close()


# --- refusals -------------------------------------------------------------------------------


async def test_auth_before_starttls_is_refused_and_not_offered(rig: Rig) -> None:
    port = await rig.start()

    def session(client: smtplib.SMTP) -> tuple[int, bytes]:
        assert "auth" not in client.esmtp_features and "starttls" in client.esmtp_features
        return client.docmd("AUTH", auth_plain(JANE, rig.token))

    code, text = await rig.client(port, session, starttls=False)
    assert (code, text[:6]) == (538, b"5.7.11"), text


async def test_wrong_token_or_another_users_token_gives_535(rig: Rig) -> None:
    boss_token = rig.world.services.tokens.create("boss@acme.test", "x", time.time())
    port = await rig.start()

    def session(client: smtplib.SMTP) -> list[tuple[int, bytes]]:
        return [
            client.docmd("AUTH", auth_plain(JANE, "mv_not-a-token")),
            client.docmd("AUTH", auth_plain(JANE, boss_token)),  # a valid token, not jane's
            client.docmd("AUTH", auth_plain("nobody@acme.test", rig.token)),
        ]

    replies = await rig.client(port, session)
    assert [(code, text[:5]) for code, text in replies] == [(535, b"5.7.8")] * 3, replies
    # a mail client shows the text: the password it takes is an API token
    assert all(b"the password an API token" in text for _, text in replies), replies


async def test_a_login_is_the_same_login_whichever_spelling_of_its_domain(rig: Rig) -> None:
    """ada's login is stored as `ada@bücher.test`; typed with its A-labels it is hers too."""
    now = time.time()
    rig.world.services.tenancy.add_domain("acme", "bücher.test", now)
    rig.world.services.tenancy.create_user(
        "ada@xn--bcher-kva.test", org_name="acme", team_name="sales", admin=False, now=now
    )
    token = rig.world.services.tokens.create("ada@XN--BCHER-KVA.test", "x", now)
    port = await rig.start()

    def session(client: smtplib.SMTP) -> tuple[int, bytes]:
        return client.docmd("AUTH", auth_plain("ada@xn--bcher-kva.test", token))

    code, text = await rig.client(port, session)
    assert code == 235, text


async def test_auth_login_mechanism_works_too(rig: Rig) -> None:
    add_channel(rig)
    port = await rig.start()

    def session(client: smtplib.SMTP) -> tuple[int, str]:
        client.user, client.password = JANE, rig.token
        code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert code == 235
        again = client.docmd("AUTH", "PLAIN")  # a second AUTH: refused with its status code
        assert again == (503, b"5.5.1 Already authenticated"), again
        return send(client, message())

    code, text = await rig.client(port, session)
    assert code == 250, text


async def test_mail_without_auth_gives_530_with_or_without_tls(rig: Rig) -> None:
    port = await rig.start()
    for starttls in (False, True):
        code, text = await rig.client(port, lambda c: c.mail(JANE), starttls=starttls)
        assert (code, text) == (530, b"5.7.0 Authentication required")


async def test_envelope_sender_not_an_identity_gives_550_at_mail(rig: Rig) -> None:
    add_channel(rig)
    port = await rig.start()

    def session(client: smtplib.SMTP) -> list[tuple[int, bytes]]:
        client.login(JANE, rig.token)
        replies = []
        for sender in ("boss@acme.test", "someone@elsewhere.example", "not an address"):
            replies.append(client.mail(sender))
            client.rset()
        return replies

    replies = await rig.client(port, session)
    assert [(code, text[:5]) for code, text in replies] == [
        (550, b"5.7.1"),
        (550, b"5.7.1"),
        (501, b"5.1.7"),
    ], replies
    registry = rig.world.services.metrics.registry  # type: ignore[attr-defined]
    counted = {
        s.labels["reason"]: s.value
        for family in registry.collect()
        if family.name == "mailvia_intake_rejections"
        for s in family.samples
        if s.name.endswith("_total") and s.labels.get("intake") == "smtp"
    }
    assert counted == {"forbidden": 2.0, "invalid": 1.0}, counted


async def test_header_from_not_an_identity_gives_550_and_stores_nothing(rig: Rig) -> None:
    add_channel(rig)
    port = await rig.start()
    content = message(sender="Boss <boss@acme.test>")
    code, text = await rig.client(port, login_and_send(rig.token, content))
    assert code == 550 and text.startswith("5.7.1 boss@acme.test"), text
    assert rig.messages() == []


async def test_bad_recipient_gives_553_and_bad_content_554(rig: Rig) -> None:
    add_channel(rig)
    port = await rig.start()

    def session(client: smtplib.SMTP) -> list[tuple[int, str]]:
        client.login(JANE, rig.token)
        bad_rcpt = send(client, message(), to=("bob@-bad-.example",))
        client.rset()
        no_from = send(client, b"Subject: no From\r\n\r\nhi\r\n")
        return [bad_rcpt, no_from]

    (rcpt_code, rcpt_text), (data_code, data_text) = await rig.client(port, session)
    assert (rcpt_code, rcpt_text[:5]) == (553, "5.1.3"), rcpt_text
    assert (data_code, data_text[:5]) == (554, "5.6.0"), data_text
    assert rig.messages() == []


async def test_oversize_is_refused_with_552_at_mail_and_at_data(rig: Rig) -> None:
    add_channel(rig)
    small = dataclasses.replace(rig.world.services, max_message_size=2000)
    port = await rig.start(services=small)

    def session(client: smtplib.SMTP) -> list[tuple[int, str]]:
        assert client.esmtp_features["size"] == "2000"
        client.login(JANE, rig.token)
        declared = client.mail(JANE, ["SIZE=5000"])
        client.rset()
        sent = send(client, message(body=b"x" * 900 + b"\r\n" + b"y" * 900 + b"\r\n" + b"z" * 900))
        return [(declared[0], declared[1].decode()), sent]

    replies = await rig.client(port, session)
    assert [(code, text[:5]) for code, text in replies] == [(552, "5.3.4")] * 2, replies
    assert rig.messages() == []


class BrokenSubmitter(Submitter):
    def __init__(self, world: World, error: Exception) -> None:
        super().__init__(world.store, pool=world.services.pool)
        self.error = error

    def submit(
        self, sender: User, submissions: Sequence[Submission], *, now: float
    ) -> list[Receipt]:
        raise self.error

    def submit_each(
        self, items: Sequence[tuple[User, Submission] | Exception], *, now: float
    ) -> list[Receipt | Exception]:
        raise self.error

    def commit_each(self, plan: EachPlan) -> list[Receipt | Exception]:
        raise self.error


@pytest.mark.parametrize(
    "error", [StoreUnavailable("database is locked"), RuntimeError("secret internals")]
)
async def test_store_faults_and_bugs_are_451_without_internals(
    rig: Rig, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    add_channel(rig)
    services = rig.world.services
    broken = dataclasses.replace(services, submitter=BrokenSubmitter(rig.world, error))
    port = await rig.start(services=broken)

    def session(client: smtplib.SMTP) -> tuple[tuple[int, str], tuple[int, bytes]]:
        return login_and_send(rig.token, message())(client), client.noop()

    (code, text), noop = await rig.client(port, session)
    assert (code, text) == (451, "4.3.0 Temporarily unable to accept mail, try again later")
    assert noop[0] == 250  # the session goes on
    assert any(str(error) in r.getMessage() or r.exc_info for r in caplog.records)


# --- smuggling and injection (raw sockets) --------------------------------------------------


class Raw:
    """A line-level SMTP client on a socket; `starttls` upgrades it in place."""

    def __init__(self, port: int) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def command(self, line: bytes) -> list[bytes]:
        self.sock.sendall(line)
        return self.reply()

    def reply(self) -> list[bytes]:
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError(f"closed; so far {lines!r}")
                self.buffer += chunk
            line, _, self.buffer = self.buffer.partition(b"\r\n")
            lines.append(line)
            if line[3:4] != b"-":
                return lines

    def starttls(self, context: ssl.SSLContext) -> None:
        assert not self.buffer
        self.sock = context.wrap_socket(self.sock, server_hostname="127.0.0.1")

    def close(self) -> None:
        self.sock.close()


TRUST_LOCALHOST = ((ipaddress.ip_network("127.0.0.1/32"), "acme"),)


@pytest.mark.parametrize("separator", [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r.\r\n", b"\r\n.\n"])
async def test_smuggling_never_makes_two_messages_of_one(rig: Rig, separator: bytes) -> None:
    add_channel(rig)
    port = await rig.start(trusted_networks=TRUST_LOCALHOST)

    def session() -> list[list[bytes]]:
        raw = Raw(port)
        try:
            replies = [raw.reply(), raw.command(b"EHLO client.test\r\n")]
            for line in (b"MAIL FROM:<jane@acme.test>\r\n", b"RCPT TO:<bob@example.com>\r\n"):
                replies.append(raw.command(line))
            replies.append(raw.command(b"DATA\r\n"))
            payload = message("first").rstrip(b"\r\n") + separator + SMUGGLED + b".\r\n"
            replies.append(raw.command(payload))
            replies.append(raw.command(b"QUIT\r\n"))
            return replies
        finally:
            raw.close()

    replies = await asyncio.to_thread(session)
    codes = [r[-1][:3] for r in replies]
    assert codes == [b"220", b"250", b"250", b"250", b"354", b"554", b"221"], replies
    assert b"bare LF or CR" in replies[5][0]
    assert rig.messages() == []  # and so no second one either


async def test_a_clean_message_after_a_refused_smuggling_attempt_is_the_only_one(
    rig: Rig,
) -> None:
    add_channel(rig)
    port = await rig.start(trusted_networks=TRUST_LOCALHOST)

    def session() -> list[bytes]:
        raw = Raw(port)
        try:
            raw.reply()
            raw.command(b"EHLO client.test\r\n")
            finals = []
            for body in (b"one\n.\n" + SMUGGLED, b"two\r\n"):
                raw.command(b"MAIL FROM:<jane@acme.test>\r\n")
                raw.command(b"RCPT TO:<bob@example.com>\r\n")
                raw.command(b"DATA\r\n")
                finals.append(raw.command(message(body=body) + b".\r\n")[-1])
            return finals
        finally:
            raw.close()

    refused, accepted = await asyncio.to_thread(session)
    assert refused.startswith(b"554 5.6.0") and accepted.startswith(b"250 2.0.0"), (
        refused,
        accepted,
    )
    assert [m.envelope.rcpt_to for m in rig.messages()] == [(BOB,)]


async def test_commands_injected_with_starttls_are_not_run_after_the_upgrade(rig: Rig) -> None:
    port = await rig.start()

    def session() -> tuple[list[bytes], list[bytes], list[bytes]]:
        raw = Raw(port)
        try:
            raw.reply()
            raw.command(b"EHLO client.test\r\n")
            ready = raw.command(b"STARTTLS\r\nRSET\r\n")  # both in one packet
            raw.starttls(rig.context)
            ehlo = raw.command(b"EHLO client.test\r\n")
            noop = raw.command(b"NOOP\r\n")
            return ready, ehlo, noop
        finally:
            raw.close()

    ready, ehlo, noop = await asyncio.to_thread(session)
    assert ready == [b"220 Ready to start TLS"]
    # Had RSET run over TLS, its "250 OK" would come first and shift every reply by one.
    assert ehlo[0] == b"250-" + HOSTNAME.encode() and b"250-AUTH LOGIN PLAIN" in ehlo, ehlo
    assert noop == [b"250 OK"]


# --- brute force ----------------------------------------------------------------------------


async def test_failed_logins_slow_then_lock_out_the_client_not_the_login(rig: Rig) -> None:
    port = await rig.start()

    def attempts(client: smtplib.SMTP) -> list[int]:
        codes = []
        for _ in range(12):
            try:
                codes.append(client.docmd("AUTH", auth_plain(JANE, "mv_guess"))[0])
            except smtplib.SMTPServerDisconnected:
                codes.append(-1)
                break
        return codes

    assert await rig.client(port, attempts, source="127.0.0.2") == [535] * 9 + [454, -1]
    assert rig.clock.slept == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]  # from the 4th attempt on
    # The guessing client is locked out for 15 minutes, even with the right token...
    right = auth_plain(JANE, rig.token)
    locked = await rig.client(port, lambda c: c.docmd("AUTH", right), source="127.0.0.2")
    assert locked == (454, b"4.7.0 Too many failed logins, try again later")
    # ...but jane, from a client that never failed, is never held up.
    assert (await rig.client(port, lambda c: c.docmd("AUTH", right)))[0] == 235
    rig.clock.now += 15 * 60 + 1
    code, _ = await rig.client(port, lambda c: c.docmd("AUTH", right), source="127.0.0.2")
    assert code == 235


async def test_guesses_for_a_login_from_many_clients_never_lock_its_owner_out(rig: Rig) -> None:
    port = await rig.start()
    guess = auth_plain(JANE, "mv_guess")
    for n in range(2, 32):
        code = (await rig.client(port, lambda c: c.docmd("AUTH", guess), source=f"127.0.0.{n}"))[0]
        assert code == 535
    assert rig.clock.slept == []
    assert (await rig.client(port, lambda c: c.docmd("AUTH", auth_plain(JANE, rig.token))))[
        0
    ] == 235


async def test_failed_logins_are_locked_out_per_client_address(rig: Rig) -> None:
    port = await rig.start()

    def attempts(client: smtplib.SMTP) -> list[int]:
        return [client.docmd("AUTH", auth_plain(f"u{i}@acme.test", "mv_x"))[0] for i in range(10)]

    codes = await rig.client(port, attempts)
    assert codes == [535] * 9 + [454]  # ten logins, one failure each: the client is locked
    locked = await rig.client(port, lambda c: c.docmd("AUTH", auth_plain(JANE, rig.token)))
    assert locked[0] == 454


async def test_a_success_after_a_few_failures_is_delayed_and_clears_the_address(
    rig: Rig,
) -> None:
    port = await rig.start()

    def session(client: smtplib.SMTP) -> list[int]:
        codes = [client.docmd("AUTH", auth_plain(JANE, "mv_typo"))[0] for _ in range(3)]
        return [*codes, client.docmd("AUTH", auth_plain(JANE, rig.token))[0]]

    assert await rig.client(port, session) == [535, 535, 535, 235]
    assert rig.clock.slept == [1.0]  # the reply after three failures waits, success or not


# --- trusted networks -----------------------------------------------------------------------


async def test_trusted_network_submits_without_auth_only_as_its_organization(rig: Rig) -> None:
    now = time.time()
    tenancy = rig.world.services.tenancy
    tenancy.create_org("globex", now)
    tenancy.create_team("ops", "globex", now)
    tenancy.add_domain("globex", "globex.test", now)
    tenancy.create_user("gus@globex.test", org_name="globex", team_name="ops", admin=False, now=now)
    add_channel(rig)
    port = await rig.start(trusted_networks=TRUST_LOCALHOST)

    def session(client: smtplib.SMTP) -> list[tuple[int, str]]:
        replies = [send(client, message("trusted"))]
        client.rset()
        replies.append(send(client, message(), mail_from="gus@globex.test"))
        client.rset()
        replies.append(send(client, message(sender="gus@globex.test")))  # header From
        return replies

    (ok, ok_text), other_org, other_header = await rig.client(port, session, starttls=False)
    assert ok == 250 and QUEUED.match(ok_text), ok_text
    assert other_org[0] == 550 and other_org[1].startswith("5.7.1"), other_org
    assert other_header[0] == 550 and other_header[1].startswith("5.7.1"), other_header
    [stored] = rig.messages()
    assert stored.user_id == rig.world.jane.id


def idn_domain(rig: Rig) -> str:
    """`straße.test` for acme, jane may send from it, and a team channel carries it (its
    domain given as A-labels, as an admin may type it)."""
    now = time.time()
    rig.world.services.tenancy.add_domain("acme", "straße.test", now)
    rig.world.services.tenancy.grant(JANE, "@straße.test", now)
    spec = ChannelSpec(
        name="strasse",
        host="127.0.0.1",
        port=9,
        security=Security.STARTTLS,
        auth=Auth.NONE,
        ca_pem=rig.certs.ca_pem,
        scope=Scope.DOMAIN,
        domains=("xn--strae-oqa.test",),
        team_name="sales",
    )
    return rig.world.services.channels.add(rig.world.admin, spec, now)[0].id


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "logged-in"])
async def test_an_a_label_sender_is_the_same_sender_at_mail_and_in_the_from(
    rig: Rig, trusted: bool
) -> None:
    """MAIL FROM and the From agree on a domain written as A-labels or as U-labels."""
    channel_id = idn_domain(rig)
    port = await rig.start(trusted_networks=TRUST_LOCALHOST if trusted else ())
    senders = ("jane@xn--strae-oqa.test", "jane@XN--STRAE-OQA.test")
    froms = ("Jane <jane@xn--strae-oqa.test>", "jane@xn--strae-oqa.test")

    def session(client: smtplib.SMTP) -> list[tuple[int, str]]:
        if not trusted:
            client.login(JANE, rig.token)
        replies = []
        for sender, header in zip(senders, froms, strict=True):
            replies.append(send(client, message(sender=header), mail_from=sender))
            client.rset()
        return replies

    replies = await rig.client(port, session, starttls=not trusted)
    assert all(code == 250 and QUEUED.match(text) for code, text in replies), replies
    stored = {(m.envelope.mail_from, m.channel_id) for m in rig.messages()}
    assert stored == {("jane@straße.test", channel_id)}, stored


async def test_untrusted_client_still_needs_auth(rig: Rig) -> None:
    elsewhere = ((ipaddress.ip_network("10.9.0.0/16"), "acme"),)
    port = await rig.start(trusted_networks=elsewhere)
    code, _ = await rig.client(port, lambda c: c.mail(JANE), starttls=False)
    assert code == 530


# --- group commit -----------------------------------------------------------------------------


class CountingSubmitter(Submitter):
    """The real submit use case, counting its commits and the messages in each."""

    def __init__(self, world: World) -> None:
        super().__init__(world.store, pool=world.services.pool)
        self.groups: list[int] = []

    def commit_each(self, plan: EachPlan) -> list[Receipt | Exception]:
        self.groups.append(len(plan.results))
        return super().commit_each(plan)


async def test_concurrent_sessions_commit_together_and_a_refusal_stays_its_own(rig: Rig) -> None:
    """Twenty sessions at once: every message gets its own receipt (or its own refusal) and
    is stored once, in fewer commits than messages."""
    add_channel(rig)
    services = rig.world.services
    counting = CountingSubmitter(rig.world)
    port = await rig.start(services=dataclasses.replace(services, submitter=counting))

    def session(k: int) -> Callable[[smtplib.SMTP], list[tuple[int, str]]]:
        def action(client: smtplib.SMTP) -> list[tuple[int, str]]:
            client.login(JANE, rig.token)
            replies = []
            for n in range(5):
                sender = "Gus <gus@globex.test>" if (k, n) == (7, 2) else "Jane <jane@acme.test>"
                replies.append(send(client, message(f"s{k} m{n}", sender=sender)))
                client.rset()
            return replies

        return action

    with ThreadPoolExecutor(20) as threads:
        clients = [rig.client(port, session(k), threads=threads) for k in range(20)]
        results = await asyncio.gather(*clients)
    refused = [r for rs in results for r in rs if r[0] != 250]
    queued = [QUEUED.match(text) for rs in results for code, text in rs if code == 250]
    assert [code for code, _ in refused] == [550], refused  # gus's From, in session 7 only
    assert len(queued) == 99 and all(queued)
    stored = rig.messages()
    assert {m.id for m in stored} == {match[1] for match in queued if match}
    assert sum(counting.groups) == 100 and len(counting.groups) < 100, counting.groups


class HeldSubmitter(CountingSubmitter):
    """Commits held until `go_on` is set, so that a shutdown comes while one runs and others
    wait (however long the other clients take to send theirs)."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.started: list[int] = []
        self.go_on = threading.Event()

    def commit_each(self, plan: EachPlan) -> list[Receipt | Exception]:
        self.started.append(len(plan.results))
        assert self.go_on.wait(60), "the commit was never let go on"
        return super().commit_each(plan)


async def test_stopping_answers_every_message_already_received(rig: Rig) -> None:
    """A shutdown while one group commits and more messages wait for the next: every client
    still gets its 250 for a stored message (none is stored unanswered, none lost)."""
    add_channel(rig)
    services = rig.world.services
    held = HeldSubmitter(rig.world)
    server_services = dataclasses.replace(services, submitter=held)
    port = await rig.start(services=server_services)
    [server] = rig.servers

    def session(k: int) -> Callable[[smtplib.SMTP], tuple[int, str]]:
        send_it = login_and_send(rig.token, message(f"stop {k}"))

        def action(client: smtplib.SMTP) -> tuple[int, str]:
            reply = send_it(client)
            # Once every message is answered the server tells each connection left that it
            # is shutting down: a QUIT sent after that reads 421 4.3.2, not 221.
            assert client.quit()[0] in (221, 421)
            return reply

        return action

    with ThreadPoolExecutor(4) as threads:
        clients = [asyncio.ensure_future(rig.client(port, session(0), threads=threads))]
        while not held.started:  # the first commit is running (held)
            await asyncio.sleep(0.01)
        clients += [asyncio.ensure_future(rig.client(port, session(k), threads=threads))
                    for k in (1, 2, 3)]  # fmt: skip
        while server._accepting < 4:  # all four received, three waiting for the next commit
            await asyncio.sleep(0.01)
        stopping = asyncio.ensure_future(server.stop())
        while not server.stopping:
            await asyncio.sleep(0.01)
        held.go_on.set()  # the first commit ends while the server stops
        await stopping
        replies = await asyncio.gather(*clients)
    assert [code for code, _ in replies] == [250] * 4, replies
    queued = {m[1] for _, text in replies if (m := QUEUED.match(text))}
    assert {m.id for m in rig.messages()} == queued and len(queued) == 4
    assert held.groups == [1, 3]


def test_a_fault_routing_one_message_of_a_group_fails_only_that_message(rig: Rig) -> None:
    from mailvia.outbox.compose import inspect_raw

    add_channel(rig)
    services = rig.world.services

    class Faulty(Submitter):
        def _channel_of(self, sender: User, from_address: str, *rest: Any) -> Any:
            if from_address.startswith("jane+boom"):
                raise RuntimeError("a bug")
            return super()._channel_of(sender, from_address, *rest)

    rig.world.services.tenancy.grant(JANE, "jane+boom@acme.test", time.time())
    faulty = Faulty(rig.world.store, pool=services.pool)
    items = [
        (rig.world.jane, Submission(inspect_raw(message(sender=sender), envelope=None,
                                                max_size=100_000)))
        for sender in ("jane@acme.test", "jane+boom@acme.test", "Jane <jane@acme.test>")
    ]  # fmt: skip
    good, bad, also_good = faulty.submit_each(items, now=time.time())
    assert isinstance(bad, RuntimeError)
    assert isinstance(good, Receipt) and isinstance(also_good, Receipt)
    assert {m.id for m in rig.messages()} == {good.id, also_good.id}


@pytest.mark.parametrize(
    ("path", "quoted"),
    [
        (b"<not an address>", "'not an address'"),
        (b"not an address", "'not an address'"),
        (b"<" + b"x" * 300 + b" y>", "'" + "x" * 64 + "...'"),
    ],
)
async def test_a_refused_recipient_is_quoted_as_sent(rig: Rig, path: bytes, quoted: str) -> None:
    """The refusal quotes the recipient as the client wrote it (bounded, one line), not the
    part before its first space."""
    add_channel(rig)
    port = await rig.start(trusted_networks=TRUST_LOCALHOST)

    def session() -> list[bytes]:
        raw = Raw(port)
        try:
            raw.reply()
            raw.command(b"EHLO client.test\r\n")
            raw.command(b"MAIL FROM:<jane@acme.test>\r\n")
            return raw.command(b"RCPT TO:" + path + b"\r\n")
        finally:
            raw.close()

    [reply] = await asyncio.to_thread(session)
    text = reply.decode()
    assert text.startswith("553 5.1.3 recipient " + quoted), text
    assert len(text) < 200 and "\r" not in text.rstrip("\r\n")
