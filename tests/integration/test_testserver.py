"""The fault-injecting test SMTP server on real 127.0.0.1 sockets: capture, TLS, AUTH, faults."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import queue
import signal
import smtplib
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import aiosmtplib
import pytest
import trustme

from mailvia.testserver import TestServer, ThreadedTestServer

MESSAGE = b"From: a@x.test\r\nTo: b@x.test\r\nSubject: hello\r\n\r\nHello, world.\r\n"
PLAIN = base64.b64encode(b"\0alice\0s3cret").decode()


class Closed(Exception):
    """The server closed the connection."""


class Raw:
    """A line-level SMTP client, to see exactly what the server sends (or does not)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext | None = None) -> Raw:
        host = "localhost" if tls else None
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname=host
        )
        return cls(reader, writer)

    async def reply(self, timeout: float = 3.0) -> str:
        lines: list[str] = []
        while True:
            try:
                line = await asyncio.wait_for(self.reader.readline(), timeout)
            except ConnectionResetError:
                line = b""
            if not line:
                raise Closed(lines)
            lines.append(line.decode().rstrip("\r\n"))
            if len(lines[-1]) < 4 or lines[-1][3] != "-":
                return "\n".join(lines)

    async def send(self, line: str) -> None:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()

    async def cmd(self, line: str, expect: str | None = None) -> str:
        await self.send(line)
        reply = await self.reply()
        assert expect is None or reply.startswith(expect), (line, reply)
        return reply

    async def starttls(self, context: ssl.SSLContext) -> None:
        await self.writer.start_tls(context, server_hostname="localhost")

    async def closed(self, timeout: float = 3.0) -> bool:
        """True when the server closes the connection within `timeout` (what it sent is ignored)."""
        try:
            while await asyncio.wait_for(self.reader.read(4096), timeout):
                pass
        except ConnectionResetError:
            pass
        return True

    async def silent_for(self, seconds: float) -> bool:
        """True when nothing arrives and the connection stays open for `seconds`."""
        try:
            await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return True
        return False  # a byte arrived, or the connection closed

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)


async def send(
    srv: TestServer,
    recipients: list[str],
    *,
    timeout: float = 5.0,
    username: str | None = None,
    password: str | None = None,
) -> None:
    await aiosmtplib.send(
        MESSAGE,
        sender="a@x.test",
        recipients=recipients,
        hostname="127.0.0.1",
        port=srv.port,
        timeout=timeout,
        username=username,
        password=password,
    )


def client_context(srv: TestServer) -> ssl.SSLContext:
    assert srv.ca_cert_path is not None
    return ssl.create_default_context(cafile=str(srv.ca_cert_path))


# The full dialogue used by the stage tests; each step is (stage, command).
STEPS: list[tuple[str, str]] = [
    ("ehlo", "EHLO client.test"),
    ("starttls", "STARTTLS"),
    ("ehlo-again", "EHLO client.test"),
    ("auth", f"AUTH PLAIN {PLAIN}"),
    ("mail", "MAIL FROM:<a@x.test>"),
    ("rcpt", "RCPT TO:<b@x.test>"),
    ("data", "DATA"),
    ("data-end", MESSAGE.decode() + "."),
]
COMMAND = dict(STEPS)
ALL_STAGES = ["greeting", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "data-end"]


def stage_server(*faults: str) -> TestServer:
    return TestServer(self_signed=True, auth={"alice": "s3cret"}, faults=list(faults))


async def open_until(srv: TestServer, stage: str) -> Raw:
    """A connection that has done everything before `stage` (the greeting read, TLS, AUTH)."""
    raw = await Raw.connect(srv.port)
    if stage == "greeting":
        return raw
    await raw.reply()
    for name, command in STEPS:
        if name == stage:
            return raw
        await raw.cmd(command, expect="2" if name != "data" else "354")
        if name == "starttls":
            await raw.starttls(client_context(srv))
    raise AssertionError(stage)


