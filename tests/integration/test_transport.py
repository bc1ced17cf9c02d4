"""SmtpTransport against real SMTP servers on 127.0.0.1 (the project's fault-injecting server)."""

from __future__ import annotations

import asyncio
import datetime
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailvia.domain.channel import Auth, Channel, Kind, Security
from mailvia.domain.replies import Reply, Stage
from mailvia.outbox.ports import Credentials
from mailvia.testserver import TestServer
from mailvia.transport import OutboundGuard, SmtpTransport
from mailvia.transport.data import encode_data
from mailvia.transport.pool import scrubbed
from support.smtp_client import FAST, LOOPBACK, envelope, loopback_transport, relay_channel

USER, PASSWORD = "rep@example.test", "s3cret-pass"
CREDS = Credentials(USER, PASSWORD)
_DAY = datetime.timedelta(days=1)
MESSAGE = b"From: rep@example.test\r\nTo: a@example.test\r\nSubject: hi\r\n\r\nHello.\r\n"


@dataclass(frozen=True)
class Tls:
    ca_pem: str
    cert: Path
    key: Path


def _issue(ca: trustme.CA, directory: Path, *hosts: str, expired: bool = False) -> Tls:
    directory.mkdir(parents=True, exist_ok=True)
    if expired:
        now = datetime.datetime.now(datetime.UTC)
        issued = ca.issue_cert(
            *hosts, not_before=now - datetime.timedelta(days=30), not_after=now - _DAY
        )
    else:
        issued = ca.issue_cert(*hosts)
    cert, key = directory / "server.pem", directory / "server.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return Tls(ca.cert_pem.bytes().decode("ascii"), cert, key)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls(ca: trustme.CA, tmp_path: Path) -> Tls:
    return _issue(ca, tmp_path / "tls", "localhost", "127.0.0.1")


def channel(port: int, **changes: Any) -> Channel:
    """The relay with STARTTLS and AUTH PLAIN, as localhost (the test certificate's name)."""
    secured: dict[str, Any] = {
        "host": "localhost",
        "security": Security.STARTTLS,
        "auth": Auth.PLAIN,
        "username": USER,
        "has_password": True,
    }
    return relay_channel(port, **{**secured, **changes})


@pytest.fixture
async def transport() -> AsyncIterator[SmtpTransport]:
    async with loopback_transport() as smtp:
        yield smtp


def server(tls: Tls, **options: Any) -> TestServer:
    options.setdefault("auth", {USER: PASSWORD})
    return TestServer(tls_cert=tls.cert, tls_key=tls.key, **options)


