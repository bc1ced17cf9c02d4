"""PIPELINING (RFC 2920): MAIL, every RCPT and DATA in one write when the server offers it,
the body only after 354, and every failure inside a batch ending exactly as it ends when the
commands go one at a time (each fault is run against a server with and without PIPELINING).

Real SMTP servers on 127.0.0.1: the project's test server (its session log's `early` lists
the commands that came before the reply to the command before them), and for replies it will
not give (354 to a DATA with no recipient, no SMTPUTF8) a scripted server in this file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from mailvia.domain.channel import Auth, Security
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.replies import Reply, Stage
from mailvia.outbox.ports import Credentials
from mailvia.testserver import TestServer
from mailvia.transport import SmtpTransport
from support.smtp_client import FAST, envelope, loopback_transport, relay_channel

MESSAGE = b"From: rep@example.test\r\nTo: a@example.test\r\nSubject: hi\r\n\r\nHello.\r\n"
BOTH = pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "sequential"])


@pytest.fixture
async def transport() -> AsyncIterator[SmtpTransport]:
    async with loopback_transport() as smtp:
        yield smtp


async def send(
    transport: SmtpTransport, port: int, *rcpt: str, **changes: Any
) -> TransactionResult:
    return await transport.send(relay_channel(port, **changes), None, envelope(*rcpt), MESSAGE)


def early(server: TestServer) -> list[str]:
    return [verb for session in server.sessions for verb in session["early"]]


# -- the batch -------------------------------------------------------------------------------


async def test_mail_every_rcpt_and_data_go_before_any_reply(transport: SmtpTransport) -> None:
    async with TestServer() as srv:
        rcpt = ("a@example.test", "b@example.test", "c@example.test")
        result = await send(transport, srv.port, *rcpt)
        assert result.stage is Stage.DATA_END and result.reply is not None
        assert result.reply.code == 250 and list(result.rcpt_replies) == list(rcpt)
        # RCPTs and DATA were waiting before MAIL was answered; the body waited for the 354.
        assert early(srv) == ["RCPT", "RCPT", "RCPT", "DATA"]
        assert srv.received[0]["rcpt_to"] == list(rcpt)
        assert srv.received[0]["content"] == MESSAGE


async def test_pipelining_after_starttls_and_auth(transport: SmtpTransport) -> None:
    async with TestServer(self_signed=True, auth={"jane": "secret"}) as srv:
        assert srv.ca_cert_path is not None
        ch = relay_channel(
            srv.port,
            security=Security.STARTTLS,
            auth=Auth.PLAIN,
            username="jane",
            has_password=True,
            ca_pem=srv.ca_cert_path.read_text(),
        )
        for _ in range(2):
            result = await transport.send(ch, Credentials("jane", "secret"), envelope(), MESSAGE)
            assert result.reply is not None and result.reply.code == 250
        [session] = srv.sessions
        assert session["tls"] and session["early"] == ["RCPT", "DATA"] * 2


async def test_without_pipelining_offered_each_command_waits_for_its_reply(
    transport: SmtpTransport,
) -> None:
    async with TestServer(pipelining=False) as srv:
        result = await send(transport, srv.port, "a@example.test", "b@example.test")
        assert result.reply is not None and result.reply.code == 250
        assert early(srv) == []
        assert srv.sessions[0]["commands"][-4:] == ["MAIL", "RCPT", "RCPT", "DATA"]


# -- failures inside a batch end as they end one command at a time ---------------------------


@BOTH
async def test_a_recipient_refused_mid_batch(transport: SmtpTransport, pipelining: bool) -> None:
    async with TestServer(pipelining=pipelining) as srv:
        rcpt = ("a@example.test", "permfail@example.test", "tempfail@example.test", "d@x.test")
        result = await send(transport, srv.port, *rcpt)
        assert result.stage is Stage.DATA_END and result.reply is not None
        assert [(a, r.code) for a, r in result.rcpt_replies.items()] == [
            ("a@example.test", 250),
            ("permfail@example.test", 550),
            ("tempfail@example.test", 451),
            ("d@x.test", 250),
        ]
        assert srv.received[0]["rcpt_to"] == ["a@example.test", "d@x.test"]
        assert (early(srv) != []) is pipelining


@BOTH
async def test_mail_refused_with_rcpts_following_keeps_the_connection(
    transport: SmtpTransport, pipelining: bool
) -> None:
    async with TestServer(pipelining=pipelining, faults=["mail*1=550 5.7.1 not you"]) as srv:
        first = await send(transport, srv.port, "a@example.test", "b@example.test")
        assert (early(srv) != []) is pipelining  # the path under test ran
        assert first == TransactionResult(Stage.MAIL, Reply(550, "5.7.1", "not you"), {})
        # The refused batch's other replies (503s) were read: the next one pairs correctly.
        second = await send(transport, srv.port, "c@example.test")
        assert second.stage is Stage.DATA_END and second.reply is not None
        assert second.reply.code == 250 and second.rcpt_replies["c@example.test"].code == 250
        assert len(srv.sessions) == 1 and len(srv.received) == 1


@BOTH
async def test_all_recipients_refused_resets_and_keeps_the_connection(
    transport: SmtpTransport, pipelining: bool
) -> None:
    async with TestServer(pipelining=pipelining) as srv:
        first = await send(transport, srv.port, "permfail@example.test", "tempfail@example.test")
        assert (early(srv) != []) is pipelining  # the path under test ran
        assert first.stage is Stage.RCPT and first.reply is None
        assert [r.code for r in first.rcpt_replies.values()] == [550, 451]
        commands = srv.sessions[0]["commands"]
        assert "RSET" in commands and ("DATA" in commands) is pipelining  # DATA got a 503
        second = await send(transport, srv.port)
        assert second.reply is not None and second.reply.code == 250
        assert len(srv.sessions) == 1 and len(srv.received) == 1


@BOTH
async def test_421_mid_batch_closes_the_connection(
    transport: SmtpTransport, pipelining: bool
) -> None:
    async with TestServer(pipelining=pipelining, faults=["rcpt*1=421 4.3.2 going down"]) as srv:
        first = await send(transport, srv.port, "a@example.test", "b@example.test")
        assert (early(srv) != []) is pipelining  # the path under test ran
        bye = Reply(421, "4.3.2", "going down")
        assert first == TransactionResult(Stage.RCPT, bye, {"a@example.test": bye})
        second = await send(transport, srv.port)
        assert second.reply is not None and second.reply.code == 250
        assert len(srv.sessions) == 2 and len(srv.received) == 1


@BOTH
@pytest.mark.parametrize("fault", ["mail=drop", "rcpt*1=drop"])
async def test_a_disconnect_mid_batch_is_a_network_failure_at_its_stage(
    transport: SmtpTransport, pipelining: bool, fault: str
) -> None:
    async with TestServer(pipelining=pipelining, faults=[fault]) as srv:
        result = await send(transport, srv.port, "a@example.test", "b@example.test")
        if fault.startswith("rcpt"):  # dropped at MAIL, the server read nothing further
            assert (early(srv) != []) is pipelining  # the path under test ran
        assert result.stage is Stage(fault.split("=")[0].removesuffix("*1"))
        assert result.reply is not None and result.rcpt_replies == {}  # none was answered
        assert (result.reply.code, result.reply.enhanced) == (451, "4.4.2")
        assert not result.possible_duplicate and srv.received == []


@BOTH
async def test_a_stalled_recipient_times_out_at_rcpt_with_the_replies_before_it(
    transport: SmtpTransport, pipelining: bool
) -> None:
    async with TestServer(pipelining=pipelining) as srv:
        result = await send(
            transport,
            srv.port,
            "a@example.test",
            "stall@example.test",
            "c@example.test",
            timeouts=replace(FAST, command=0.3),
        )
        assert (early(srv) != []) is pipelining  # the path under test ran
        assert result.stage is Stage.RCPT and result.reply is not None
        assert (result.reply.code, result.reply.enhanced) == (451, "4.4.2")
        assert {a: r.code for a, r in result.rcpt_replies.items()} == {"a@example.test": 250}
        assert srv.received == []


@BOTH
@pytest.mark.parametrize(
    ("fault", "code"), [("data=554 5.5.1 no thanks", 554), ("data*1=421 4.3.2 bye", 421)]
)
async def test_data_refused(
    transport: SmtpTransport, pipelining: bool, fault: str, code: int
) -> None:
    async with TestServer(pipelining=pipelining, faults=[fault]) as srv:
        result = await send(transport, srv.port, "a@example.test")
        assert (early(srv) != []) is pipelining  # the path under test ran
        assert result.stage is Stage.DATA and result.reply is not None
        assert result.reply.code == code and result.rcpt_replies["a@example.test"].code == 250
        assert srv.received == []


@BOTH
async def test_data_timeout_then_no_reply_after_the_dot(
    transport: SmtpTransport, pipelining: bool
) -> None:
    short = replace(FAST, data_init=0.3, data_end=0.3)
    async with TestServer(pipelining=pipelining, faults=["data*1=stall"]) as srv:
        result = await send(transport, srv.port, timeouts=short)
        assert (early(srv) != []) is pipelining  # the path under test ran
        assert result.stage is Stage.DATA and result.reply is not None
        assert result.reply.code == 451 and not result.possible_duplicate
        srv.set_faults(["data-end=stall:2"])
        result = await send(transport, srv.port, timeouts=short)
        assert result.stage is Stage.DATA_END and result.possible_duplicate
        await srv.wait_for(1)


@BOTH
async def test_a_connection_idle_past_the_last_reads_timeout_is_reused(
    transport: SmtpTransport, pipelining: bool
) -> None:
    """The replies' shared timer fires while the connection waits in the pool, with no read
    pending: the next send on it reads its replies (not timed out at once, at MAIL)."""
    short = replace(FAST, greeting=1.0, command=1.0, data_init=1.0, data_end=1.0)
    async with TestServer(pipelining=pipelining) as srv:
        for _ in range(2):
            result = await send(transport, srv.port, timeouts=short)
            assert result.stage is Stage.DATA_END and result.reply is not None
            assert result.reply.code == 250, result
            await asyncio.sleep(1.3)  # idle in the pool, past the last read's timeout
        assert (early(srv) != []) is pipelining  # the path under test ran
        assert len(srv.sessions) == 1 and len(srv.received) == 2


@BOTH
async def test_an_unsendable_recipient_is_refused_before_anything_is_written(
    transport: SmtpTransport, pipelining: bool
) -> None:
    async with TestServer(pipelining=pipelining) as srv:
        rcpt = ("a@example.test", "b\x7f@example.test")
        result = await send(transport, srv.port, *rcpt)
        assert (early(srv) != []) is pipelining  # the path under test ran
        assert result.reply is not None and result.reply.code == 250
        assert result.rcpt_replies["b\x7f@example.test"] == Reply(
            553, "5.1.3", "mailvia: the address cannot be sent"
        )
        assert srv.received[0]["rcpt_to"] == ["a@example.test"]
        assert srv.sessions[0]["commands"].count("RCPT") == 1


# -- replies the test server does not give: a scripted server --------------------------------


class Scripted:
    """An SMTP server that answers from a script and keeps every line it reads."""

    def __init__(self, rcpt: str, data: str, *, pipelining: bool = True) -> None:
        extensions = ["PIPELINING"] if pipelining else []
        self.ehlo = "\r\n".join(f"250-{e}" for e in ["scripted", *extensions]) + "\r\n250 OK"
        self.rcpt, self.data = rcpt, data
        self.lines: list[str] = []
        self.port = 0

    async def __aenter__(self) -> Scripted:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted\r\n")
        in_data = False
        while line := await reader.readline():
            text = line.decode("utf-8").rstrip("\r\n")
            self.lines.append(text)
            if in_data and text != ".":
                continue
            reply = self._reply(text, in_data)
            in_data = reply.startswith("354")
            writer.write(reply.encode() + b"\r\n")
        writer.close()

    def _reply(self, text: str, in_data: bool) -> str:
        verb = text[:4].upper()
        if in_data:
            return "250 done"
        return {"EHLO": self.ehlo, "RCPT": self.rcpt, "DATA": self.data, "QUIT": "221 bye"}.get(
            verb, "250 OK"
        )


async def test_a_354_after_no_recipient_was_accepted_gets_a_single_dot(
    transport: SmtpTransport,
) -> None:
    """RFC 2920 section 3.1: "if the DATA command was accepted the client SMTP should send a
    single dot"; the transaction ends as when DATA is refused, and RSET follows."""
    async with Scripted(rcpt="550 5.1.1 no such user", data="354 go ahead") as srv:
        result = await send(transport, srv.port, "a@example.test")
        refused = Reply(550, "5.1.1", "no such user")
        assert result == TransactionResult(Stage.RCPT, None, {"a@example.test": refused})
        mail, rcpt = "MAIL FROM:<rep@example.test>", "RCPT TO:<a@example.test>"
        assert srv.lines[1:] == [mail, rcpt, "DATA", ".", "RSET"]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "sequential"])