async def stage_reply(srv: TestServer, stage: str) -> tuple[Raw, str]:
    raw = await open_until(srv, stage)
    if stage != "greeting":
        await raw.send(COMMAND[stage])
    return raw, await raw.reply()


# -- capture ---------------------------------------------------------------------------------


async def test_delivery_is_captured_to_maildir_and_jsonl() -> None:
    async with TestServer() as srv:
        await aiosmtplib.send(
            MESSAGE,
            sender="a@x.test",
            recipients=["b@x.test", "c@x.test"],
            port=srv.port,
            hostname="127.0.0.1",
        )
        [entry] = await srv.wait_for(1)
        assert entry["content"] == MESSAGE
        assert entry["mail_from"] == "a@x.test"
        assert entry["rcpt_to"] == ["b@x.test", "c@x.test"]
        assert entry["sha256"] == hashlib.sha256(MESSAGE).hexdigest()
        stored = Path(entry["file"])
        assert stored.parent == srv.maildir / "new" and stored.read_bytes() == MESSAGE
        assert (srv.maildir / "cur").is_dir() and not list((srv.maildir / "tmp").iterdir())
        [line] = (srv.maildir / "received.jsonl").read_text().splitlines()
        assert json.loads(line) == {k: v for k, v in entry.items() if k != "content"}
        assert isinstance(json.loads(line)["received_at"], float)


async def test_ehlo_advertises_extensions_and_no_auth_without_users() -> None:
    async with TestServer() as srv:
        raw = await Raw.connect(srv.port)
        await raw.reply()
        ehlo = await raw.cmd("EHLO client.test", expect="250")
        for extension in ("SIZE", "8BITMIME", "SMTPUTF8", "PIPELINING"):
            assert extension in ehlo
        assert "STARTTLS" not in ehlo and "AUTH" not in ehlo
        await raw.cmd("AUTH PLAIN " + PLAIN, expect="502")
        await raw.close()


async def test_pipelining_can_be_left_out_of_the_ehlo_reply() -> None:
    async with TestServer(pipelining=False) as srv:
        raw = await Raw.connect(srv.port)
        await raw.reply()
        ehlo = await raw.cmd("EHLO client.test", expect="250")
        assert "PIPELINING" not in ehlo and "8BITMIME" in ehlo
        await raw.close()


async def test_the_session_log_tells_which_commands_came_before_the_previous_reply() -> None:
    async with TestServer() as srv:
        raw = await Raw.connect(srv.port)
        await raw.reply()
        await raw.cmd("EHLO client.test", expect="250")
        await raw.send("MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA")
        assert [(await raw.reply())[:3] for _ in range(4)] == ["250", "250", "250", "354"]
        await raw.send("Subject: hi\r\n\r\nHello.\r\n.")
        assert (await raw.reply()).startswith("250")
        await raw.cmd("MAIL FROM:<a@x.test>", expect="250")  # one at a time: not early
        await raw.cmd("RCPT TO:<b@x.test>", expect="250")
        await raw.send("DATA\r\nSubject: too soon\r\n\r\n.")  # text before the 354
        assert (await raw.reply()).startswith("354") and (await raw.reply()).startswith("250")
        await raw.cmd("QUIT", expect="221")
        await raw.close()
        await until(lambda: srv.sessions[0]["closed_at"] is not None)
        [session] = srv.sessions
        assert session["early"] == ["RCPT", "RCPT", "DATA", "BODY"]


# -- TLS and AUTH ----------------------------------------------------------------------------


@pytest.fixture
def trustme_ca() -> trustme.CA:
    return trustme.CA()


def write_cert(ca: trustme.CA, tmp_path: Path, *names: str) -> tuple[Path, Path]:
    issued = ca.issue_cert(*names)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


