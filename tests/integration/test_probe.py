"""Test connection against the real test SMTP server on 127.0.0.1: every step, every hint, the
budget, the outbound address guard, and reconnecting a disconnected channel."""

from __future__ import annotations

import asyncio
import email
import ipaddress
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mailvia.domain.channel import Auth, Channel, ChannelState, Kind, Owner, Scope, Security
from mailvia.domain.message import State
from mailvia.domain.probe import HINTS, ProbeFailure, ProbeReport, ProbeStep
from mailvia.outbox.channels import ChannelSpec
from mailvia.outbox.ports import Credentials
from mailvia.outbox.probe import ChannelTester
from mailvia.testserver import TestServer
from mailvia.transport.guard import REFUSED_MESSAGE, OutboundGuard
from mailvia.transport.probe import Prober
from support.ports import closed_port
from support.world import SHORT, Certs, World, make_certs

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
USER, PASSWORD = "jane", "s3cret-pass"
CREDS = Credentials(USER, PASSWORD)
ALL_STEPS = ["resolve", "connect", "tls", "ehlo", "auth"]


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def prober() -> Prober:
    return Prober(OutboundGuard(LOOPBACK), helo_name="mailvia.test")


def server(certs: Certs, **options: Any) -> TestServer:
    options.setdefault("auth", {USER: PASSWORD})
    return TestServer(tls_cert=certs.cert, tls_key=certs.key, **options)


def channel(port: int, certs: Certs | None = None, **changes: Any) -> Channel:
    base = Channel(
        id="ch-probe",
        organization_id="org-1",
        name="relay",
        kind=Kind.SMTP,
        host="127.0.0.1",
        port=port,
        security=Security.STARTTLS,
        auth=Auth.PLAIN,
        scope=Scope.ADDRESS,
        owner=Owner(user_id="user-1"),
        username=USER,
        has_password=True,
        ca_pem=certs.ca_pem if certs else None,
        address="jane@acme.test",
        timeouts=SHORT,
    )
    return replace(base, **changes)


def names(report: ProbeReport) -> list[str]:
    return [step.name for step in report.steps]


def only_failure(report: ProbeReport) -> ProbeStep:
    assert not report.ok
    failed = report.failed
    assert failed is not None and failed is report.steps[-1]
    assert all(step.ok for step in report.steps[:-1])
    return failed


# -- passing -----------------------------------------------------------------------------------


async def test_passing_probe_shows_every_step_with_tls_details_and_extensions(
    prober: Prober, certs: Certs
) -> None:
    async with server(certs) as srv:
        report = await prober.probe(channel(srv.port, certs), CREDS)
    assert report.ok, report
    assert names(report) == ALL_STEPS
    resolve, connect, tls, ehlo, auth = report.steps
    assert resolve.detail == "127.0.0.1 resolves to 127.0.0.1"
    assert connect.detail == f"connected to 127.0.0.1 port {srv.port}"
    assert connect.reply is not None and connect.reply.startswith("220 ")
    assert tls.reply is not None and tls.reply.startswith("220")  # the STARTTLS reply
    assert tls.detail.startswith("TLSv1.")
    assert "IP Address:127.0.0.1" in tls.detail and "DNS:localhost" in tls.detail
    assert re.search(r"valid until \d{4}-\d\d-\d\d \d\d:\d\d UTC \(\d+ days\)$", tls.detail)
    assert ehlo.reply is not None and ehlo.reply.startswith("250 ")
    assert "AUTH LOGIN PLAIN" in ehlo.detail and "SIZE" in ehlo.detail
    assert auth.reply is not None and auth.reply.startswith("235")
    assert auth.detail == "signed in as jane with PLAIN"
    assert all(step.hint is None for step in report.steps)
    [session] = srv.sessions
    assert session["tls"] and session["auth_user"] == USER and "MAIL" not in session["commands"]