async def poll(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- delivery and connection reuse -----------------------------------------------------------


async def test_starttls_auth_delivers_several_messages_over_one_connection(
    transport: SmtpTransport, tls: Tls
) -> None:
    async with server(tls) as srv:
        ch = channel(srv.port, ca_pem=tls.ca_pem)
        for _ in range(3):
            result = await transport.send(ch, CREDS, envelope(), MESSAGE)
            assert result.stage is Stage.DATA_END and result.reply is not None
            assert result.reply.code == 250 and not result.possible_duplicate
        assert len(srv.received) == 3
        [session] = srv.sessions
        assert session["tls"] and session["auth_user"] == USER
        commands = session["commands"]
        assert commands.index("STARTTLS") < commands.index("AUTH") < commands.index("MAIL")
        # Back to back, a cleanly ended connection is reused without an RSET round trip.
        assert commands.count("MAIL") == 3 and commands.count("RSET") == 0


async def test_a_connection_idle_for_a_while_is_checked_with_rset_before_reuse(
    transport: SmtpTransport, tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mailvia.transport.session._FRESH", 0.0)
    async with server(tls) as srv:
        ch = channel(srv.port, ca_pem=tls.ca_pem)
        for _ in range(2):
            result = await transport.send(ch, CREDS, envelope(), MESSAGE)
            assert result.reply is not None and result.reply.code == 250
        [session] = srv.sessions
        assert session["commands"].count("RSET") == 1


async def test_at_most_max_connections_under_ten_concurrent_sends(
    transport: SmtpTransport, tls: Tls
) -> None:
    async with server(tls, faults=["data-end=stall:0.2"]) as srv:
        ch = channel(srv.port, ca_pem=tls.ca_pem, max_connections=2)
        sends = [transport.send(ch, CREDS, envelope(), MESSAGE) for _ in range(10)]
        results = await asyncio.gather(*sends)
        assert all(r.reply is not None and r.reply.code == 250 for r in results)
        assert len(srv.received) == 10
        assert len(srv.sessions) == 2


async def test_implicit_tls_delivers(transport: SmtpTransport, tls: Tls) -> None:
    async with server(tls, implicit_tls=True) as srv:
        ch = channel(srv.port, ca_pem=tls.ca_pem, security=Security.TLS, auth=Auth.LOGIN)
        result = await transport.send(ch, CREDS, envelope(), MESSAGE)
        assert result.reply is not None and result.reply.code == 250
        assert srv.sessions[0]["tls"] and srv.sessions[0]["auth_user"] == USER


async def test_plain_channel_without_auth_delivers(transport: SmtpTransport) -> None:
    async with TestServer() as srv:
        ch = channel(srv.port, security=Security.NONE, auth=Auth.NONE, username=None)
        result = await transport.send(ch, None, envelope(), MESSAGE)
        assert result.reply is not None and result.reply.code == 250
        assert "STARTTLS" not in srv.sessions[0]["commands"]


async def test_a_new_password_never_rides_the_old_connection(
    transport: SmtpTransport, tls: Tls
) -> None:
    async with server(tls) as srv:
        ch = channel(srv.port, ca_pem=tls.ca_pem)
        first = await transport.send(ch, CREDS, envelope(), MESSAGE)
        assert first.reply is not None and first.reply.code == 250
        second = await transport.send(ch, Credentials(USER, "new-password"), envelope(), MESSAGE)
        assert second.stage is Stage.AUTH and second.reply is not None
        assert second.reply.code == 535
        assert len(srv.sessions) == 2
        await poll(lambda: srv.sessions[0]["closed_at"] is not None)


async def test_a_421_closes_the_connection(transport: SmtpTransport, tls: Tls) -> None:
    async with server(tls, faults=["mail*1=421 4.3.2 closing"]) as srv:
        ch = channel(srv.port, ca_pem=tls.ca_pem)
        first = await transport.send(ch, CREDS, envelope(), MESSAGE)
        assert first.stage is Stage.MAIL and first.reply == Reply(421, "4.3.2", "closing")
        second = await transport.send(ch, CREDS, envelope(), MESSAGE)
        assert second.reply is not None and second.reply.code == 250
        assert len(srv.sessions) == 2


async def test_idle_connections_close_with_quit(tls: Tls) -> None:
    smtp = SmtpTransport(guard=OutboundGuard(LOOPBACK), helo_name="mailvia.test", idle_timeout=0.2)
    try:
        async with server(tls) as srv:
            result = await smtp.send(
                channel(srv.port, ca_pem=tls.ca_pem), CREDS, envelope(), MESSAGE
            )
            assert result.reply is not None and result.reply.code == 250
            await poll(lambda: srv.sessions[0]["closed_at"] is not None)
            assert srv.sessions[0]["commands"][-1] == "QUIT"
    finally:
        await smtp.aclose()


async def test_forget_closes_the_channels_connections(transport: SmtpTransport, tls: Tls) -> None:
    async with server(tls) as srv:
        ch = channel(srv.port, ca_pem=tls.ca_pem)
        await transport.send(ch, CREDS, envelope(), MESSAGE)
        await transport.forget(ch.id)
        await poll(lambda: srv.sessions[0]["closed_at"] is not None)
        await transport.send(ch, CREDS, envelope(), MESSAGE)
        assert len(srv.sessions) == 2


async def test_narrow_closes_only_the_connections_above_the_width(
    transport: SmtpTransport, tls: Tls
) -> None:
    """After a cut in the channel's concurrency: idle connections above the new width close
    at once, busy ones finish their transaction and the first to end it closes too; the rest
    stay open and are reused (the pool is not retired, as `forget` would)."""
    async with server(tls, faults=["data-end*2=stall:0.5"]) as srv:
        ch = channel(srv.port, ca_pem=tls.ca_pem, max_connections=4)
        sends = [
            asyncio.ensure_future(transport.send(ch, CREDS, envelope(), MESSAGE)) for _ in range(4)
        ]
        await poll(lambda: sum(t.done() for t in sends) == 2)  # two idle, two in DATA
        transport.narrow(ch.id, 1)
        closed = lambda: sum(s["closed_at"] is not None for s in srv.sessions)  # noqa: E731
        await poll(lambda: closed() == 2)  # the two idle ones, with QUIT
        assert sum(t.done() for t in sends) == 2  # the busy ones are not cut ...
        results = await asyncio.gather(*sends)
        assert [r.reply.code if r.reply else None for r in results] == [250] * 4  # ... they end
        await poll(lambda: closed() == 3)  # the first to end its transaction closes
        assert [s["commands"][-1] for s in srv.sessions if s["closed_at"]] == ["QUIT"] * 3
        await transport.send(ch, CREDS, envelope(), MESSAGE)
        assert len(srv.sessions) == 4  # the one left open is reused
        assert closed() == 3


@pytest.mark.parametrize("stage", ["rset", "greeting"])
async def test_a_connection_above_the_width_cancelled_before_its_transaction_counts(
    transport: SmtpTransport, tls: Tls, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """Narrowed while two sends are still getting their connection ready (RSET on an idle
    one, or the greeting of a new one): the one cancelled then is the connection above the
    width, so the other, once its transaction ends, stays open and is reused (no churn)."""
    monkeypatch.setattr("mailvia.transport.session._FRESH", 0.0)  # every reuse sends RSET
    async with server(tls, faults=[f"{stage}*2=stall:1"]) as srv:
        ch = channel(srv.port, ca_pem=tls.ca_pem, max_connections=2)
        if stage == "rset":  # two idle connections to reuse
            first = [transport.send(ch, CREDS, envelope(), MESSAGE) for _ in range(2)]
            await asyncio.gather(*first)
            assert len(srv.sessions) == 2
        sends = [
            asyncio.ensure_future(transport.send(ch, CREDS, envelope(), MESSAGE)) for _ in range(2)
        ]
        if stage == "rset":
            await poll(lambda: all("RSET" in s["commands"] for s in srv.sessions))
        else:
            await poll(lambda: len(srv.sessions) == 2)
        transport.narrow(ch.id, 1)  # both busy: one of them is to close
        assert not sends[0].done()
        sends[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await sends[0]
        result = await sends[1]
        assert result.reply is not None and result.reply.code == 250
        await transport.send(ch, CREDS, envelope(), MESSAGE)
        assert len(srv.sessions) == 2  # the one left was reused, not closed and opened again
        assert sum("QUIT" in s["commands"] for s in srv.sessions) == 0


async def test_a_send_cancelled_as_its_connection_is_made_is_cancelled(
    transport: SmtpTransport, tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel that comes just as the connection is set up (the narrowed-while-getting-ready
    test's cancel, on a loaded machine) ends the send: it is not lost, the send does not go
    on to deliver the message and answer 250 to a caller that had cancelled it (Python
    3.11's asyncio.wait_for returns the inner result when that is ready at the cancel)."""
    loop = asyncio.get_running_loop()
    create_connection = loop.create_connection
    sending: list[asyncio.Task[Any]] = []

    async def cancelled_meanwhile(*args: Any, **kwargs: Any) -> Any:
        made = await create_connection(*args, **kwargs)
        sending[0].cancel()  # the caller gives up as the connection is made
        return made

    monkeypatch.setattr(loop, "create_connection", cancelled_meanwhile)
    async with server(tls) as srv:
        ch = channel(srv.port, ca_pem=tls.ca_pem)
        sending.append(asyncio.ensure_future(transport.send(ch, CREDS, envelope(), MESSAGE)))
        with pytest.raises(asyncio.CancelledError):
            await sending[0]
        assert srv.received == []


# -- TLS fails closed ------------------------------------------------------------------------


async def test_starttls_required_but_not_offered(transport: SmtpTransport, tls: Tls) -> None:
    async with server(tls, starttls=False) as srv:
        result = await transport.send(
            channel(srv.port, ca_pem=tls.ca_pem), CREDS, envelope(), MESSAGE
        )
        assert result.stage is Stage.STARTTLS
        assert result.reply == Reply(530, "5.7.10", "mailvia: the server does not offer STARTTLS")
        commands = srv.sessions[0]["commands"]
        assert "AUTH" not in commands and "MAIL" not in commands and "STARTTLS" not in commands
        assert srv.received == []


async def test_certificate_for_another_host_name_is_refused(
    transport: SmtpTransport, ca: trustme.CA, tmp_path: Path
) -> None:
    other = _issue(ca, tmp_path / "other", "other.test")
    async with server(other) as srv:
        ch = channel(srv.port, ca_pem=other.ca_pem)
        result = await transport.send(ch, CREDS, envelope(), MESSAGE)
        assert result.stage is Stage.STARTTLS and result.reply is not None
        assert (result.reply.code, result.reply.enhanced) == (530, "5.7.10")
        assert "certificate verification failed" in result.reply.text
        assert "AUTH" not in srv.sessions[0]["commands"]


async def test_expired_certificate_is_refused(
    transport: SmtpTransport, ca: trustme.CA, tmp_path: Path
) -> None:
    expired = _issue(ca, tmp_path / "expired", "localhost", expired=True)
    async with server(expired) as srv:
        result = await transport.send(
            channel(srv.port, ca_pem=expired.ca_pem), CREDS, envelope(), MESSAGE
        )
        assert result.stage is Stage.STARTTLS and result.reply is not None
        assert result.reply.code == 530 and "expired" in result.reply.text
        assert "AUTH" not in srv.sessions[0]["commands"]


@pytest.mark.parametrize("security", [Security.STARTTLS, Security.TLS])
async def test_self_signed_certificate_not_trusted_is_refused(
    transport: SmtpTransport, security: Security
) -> None:
    implicit = security is Security.TLS
    async with TestServer(self_signed=True, implicit_tls=implicit, auth={USER: PASSWORD}) as srv:
        result = await transport.send(
            channel(srv.port, security=security), CREDS, envelope(), MESSAGE
        )
        assert result.stage is (Stage.CONNECT if implicit else Stage.STARTTLS)
        assert result.reply is not None and result.reply.code == 530
        assert "certificate verification failed" in result.reply.text
        assert all("AUTH" not in s["commands"] for s in srv.sessions)


# -- replies at each stage -------------------------------------------------------------------


async def test_wrong_password_fails_at_auth(transport: SmtpTransport, tls: Tls) -> None:
    async with server(tls) as srv:
        ch = channel(srv.port, ca_pem=tls.ca_pem)
        for auth in (Auth.PLAIN, Auth.LOGIN):
            bad = Credentials(USER, "wrong-password")
            result = await transport.send(replace(ch, auth=auth), bad, envelope(), MESSAGE)
            assert result.stage is Stage.AUTH and result.reply is not None
            assert result.reply.code == 535 and "wrong-password" not in str(result.reply)
        assert srv.received == []


async def test_one_refused_recipient_does_not_stop_the_other(
    transport: SmtpTransport, tls: Tls
) -> None:
    async with server(tls) as srv:
        rcpt = ("permfail@example.test", "b@example.test")
        result = await transport.send(
            channel(srv.port, ca_pem=tls.ca_pem), CREDS, envelope(*rcpt), MESSAGE
        )
        assert result.stage is Stage.DATA_END and result.reply is not None
        assert result.reply.code == 250
        assert result.rcpt_replies["permfail@example.test"].code == 550
        assert result.rcpt_replies["b@example.test"].code == 250
        [received] = srv.received
        assert received["rcpt_to"] == ["b@example.test"]


async def test_temporary_refusal_at_rcpt(transport: SmtpTransport, tls: Tls) -> None:
    async with server(tls, faults=["rcpt*1=451 4.3.0 Try again"]) as srv:
        rcpt = ("a@example.test", "b@example.test")
        result = await transport.send(
            channel(srv.port, ca_pem=tls.ca_pem), CREDS, envelope(*rcpt), MESSAGE
        )
        assert result.rcpt_replies["a@example.test"] == Reply(451, "4.3.0", "Try again")
        assert result.reply is not None and result.reply.code == 250
        assert srv.received[0]["rcpt_to"] == ["b@example.test"]


async def test_all_recipients_refused_resets_and_keeps_the_connection(
    transport: SmtpTransport, tls: Tls
) -> None:
    async with server(tls) as srv:
        ch = channel(srv.port, ca_pem=tls.ca_pem)
        rcpt = ("permfail@example.test", "tempfail@example.test")
        result = await transport.send(ch, CREDS, envelope(*rcpt), MESSAGE)
        assert result.stage is Stage.RCPT and result.reply is None
        assert result.rcpt_replies["tempfail@example.test"].code == 451
        commands = srv.sessions[0]["commands"]
        assert "DATA" in commands and srv.received == []  # in the pipelined batch, refused
        assert "RSET" in commands
        again = await transport.send(ch, CREDS, envelope(), MESSAGE)
        assert again.reply is not None and again.reply.code == 250
        assert len(srv.sessions) == 1


@pytest.mark.parametrize(
    ("fault", "stage", "code"),
    [
        ("greeting=554 5.3.2 go away", Stage.GREETING, 554),
        ("ehlo=421 4.3.2 busy", Stage.EHLO, 421),
        ("starttls=454 4.7.0 TLS not available", Stage.STARTTLS, 454),
        ("auth=535 5.7.8 bad", Stage.AUTH, 535),
        ("mail=550 5.7.1 sender refused", Stage.MAIL, 550),
        ("data=554 5.5.1 no valid recipients", Stage.DATA, 554),
        ("data-end=552 5.3.4 too big", Stage.DATA_END, 552),
    ],
)
async def test_a_reply_is_kept_at_its_stage(
    transport: SmtpTransport, tls: Tls, fault: str, stage: Stage, code: int
) -> None:
    async with server(tls, faults=[fault]) as srv:
        result = await transport.send(
            channel(srv.port, ca_pem=tls.ca_pem), CREDS, envelope(), MESSAGE
        )
        assert result.stage is stage and result.reply is not None
        assert result.reply.code == code and not result.possible_duplicate
        assert srv.received == []


# -- network failures ------------------------------------------------------------------------


async def test_drop_during_data_is_a_network_failure_not_a_duplicate(
    transport: SmtpTransport, tls: Tls
) -> None:
    big = MESSAGE + b"x" * 76 + b"\r\n" * 1 + (b"y" * 998 + b"\r\n") * 16_000  # ~16 MB
    async with server(tls, faults=["data=drop"]) as srv:
        result = await transport.send(channel(srv.port, ca_pem=tls.ca_pem), CREDS, envelope(), big)
        assert result.stage is Stage.DATA
        assert result.reply is not None and (result.reply.code, result.reply.enhanced) == (
            451,
            "4.4.2",
        )
        assert not result.possible_duplicate
        assert srv.received == []


async def test_stall_after_the_final_dot_may_be_a_duplicate(
    transport: SmtpTransport, tls: Tls
) -> None:
    async with server(tls, faults=["data-end=stall:2"]) as srv:
        ch = channel(srv.port, ca_pem=tls.ca_pem, timeouts=replace(FAST, data_end=0.3))
        result = await transport.send(ch, CREDS, envelope(), MESSAGE)
        assert result.stage is Stage.DATA_END and result.possible_duplicate
        assert result.reply is not None and result.reply.code == 451
        assert "may have been delivered" in result.reply.text
        await srv.wait_for(1)  # it was in fact delivered: the flag was right to warn


async def test_greeting_timeout(transport: SmtpTransport, tls: Tls) -> None:
    async with server(tls, faults=["greeting=stall"]) as srv:
        ch = channel(srv.port, ca_pem=tls.ca_pem, timeouts=replace(FAST, greeting=0.3))
        result = await transport.send(ch, CREDS, envelope(), MESSAGE)
        assert result.stage is Stage.GREETING and result.reply is not None
        assert (result.reply.code, result.reply.enhanced) == (451, "4.4.2")


async def test_connection_refused_on_a_closed_port(transport: SmtpTransport) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await transport.send(channel(port, host="127.0.0.1"), CREDS, envelope(), MESSAGE)
    assert result.stage is Stage.CONNECT and result.reply is not None
    assert (result.reply.code, result.reply.enhanced) == (451, "4.4.2")


# -- the outbound address guard --------------------------------------------------------------


class Listener:
    """A TCP listener that only counts the connections it gets."""

    def __init__(self) -> None:
        self.connections = 0

    def accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "2130706433", "0x7f000001", "127.1", "::ffff:127.0.0.1"],
)
async def test_guard_refuses_loopback_and_nothing_connects(host: str) -> None:
    listener = Listener()
    srv = await asyncio.start_server(listener.accepted, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    transport = SmtpTransport(guard=OutboundGuard(), helo_name="mailvia.test")
    try:
        result = await transport.send(channel(port, host=host), CREDS, envelope(), MESSAGE)
    finally:
        await transport.aclose()
        srv.close()
        await srv.wait_closed()
    assert result.stage is Stage.CONNECT
    assert result.reply == Reply(550, "5.4.4", "mailvia: will not connect to this host")
    assert listener.connections == 0


async def test_guard_refuses_ipv6_loopback_and_nothing_connects() -> None:
    listener = Listener()
    try:
        srv = await asyncio.start_server(listener.accepted, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = srv.sockets[0].getsockname()[1]
    transport = SmtpTransport(guard=OutboundGuard(), helo_name="mailvia.test")
    try:
        result = await transport.send(channel(port, host="::1"), CREDS, envelope(), MESSAGE)
    finally:
        await transport.aclose()
        srv.close()
        await srv.wait_closed()
    assert result.reply == Reply(550, "5.4.4", "mailvia: will not connect to this host")
    assert listener.connections == 0


@pytest.mark.parametrize("host", ["169.254.169.254", "10.0.0.1", "100.64.0.1", "fd00:ec2::254"])
async def test_guard_refuses_private_and_metadata_addresses(host: str) -> None:
    transport = SmtpTransport(guard=OutboundGuard(), helo_name="mailvia.test")
    try:
        started = time.monotonic()
        result = await transport.send(channel(25, host=host), CREDS, envelope(), MESSAGE)
    finally:
        await transport.aclose()
    assert result.stage is Stage.CONNECT
    assert result.reply == Reply(550, "5.4.4", "mailvia: will not connect to this host")
    assert time.monotonic() - started < 1.0  # refused before any packet, not timed out


async def test_the_operators_pool_relay_skips_the_guard() -> None:
    transport = SmtpTransport(guard=OutboundGuard(), helo_name="mailvia.test")
    try:
        async with TestServer() as srv:
            ch = channel(
                srv.port, kind=Kind.POOL, security=Security.NONE, auth=Auth.NONE, username=None
            )
            result = await transport.send(ch, None, envelope(), MESSAGE)
    finally:
        await transport.aclose()
    assert result.reply is not None and result.reply.code == 250


# -- the body cannot end DATA early, and secrets stay out of replies --------------------------


async def test_body_with_bare_dots_arrives_whole_in_one_transaction(
    transport: SmtpTransport, tls: Tls
) -> None:
    body = (
        b"Subject: smuggle\r\n\r\nbefore\n.\nMAIL FROM:<evil@x.test>\n"
        b"RCPT TO:<victim@x.test>\r\n.\r\nDATA\r.\rafter\r\n"
    )
    async with server(tls) as srv:
        result = await transport.send(channel(srv.port, ca_pem=tls.ca_pem), CREDS, envelope(), body)
        assert result.reply is not None and result.reply.code == 250
        [received] = srv.received
        content = received["content"]
        assert content.startswith(b"Subject: smuggle") and b"after" in content
        assert b"MAIL FROM:<evil@x.test>" in content and b"\r\n.\r\n" in content
        assert received["rcpt_to"] == ["a@example.test"]
        assert srv.sessions[0]["commands"].count("MAIL") == 1


def test_encode_data_normalises_line_endings_and_stuffs_dots() -> None:
    assert encode_data(b"a\n.\nb\r.\rc\r\n.\r\nd") == b"a\r\n..\r\nb\r\n..\r\nc\r\n..\r\nd\r\n"
    assert encode_data(b".start") == b"..start\r\n"
    assert encode_data(b"") == b"\r\n"


def test_replies_never_carry_the_password() -> None:
    from mailvia.domain.delivery import TransactionResult

    plain = "AHJlcEBleGFtcGxlLnRlc3QAczNjcmV0LXBhc3M="  # base64 of \0user\0password
    result = TransactionResult(
        Stage.AUTH,
        Reply(535, "5.7.8", f"bad {PASSWORD} / {plain}"),
        {"a@x.test": Reply(550, None, f"echo {PASSWORD}")},
    )
    clean = scrubbed(result, CREDS)
    assert clean.reply is not None and PASSWORD not in clean.reply.text
    assert plain not in clean.reply.text
    assert PASSWORD not in clean.rcpt_replies["a@x.test"].text


async def test_a_connection_the_server_closed_while_idle_is_replaced(
    transport: SmtpTransport, tls: Tls
) -> None:
    async with server(tls) as srv:
        port = srv.port
        ch = channel(port, ca_pem=tls.ca_pem)
        first = await transport.send(ch, CREDS, envelope(), MESSAGE)
        assert first.reply is not None and first.reply.code == 250
    async with server(tls, port=port) as again:
        second = await transport.send(ch, CREDS, envelope(), MESSAGE)
        assert second.reply is not None and second.reply.code == 250
        assert len(again.received) == 1


async def test_non_ascii_addresses_go_with_smtputf8(transport: SmtpTransport, tls: Tls) -> None:
    async with server(tls) as srv:
        rcpt = ("jürgen@example.test", "b@example.test")
        ch = channel(srv.port, ca_pem=tls.ca_pem)
        result = await transport.send(ch, CREDS, envelope(*rcpt), MESSAGE)
        assert result.reply is not None and result.reply.code == 250
        assert result.rcpt_replies["jürgen@example.test"].code == 250
        assert srv.received[0]["rcpt_to"] == list(rcpt)


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "sequential"])
async def test_a_non_ascii_domain_goes_as_a_labels_without_smtputf8(
    transport: SmtpTransport, tls: Tls, pipelining: bool
) -> None:
    """Only a local part needs SMTPUTF8: a domain is written as the headers write it, the
    sender's (MAIL FROM) as the recipients' (RCPT TO)."""
    async with server(tls, pipelining=pipelining) as srv:
        ch = channel(srv.port, ca_pem=tls.ca_pem)
        sent = replace(envelope("user@bücher.example"), mail_from="jane@straße.test")
        result = await transport.send(ch, CREDS, sent, MESSAGE)
        assert result.reply is not None and result.reply.code == 250
        assert result.rcpt_replies["user@bücher.example"].code == 250
        assert srv.received[0]["mail_from"] == "jane@xn--strae-oqa.test"
        assert srv.received[0]["rcpt_to"] == ["user@xn--bcher-kva.example"]