async def test_starttls_then_auth_with_a_trustme_certificate(
    trustme_ca: trustme.CA, tmp_path: Path
) -> None:
    cert, key = write_cert(trustme_ca, tmp_path, "127.0.0.1", "localhost")
    context = ssl.create_default_context()
    trustme_ca.configure_trust(context)
    async with TestServer(tls_cert=cert, tls_key=key, auth={"alice": "s3cret"}) as srv:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=srv.port, tls_context=context)
        async with client:
            await client.ehlo()  # the one after STARTTLS
            assert client.supports_extension("auth") and not client.supports_extension("starttls")
            await client.login("alice", "s3cret")
            await client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
        await srv.wait_for(1)
        await until(lambda: srv.sessions[0]["closed_at"] is not None)
        [session] = srv.sessions
        assert session["tls"] is True and session["auth_user"] == "alice"


async def test_certificate_for_another_host_is_refused(
    trustme_ca: trustme.CA, tmp_path: Path
) -> None:
    cert, key = write_cert(trustme_ca, tmp_path, "other.example")
    context = ssl.create_default_context()
    trustme_ca.configure_trust(context)
    async with TestServer(tls_cert=cert, tls_key=key) as srv:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=srv.port, tls_context=context)
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.connect()


async def test_auth_before_starttls_is_refused_538_and_mail_needs_auth_530() -> None:
    async with stage_server() as srv:
        raw = await Raw.connect(srv.port)
        await raw.reply()
        ehlo = await raw.cmd("EHLO client.test", expect="250")
        assert "STARTTLS" in ehlo and "AUTH" not in ehlo
        await raw.cmd(f"AUTH PLAIN {PLAIN}", expect="538 5.7.11")
        await raw.cmd("MAIL FROM:<a@x.test>", expect="530 5.7.0")
        await raw.close()


async def test_wrong_password_gets_535() -> None:
    async with stage_server() as srv:
        raw = await open_until(srv, "auth")
        wrong = base64.b64encode(b"\0alice\0nope").decode()
        assert (await raw.cmd(f"AUTH PLAIN {wrong}")).startswith(
            "535 5.7.8 Authentication credentials invalid"
        )
        await raw.cmd("AUTH LOGIN", expect="334")
        await raw.cmd(base64.b64encode(b"alice").decode(), expect="334")
        await raw.cmd(base64.b64encode(b"s3cret").decode(), expect="235")
        await raw.close()


async def test_auth_works_in_clear_without_tls() -> None:
    async with TestServer(auth={"alice": "s3cret"}) as srv:
        await send(srv, ["b@x.test"], username="alice", password="s3cret")
        await srv.wait_for(1)


async def test_no_starttls_hides_starttls_even_with_a_certificate() -> None:
    async with TestServer(self_signed=True, starttls=False) as srv:
        raw = await Raw.connect(srv.port)
        await raw.reply()
        assert "STARTTLS" not in await raw.cmd("EHLO client.test", expect="250")
        await raw.cmd("STARTTLS", expect="454")
        await raw.close()


async def test_implicit_tls() -> None:
    async with TestServer(self_signed=True, implicit_tls=True) as srv:
        assert srv.url == f"smtps://127.0.0.1:{srv.port}"
        raw = await Raw.connect(srv.port, tls=client_context(srv))
        await raw.reply()
        assert "STARTTLS" not in await raw.cmd("EHLO client.test", expect="250")
        await raw.close()
        await aiosmtplib.send(
            MESSAGE,
            sender="a@x.test",
            recipients=["b@x.test"],
            hostname="127.0.0.1",
            port=srv.port,
            use_tls=True,
            tls_context=client_context(srv),
        )
        await srv.wait_for(1)
        assert all(session["tls"] for session in srv.sessions)


# -- stage faults ----------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ALL_STAGES)
async def test_stage_code_replaces_the_reply(stage: str) -> None:
    code = "421 4.3.2 Going away" if stage == "greeting" else "554 5.3.0 Injected"
    async with stage_server(f"{stage}={code}") as srv:
        raw, reply = await stage_reply(srv, stage)
        assert reply == code
        if stage == "greeting":
            assert await raw.closed()
        assert srv.received == []
        await raw.close()