async def test_passing_probe_with_a_test_message_over_implicit_tls(
    prober: Prober, certs: Certs
) -> None:
    async with server(certs, implicit_tls=True) as srv:
        ch = channel(srv.port, certs, security=Security.TLS)
        report = await prober.probe(ch, CREDS, to="bob@example.com")
        [got] = await srv.wait_for(1)
    assert report.ok, report
    assert names(report) == [*ALL_STEPS, "message"]
    assert report.steps[2].reply is None and report.steps[2].detail.startswith("TLSv1.")
    message = report.steps[-1]
    assert message.detail == "test message from jane@acme.test to bob@example.com accepted"
    assert message.reply is not None and message.reply.startswith("250")
    assert got["mail_from"] == "jane@acme.test" and got["rcpt_to"] == ["bob@example.com"]
    assert email.message_from_bytes(got["content"])["Subject"] == "mailvia test message"


async def test_auth_none_skips_auth_with_a_note(prober: Prober, certs: Certs) -> None:
    async with server(certs, auth=None) as srv:
        ch = channel(srv.port, certs, auth=Auth.NONE, username=None)
        report = await prober.probe(ch, None)
    assert report.ok and names(report) == ALL_STEPS
    assert report.steps[-1].detail.startswith("skipped: ")


# -- one hint per failure ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "step", "reply", "hint"),
    [
        (
            "auth=535 5.7.8 Authentication credentials invalid",
            "auth",
            "535 5.7.8 Authentication credentials invalid",
            "Wrong user name or password",
        ),
        (
            "auth=535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled",
            "auth",
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled",
            "SMTP AUTH is disabled for this mailbox or tenant: an admin must enable it, or use "
            '"Reconnect with Microsoft 365 (OAuth)"',
        ),
        (
            "auth=534 5.7.9 Application-specific password required",
            "auth",
            "534 5.7.9 Application-specific password required",
            "An app password is required",
        ),
        (
            "auth=550 5.7.30 Basic authentication is not supported for Client Submission",
            "auth",
            "550 5.7.30 Basic authentication is not supported for Client Submission",
            "connect with OAuth instead",
        ),
        (
            "mail=530 5.7.57 Client not authenticated to send mail",
            "message",
            "530 5.7.57 Client not authenticated to send mail",
            "not authenticated to send mail",
        ),
    ],
)
async def test_each_server_reply_gets_its_hint(
    prober: Prober, certs: Certs, fault: str, step: str, reply: str, hint: str
) -> None:
    async with server(certs, faults=[fault]) as srv:
        report = await prober.probe(channel(srv.port, certs), CREDS, to="bob@example.com")
        assert srv.received == []
    failed = only_failure(report)
    assert (failed.name, failed.reply) == (step, reply)
    assert failed.hint is not None and hint in failed.hint
    assert names(report) == [*ALL_STEPS, "message"][: names(report).index(step) + 1]


@pytest.mark.parametrize(
    ("kind", "hint"),
    [
        ({}, "Wrong user name or password: check both (changing the mailbox's password"),
        (
            {"preset": "sendgrid"},
            "SendGrid refused the sign-in: the user name is the word apikey and the password an "
            "API key allowed to send mail. Check both;",
        ),
        ({"preset": None}, "The relay refused the sign-in: check the user name and password "),
    ],
    ids=["mailbox", "provider", "team-relay"],
)
async def test_a_refused_password_hint_speaks_of_the_channels_kind(
    prober: Prober, certs: Certs, kind: dict[str, Any], hint: str
) -> None:
    """A team relay or a provider's account has no mailbox, 2-step verification or OAuth: its
    refused sign-in says what that channel signs in with."""
    team = {"scope": Scope.DOMAIN, "address": None, "domains": ("acme.test",)}
    changes = {**team, "owner": Owner(team_id="team-1"), **kind} if kind else {}
    fault = "auth=535 5.7.8 Authentication credentials invalid"
    async with server(certs, faults=[fault]) as srv:
        report = await prober.probe(channel(srv.port, certs, **changes), CREDS)
    failed = only_failure(report)
    assert failed.name == "auth" and failed.hint is not None
    assert failed.hint.startswith(hint)
    if kind:
        assert "mailbox" not in failed.hint and "OAuth" not in failed.hint
        assert "2-step" not in failed.hint