async def test_a_non_ascii_recipient_without_smtputf8_is_refused_locally(
    transport: SmtpTransport, pipelining: bool
) -> None:
    async with Scripted(rcpt="250 OK", data="354 go", pipelining=pipelining) as srv:
        result = await send(transport, srv.port, "jürgen@example.test", "b@example.test")
        assert result.stage is Stage.DATA_END and result.reply == Reply.parse(250, "done")
        assert list(result.rcpt_replies.items()) == [
            (
                "jürgen@example.test",
                Reply(553, "5.6.7", "mailvia: the server does not offer SMTPUTF8"),
            ),
            ("b@example.test", Reply.parse(250, "OK")),
        ]
        assert srv.lines[1:4] == [
            "MAIL FROM:<rep@example.test>",
            "RCPT TO:<b@example.test>",
            "DATA",
        ]


@BOTH
async def test_no_sendable_recipient_at_all_ends_at_rcpt_and_keeps_the_connection(
    transport: SmtpTransport, pipelining: bool
) -> None:
    async with TestServer(pipelining=pipelining) as srv:
        result = await send(transport, srv.port, "b\x7f@example.test")
        unsendable = Reply(553, "5.1.3", "mailvia: the address cannot be sent")
        assert result == TransactionResult(Stage.RCPT, None, {"b\x7f@example.test": unsendable})
        assert "RCPT" not in srv.sessions[0]["commands"]
        again = await send(transport, srv.port)
        assert again.reply is not None and again.reply.code == 250 and len(srv.sessions) == 1