async def test_positive_replies_for_greeting_and_data_end_go_on_normally() -> None:
    async with TestServer(
        faults=["greeting=220 custom.test ready", "data-end=250 2.0.0 Id=7"]
    ) as srv:
        raw = await Raw.connect(srv.port)
        assert await raw.reply() == "220 custom.test ready"
        await raw.cmd("EHLO client.test", expect="250")
        await raw.cmd("MAIL FROM:<>", expect="250")
        await raw.cmd("RCPT TO:<b@x.test>", expect="250")
        await raw.cmd("DATA", expect="354")
        assert await raw.cmd(MESSAGE.decode() + ".") == "250 2.0.0 Id=7"
        await raw.close()
        [entry] = await srv.wait_for(1)
        assert entry["mail_from"] == "" and entry["content"] == MESSAGE


async def test_a_421_reply_closes_the_connection() -> None:
    async with stage_server("mail=421 4.7.0 Too busy") as srv:
        raw, reply = await stage_reply(srv, "mail")
        assert reply == "421 4.7.0 Too busy"
        assert await raw.closed()


@pytest.mark.parametrize("stage", ALL_STAGES)
async def test_stage_drop_closes_without_a_reply(stage: str) -> None:
    async with stage_server(f"{stage}=drop") as srv:
        raw = await open_until(srv, stage)
        if stage == "data":
            assert await raw.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
            await raw.send(MESSAGE.decode() + ".")
        elif stage != "greeting":
            await raw.send(COMMAND[stage])
        with pytest.raises(Closed):
            await raw.reply()
        await raw.close()
        assert srv.received == []


@pytest.mark.parametrize("stage", ALL_STAGES)
async def test_stage_stall_with_seconds_waits_then_carries_on(stage: str) -> None:
    async with stage_server(f"{stage}=stall:0.2") as srv:
        started = time.monotonic()
        raw, reply = await stage_reply(srv, stage)
        assert time.monotonic() - started >= 0.19
        assert reply[0] in "23"
        await raw.close()
        if stage == "data-end":
            assert len(srv.received) == 1


async def test_stall_after_the_final_dot_stores_a_duplicate_when_the_client_retries() -> None:
    async with TestServer(faults=["data-end*1=stall:0.5"]) as srv:
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await send(srv, ["b@x.test"], timeout=0.1)
        await send(srv, ["b@x.test"])
        entries = await srv.wait_for(2)
        assert entries[0]["sha256"] == entries[1]["sha256"]


@pytest.mark.parametrize("action", ["stall", "noreply"])
async def test_stall_and_noreply_keep_quiet_until_the_client_leaves(action: str) -> None:
    async with stage_server(f"mail={action}") as srv:
        raw, _ = await stage_reply(srv, "auth")
        await raw.send(COMMAND["mail"])
        assert await raw.silent_for(0.3)
        await raw.send("NOOP")
        assert await raw.silent_for(0.1)
        await raw.close()
        await until(lambda: srv.sessions[0]["closed_at"] is not None)


async def test_rset_stage_stalls_or_replaces_the_reply_between_transactions() -> None:
    """`rset` acts on the RSET a client sends before reusing a connection: `stall:SECONDS`
    answers 250 late, a code replaces the reply, `stall` keeps quiet."""
    async with stage_server("rset*1=stall:0.2", "rset*1=451 4.3.0 Not now", "rset=stall") as srv:
        raw, _ = await stage_reply(srv, "data-end")
        started = time.monotonic()
        assert (await raw.cmd("RSET")).startswith("250")
        assert time.monotonic() - started >= 0.19
        assert await raw.cmd("RSET") == "451 4.3.0 Not now"
        await raw.send("RSET")
        assert await raw.silent_for(0.3)
        await raw.close()
        assert len(srv.received) == 1