async def test_certificate_for_another_host_name(prober: Prober, tmp_path: Path) -> None:
    other = make_certs(tmp_path / "other", "mail.other.test")
    async with server(other) as srv:
        report = await prober.probe(channel(srv.port, other, host="localhost"), CREDS)
        assert all("AUTH" not in s["commands"] for s in srv.sessions)
    failed = only_failure(report)
    assert failed.name == "tls" and failed.reply is None
    assert "certificate verification failed" in failed.detail and "mismatch" in failed.detail
    assert failed.hint == HINTS[ProbeFailure.NAME_MISMATCH]


async def test_certificate_from_an_unknown_authority(prober: Prober, certs: Certs) -> None:
    async with server(certs) as srv:
        report = await prober.probe(channel(srv.port, None), CREDS)
    failed = only_failure(report)
    assert failed.name == "tls" and failed.hint == HINTS[ProbeFailure.UNTRUSTED_CERTIFICATE]


async def test_server_without_starttls_is_never_sent_credentials(
    prober: Prober, certs: Certs
) -> None:
    async with server(certs, starttls=False) as srv:
        report = await prober.probe(channel(srv.port, certs), CREDS)
        assert all("AUTH" not in s["commands"] for s in srv.sessions)
    failed = only_failure(report)
    assert failed.name == "tls" and failed.hint == HINTS[ProbeFailure.NO_STARTTLS]
    assert failed.reply is not None and failed.reply.startswith("250")  # the EHLO it got


async def test_connection_refused_on_a_closed_port(prober: Prober) -> None:
    port = closed_port()
    report = await prober.probe(channel(port), CREDS)
    failed = only_failure(report)
    assert names(report) == ["resolve", "connect"]
    assert failed.detail == f"connection refused on port {port}"
    assert failed.hint == HINTS[ProbeFailure.CONNECTION_REFUSED]


async def test_unknown_host_name(prober: Prober) -> None:
    report = await prober.probe(channel(587, host="no-such-host.invalid"), CREDS)
    failed = only_failure(report)
    assert failed.name == "resolve" and failed.hint == HINTS[ProbeFailure.NOT_RESOLVED]


async def test_timeout_when_the_greeting_never_comes(prober: Prober, certs: Certs) -> None:
    async with server(certs, faults=["greeting=stall"]) as srv:
        started = time.monotonic()
        report = await prober.probe(channel(srv.port, certs), CREDS, timeout=1.0)
        elapsed = time.monotonic() - started
    failed = only_failure(report)
    assert failed.name == "connect" and failed.hint == HINTS[ProbeFailure.TIMEOUT]
    assert failed.detail == "no answer within the 1 s budget"
    assert 0.9 < elapsed < 1.5


BUDGET = 1.0  # seconds: the steps before the stalled one take a fraction of it, even under load


@pytest.mark.parametrize(
    ("fault", "step"),
    [
        ("greeting=stall", "connect"),
        ("ehlo=stall", "ehlo"),
        ("starttls=stall", "tls"),
        ("auth=stall", "auth"),
        ("mail=stall", "message"),
        ("data-end=stall", "message"),
        ("greeting=stall:0.6", "ehlo"),  # slow steps add up: the budget is for them all
    ],
)
async def test_the_whole_probe_never_takes_more_than_its_budget(
    prober: Prober, certs: Certs, fault: str, step: str
) -> None:
    faults = [fault] if fault != "greeting=stall:0.6" else [fault, "ehlo=stall:0.6"]
    async with server(certs, faults=faults) as srv:
        started = time.monotonic()
        report = await prober.probe(
            channel(srv.port, certs), CREDS, to="bob@example.com", timeout=BUDGET
        )
        elapsed = time.monotonic() - started
    assert elapsed < BUDGET + 0.3
    failed = only_failure(report)
    assert failed.name == step and failed.hint == HINTS[ProbeFailure.TIMEOUT]


async def test_no_password_in_any_reply(prober: Prober, certs: Certs) -> None:
    echo = f"auth=535 5.7.8 bad password {PASSWORD} for {USER}"
    async with server(certs, faults=[echo]) as srv:
        report = await prober.probe(channel(srv.port, certs), CREDS)
    failed = only_failure(report)
    assert failed.reply == "535 5.7.8 bad password [secret] for jane"
    assert PASSWORD not in repr(report)