async def test_body_stall_says_354_then_reads_nothing() -> None:
    async with stage_server("body=stall") as srv:
        raw, reply = await stage_reply(srv, "data")
        assert reply.startswith("354")
        # The server stops reading: what the client writes piles up until its writes block.
        written = 0
        with pytest.raises(TimeoutError):
            while written < 64_000_000:
                raw.writer.write(b"y" * 998 + b"\r\n")
                written += 1000
                await asyncio.wait_for(raw.writer.drain(), 0.5)
        assert await raw.silent_for(0.1)
        assert srv.received == []
        # Reading nothing, the server cannot see the client leave: stopping it closes it.
    await raw.close()


async def test_body_drop_hangs_up_after_the_first_line() -> None:
    async with stage_server("body*1=drop") as srv:
        raw, reply = await stage_reply(srv, "data")
        assert reply.startswith("354")
        await raw.send("Subject: x")
        assert await raw.closed()
        await raw.close()
        assert srv.received == []


async def test_badtls_answers_220_and_then_no_tls() -> None:
    async with stage_server("starttls*1=badtls") as srv:
        raw = await open_until(srv, "starttls")
        assert await raw.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
        with pytest.raises(ssl.SSLError):
            await raw.starttls(client_context(srv))
        await raw.close()
        # Only the first STARTTLS: the next connection's handshake succeeds.
        raw = await open_until(srv, "auth")
        await raw.cmd(COMMAND["auth"], expect="235")
        await raw.close()


async def test_star_n_counts_over_the_servers_life() -> None:
    async with TestServer(faults=["rcpt*1=451 4.3.0 Try again later", "mail*2=drop"]) as srv:
        for _ in range(2):
            raw = await Raw.connect(srv.port)
            await raw.reply()
            await raw.cmd("EHLO client.test", expect="250")
            await raw.send("MAIL FROM:<a@x.test>")
            with pytest.raises(Closed):
                await raw.reply()
            await raw.close()
        raw = await Raw.connect(srv.port)
        await raw.reply()
        await raw.cmd("EHLO client.test", expect="250")
        await raw.cmd("MAIL FROM:<a@x.test>", expect="250")
        await raw.cmd("RCPT TO:<b@x.test>", expect="451 4.3.0 Try again later")
        await raw.cmd("RCPT TO:<b@x.test>", expect="250")
        await raw.close()


async def test_set_faults_takes_effect_at_once() -> None:
    async with TestServer() as srv:
        raw = await Raw.connect(srv.port)
        await raw.reply()
        await raw.cmd("EHLO client.test", expect="250")
        srv.set_faults(["mail=452 4.3.1 Out of storage"])
        await raw.cmd("MAIL FROM:<a@x.test>", expect="452 4.3.1")
        srv.set_faults([])
        await raw.cmd("MAIL FROM:<a@x.test>", expect="250")
        await raw.close()
        with pytest.raises(ValueError):
            srv.set_faults(["mail=boom"])


# -- recipient faults ------------------------------------------------------------------------


async def rcpt_replies(srv: TestServer, *addresses: str) -> list[str]:
    raw = await Raw.connect(srv.port)
    await raw.reply()
    await raw.cmd("EHLO client.test", expect="250")
    await raw.cmd("MAIL FROM:<a@x.test>", expect="250")
    replies = [await raw.cmd(f"RCPT TO:<{address}>") for address in addresses]
    await raw.close()
    return replies


async def test_recipient_local_parts_fail_on_demand() -> None:
    async with TestServer() as srv:
        replies = await rcpt_replies(srv, "tempfail@x.test", "permfail@x.test", "ok@x.test")
        assert replies == ["451 4.2.0 Temporary failure", "550 5.1.1 No such user", "250 OK"]
        tries = await rcpt_replies(srv, *["tempfail+2@x.test"] * 3, "permfail+1@x.test")
        assert [reply[:3] for reply in tries] == ["451", "451", "250", "550"]
        assert (await rcpt_replies(srv, "permfail+1@x.test")) == ["250 OK"]


async def test_stall_recipient_gets_no_reply() -> None:
    async with TestServer() as srv:
        raw = await Raw.connect(srv.port)
        await raw.reply()
        await raw.cmd("EHLO client.test", expect="250")
        await raw.cmd("MAIL FROM:<a@x.test>", expect="250")
        await raw.send("RCPT TO:<stall@x.test>")
        assert await raw.silent_for(0.3)
        await raw.close()


async def test_disconnect_in_data_recipient_drops_during_the_body() -> None:
    async with TestServer() as srv:
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await send(srv, ["disconnect-in-data+1@x.test"])
        await send(srv, ["disconnect-in-data+1@x.test"])
        [entry] = await srv.wait_for(1)
        assert entry["rcpt_to"] == ["disconnect-in-data+1@x.test"]


# -- faults file and session log --------------------------------------------------------------


async def test_faults_file_is_reread_for_each_connection(tmp_path: Path) -> None:
    path = tmp_path / "faults.txt"
    path.write_text("# first\nmail=451 4.3.0 From the file\n")
    async with TestServer(faults_file=path) as srv:
        raw = await Raw.connect(srv.port)
        await raw.reply()
        await raw.cmd("EHLO client.test", expect="250")
        path.write_text("rcpt*1=452 4.5.3 Too many recipients\n")
        await raw.cmd("MAIL FROM:<a@x.test>", expect="451 4.3.0 From the file")
        await raw.close()
        assert (await rcpt_replies(srv, "b@x.test", "b@x.test")) == [
            "452 4.5.3 Too many recipients",
            "250 OK",
        ]
        assert (await rcpt_replies(srv, "b@x.test")) == ["250 OK"]  # same content, spent
        path.unlink()
        assert (await rcpt_replies(srv, "b@x.test")) == ["250 OK"]


async def test_session_log_has_verbs_tls_and_user_but_no_secrets() -> None:
    async with stage_server() as srv:
        raw, reply = await stage_reply(srv, "data-end")
        assert reply.startswith("250")
        await raw.cmd("QUIT", expect="221")
        await raw.close()
        await until(lambda: srv.sessions[0]["closed_at"] is not None)
        [session] = srv.sessions
        assert session["commands"] == [
            "EHLO",
            "STARTTLS",
            "EHLO",
            "AUTH",
            "MAIL",
            "RCPT",
            "DATA",
            "QUIT",
        ]
        assert session["tls"] is True and session["auth_user"] == "alice"
        assert session["opened_at"] <= session["closed_at"]
        logged = (srv.maildir / "sessions.jsonl").read_text()
        assert json.loads(logged) == session
        assert PLAIN not in logged and "s3cret" not in logged


# -- threads and the command line -------------------------------------------------------------


def test_threaded_server_serves_synchronous_clients() -> None:
    with ThreadedTestServer(self_signed=True) as srv:
        assert srv.ca_cert_path is not None
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=5) as client:
            client.starttls(context=ssl.create_default_context(cafile=str(srv.ca_cert_path)))
            client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
        [entry] = srv.wait_for(1)
        assert entry["content"] == MESSAGE


def read_lines(stream: Iterable[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def test_cli_runs_until_sigterm(tmp_path: Path) -> None:
    maildir = tmp_path / "mail"
    command = [sys.executable, "-m", "mailvia.testserver", "--listen", "127.0.0.1:0"]
    process = subprocess.Popen(
        [*command, "--self-signed", "--maildir", str(maildir)], stdout=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        seen: dict[str, str] = {}
        deadline = time.monotonic() + 20
        while "listening" not in seen:
            key, _, value = lines.get(timeout=max(0.1, deadline - time.monotonic())).partition(" ")
            seen[key] = value.strip()
        assert seen["maildir"] == str(maildir.resolve())
        port = int(seen["listening"].removeprefix("smtp://127.0.0.1:"))
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            client.starttls(context=ssl.create_default_context(cafile=seen["ca-cert"]))
            client.sendmail("a@x.test", ["b@x.test"], MESSAGE)
        log = maildir / "received.jsonl"
        while not log.exists() or not log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert json.loads(log.read_text())["sha256"] == hashlib.sha256(MESSAGE).hexdigest()
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        assert process.stdout is not None
        process.stdout.close()