# -- the outbound address guard ----------------------------------------------------------------


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[int]]]:
    accepted: list[int] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    srv = await asyncio.start_server(count, "127.0.0.1", 0)
    yield int(srv.sockets[0].getsockname()[1]), accepted
    srv.close()
    await srv.wait_closed()


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "::1",
        "169.254.169.254",
        "10.0.0.1",
        "::ffff:127.0.0.1",
        "2130706433",
        "localhost",
    ],
)
async def test_guard_refuses_local_and_private_targets_with_one_message(
    listener: tuple[int, list[int]], host: str
) -> None:
    open_port, accepted = listener
    prober = Prober(OutboundGuard(()), helo_name="mailvia.test")
    reports = [
        await prober.probe(channel(port, host=host), CREDS, to="bob@example.com")
        for port in (open_port, closed_port())
    ]
    refused = ProbeStep("resolve", False, REFUSED_MESSAGE, None, HINTS[ProbeFailure.REFUSED_TARGET])
    assert reports[0] == reports[1] == ProbeReport((refused,), False)
    await asyncio.sleep(0.05)  # a connection, had one been made, would have been accepted
    assert accepted == []


# -- the use case: test without saving, reconnect ----------------------------------------------


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path / "data")
    yield w
    await w.close()


def channel_tester(world: World) -> ChannelTester:
    assert world.services.tester is not None
    return world.services.tester


async def test_test_spec_probes_an_unsaved_channel(world: World, certs: Certs) -> None:
    async with server(certs, auth={"jane": "secret"}) as srv:
        spec = ChannelSpec(
            name="draft",
            host="127.0.0.1",
            port=srv.port,
            username="jane",
            password="secret",
            ca_pem=certs.ca_pem,
            address="jane@acme.test",
        )
        report = await channel_tester(world).test_spec(world.jane, spec, now=time.time())
    assert report.ok, report
    assert world.store.find_channel(world.jane.organization_id, "draft") is None


async def test_a_team_channel_does_not_guess_a_sender(world: World, certs: Certs) -> None:
    """A team (domain) channel sends from its members' addresses: its test does not try a
    guessed one (postmaster@, the admin's own), which a provider taking only verified senders
    refuses although every real sender is taken. The `sender` step says it was not tried and
    why, the test passes (the form saves), and the server saw no MAIL FROM."""
    refusal = "mail=550 5.7.1 The from address does not match a verified Sender Identity"
    async with server(certs, auth={"jane": "secret"}, faults=[refusal]) as srv:
        spec = ChannelSpec(
            name="team-relay",
            host="127.0.0.1",
            port=srv.port,
            username="jane",
            password="secret",
            ca_pem=certs.ca_pem,
            scope=Scope.DOMAIN,
            domains=("acme.test",),
            team_name="sales",
        )
        tester = channel_tester(world)
        report = await tester.test_spec(world.admin, spec, now=time.time())
        saved = world.services.channels.add(world.admin, spec, time.time())[0]
        retested = await tester.test(world.admin, saved.name, to=None, now=time.time())
        reconnected = await tester.reconnect(world.admin, saved.name, password=None, now=0)
        commands = [c for s in srv.sessions for c in s["commands"]]
    for got in (report, retested, reconnected.report):
        assert got.ok, got
        assert names(got) == [*ALL_STEPS, "sender"]
        skipped = got.steps[-1]
        assert skipped.skipped and skipped.reply is None and skipped.hint is None
        assert skipped.detail.startswith("MAIL FROM not tried: this channel sends from its members")
    assert "MAIL" not in commands


def counts(world: World, ch: Channel) -> dict[State, int]:
    found = world.store.queue_counts(ch.organization_id)[ch.id]
    return {state: count for state, count in found.items() if count}


async def disconnected_with_held_mail(world: World, port: int, certs: Certs) -> Channel:
    ch = world.channel(port, certs=certs, password="wrong", max_connections=1)
    world.send(count=50)
    await world.services.dispatcher.run_once(time.time)
    ch = world.store.get_channel(ch.id)
    assert ch.state is ChannelState.DISCONNECTED
    assert counts(world, ch) == {State.HELD: 50}
    return ch


async def test_reconnect_releases_held_mail_in_its_original_order(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    store = world.store
    async with server(certs, auth={"jane": "secret"}, maildir=tmp_path / "caught") as srv:
        ch = await disconnected_with_held_mail(world, srv.port, certs)
        # A test with a replacement password passes, but saves nothing and releases nothing.
        tried = await channel_tester(world).test(
            world.jane, ch.name, password="secret", now=time.time()
        )
        assert tried.ok
        assert store.get_channel(ch.id).state is ChannelState.DISCONNECTED
        creds = world.services.channels.credentials(ch)
        assert creds is not None and creds.password == "wrong"

        again = await channel_tester(world).reconnect(
            world.jane, ch.name, password="still-wrong", now=time.time()
        )
        assert not again.report.ok and not again.reconnected and again.released == 0
        assert again.report.failed is not None and again.report.failed.name == "auth"
        assert store.get_channel(ch.id).state is ChannelState.DISCONNECTED
        assert counts(world, ch) == {State.HELD: 50}

        done = await channel_tester(world).reconnect(
            world.jane, ch.name, password="secret", now=time.time()
        )
        assert done.report.ok and done.reconnected and done.released == 50
        assert store.get_channel(ch.id).state is ChannelState.ACTIVE
        events, _ = store.list_events(ch.organization_id, cursor=None, limit=500)
        [event] = [e for e in events if e.type == "channel.reconnected"]
        assert event.data == {"channel_id": ch.id, "released": 50}

        for _ in range(20):
            if await world.services.dispatcher.run_once(time.time) == 0:
                break
        got = await srv.wait_for(50)
    subjects = [email.message_from_bytes(e["content"])["Subject"] for e in got]
    assert subjects == [f"hello {i}" for i in range(50)]
    assert len(got) == 50
    assert counts(world, ch) == {State.DELIVERED: 50}


async def test_reconnect_tries_the_sender_that_disconnected_the_channel(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    """A server that refuses the channel's sender at MAIL FROM disconnects it; reconnecting
    tries MAIL FROM with that address (then RSET, no DATA) and fails until the server takes
    it, so a reconnect that 'passes' never sends the held mail into the same refusal."""
    store, refusal = world.store, "mail=550 5.7.1 sender address rejected"
    faults, caught = [refusal], tmp_path / "caught"
    async with server(certs, auth={"jane": "secret"}, faults=faults, maildir=caught) as srv:
        ch = world.channel(srv.port, certs=certs, max_connections=1)
        world.send(count=2)
        await world.services.dispatcher.run_once(time.time)
        ch = store.get_channel(ch.id)
        assert ch.state is ChannelState.DISCONNECTED and counts(world, ch) == {State.HELD: 2}
        before = len(srv.sessions)

        tried = await channel_tester(world).reconnect(
            world.jane, ch.name, password=None, now=time.time()
        )
        assert not tried.reconnected and tried.released == 0
        failed = only_failure(tried.report)
        assert names(tried.report) == [*ALL_STEPS, "sender"]
        assert failed.detail == "the server refused mail from jane@acme.test"
        assert failed.reply == "550 5.7.1 sender address rejected"
        assert failed.hint is not None and failed.hint.startswith("The server does not take mail")
        assert store.get_channel(ch.id).state is ChannelState.DISCONNECTED
        assert counts(world, ch) == {State.HELD: 2}

        srv.set_faults([])
        done = await channel_tester(world).reconnect(
            world.jane, ch.name, password=None, now=time.time()
        )
        assert done.report.ok and done.reconnected and done.released == 2
        sender = done.report.steps[-1]
        assert sender.name == "sender" and sender.reply is not None
        assert sender.reply.startswith("250")
        assert sender.detail.startswith("the server takes mail from jane@acme.test")
        probes = srv.sessions[before:]
        assert len(probes) == 2
        assert all("DATA" not in s["commands"] and "RCPT" not in s["commands"] for s in probes)
        assert all("MAIL" in s["commands"] for s in probes)
        assert "RSET" in probes[-1]["commands"]
        assert srv.received == []  # the tests sent nothing
