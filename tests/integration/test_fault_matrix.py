"""The fault matrix (../shared/research/reliability_security.md section (b); docs/faults.md):
each fault injected by the project's test server on 127.0.0.1, delivered through the real
dispatcher, transport and SQLite store, and every test ends with the reconciliation
(accepted = delivered + bounced + expired + pending, no unexplained duplicate).

Time is driven with run_once(at(now)) where the fault is about what happens next; the stall rows
run the dispatcher for real (run_forever) with the stalled phase's timeout cut to a second,
to show that timeout firing while another channel keeps delivering.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from mailvia.domain.channel import Auth, Channel, ChannelState, Security
from mailvia.domain.clock import SteppingClock
from mailvia.domain.concurrency import RECOVER_DELIVERIES
from mailvia.domain.message import State
from mailvia.domain.retry import LAST_TRY_GRACE, RetryPolicy
from mailvia.outbox.channels import ChannelSpec
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.receipts import Receipt
from mailvia.outbox.submit import Submission
from mailvia.testserver import TestServer
from support.ports import closed_port
from support.receiver import Receiver
from support.reconcile import Reconciliation, message_id_of, reconcile
from support.world import SHORT, Certs, World, make_certs

at = SteppingClock  # the dispatcher's clock, standing at a given time

LATER = 400.0  # past the first retry (5 min +-20 %)


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One World's data folder for the module; each test works on its own copy."""
    folder = tmp_path_factory.mktemp("template") / "data"
    asyncio.run(World(folder).close())
    return folder


@pytest.fixture
async def world(template: Path, tmp_path: Path) -> AsyncIterator[World]:
    w = World.copied(template, tmp_path / "data")
    yield w
    await w.close()


def tls_server(certs: Certs, maildir: Path, **kw: object) -> TestServer:
    return TestServer(
        tls_cert=certs.cert, tls_key=certs.key, auth={"jane": "secret"}, maildir=maildir, **kw
    )  # type: ignore[arg-type]


def settled(
    world: World, receipts: list[Receipt], maildir: Path, **expected: int
) -> Reconciliation:
    """Reconcile and check the counts given (delivered=, bounced=, expired=, pending=,
    duplicates=, flagged=); no problem may be left."""
    result = reconcile([r.id for r in receipts], world.settings.database_url, maildir)
    assert not result.problems, str(result)
    for name, count in expected.items():
        assert getattr(result, name) == count, f"{name}: {result}"
    return result


def commands(server: TestServer) -> list[str]:
    return [c for s in server.sessions for c in s["commands"]]


# -- connection refused ----------------------------------------------------------------------


async def test_connection_refused_backs_off_then_delivers_once_the_server_is_up(
    world: World, tmp_path: Path
) -> None:
    """The message whose connection was refused waits for its retry; the channel's other mail
    is not tried against the dead server: the channel waits 60 s (doubling while it stays
    down), then its mail goes."""
    port = closed_port()
    channel = world.channel(port, security=Security.NONE, auth=Auth.NONE, max_connections=1)
    receipts = world.send(count=5)
    now = time.time()
    assert await world.services.dispatcher.run_once(at(now)) == 1  # one try, not five
    first, *rest = (world.store.get_message(r.id) for r in receipts)
    assert first.state is State.DEFERRED and not first.possible_duplicate
    [attempt] = first.attempts
    assert (attempt.stage, attempt.reply.code, attempt.reply.enhanced) == ("connect", 451, "4.4.2")
    assert first.next_attempt_at is not None and first.next_attempt_at >= now + 239
    assert [(v.state, v.attempts) for v in rest] == [(State.QUEUED, ())] * 4
    paused = world.store.get_channel(channel.id)
    assert paused.throttled_until == pytest.approx(now + 60, abs=2)
    # No tight loop: nothing is tried while the channel waits.
    assert await world.services.dispatcher.run_once(at(now + 30)) == 0
    # Still down after the wait: one more try, and the wait doubles.
    assert await world.services.dispatcher.run_once(at(now + 61)) == 1
    paused = world.store.get_channel(channel.id)
    assert paused.throttle_level == 2
    assert paused.throttled_until == pytest.approx(now + 61 + 120, abs=2)
    async with TestServer(port=port, maildir=tmp_path / "caught") as server:
        assert await world.services.dispatcher.run_once(at(now + 182)) == 3
        assert world.store.get_channel(channel.id).throttle_level == 0
        assert await world.services.dispatcher.run_once(at(now + 61 + LATER)) == 2
        await server.wait_for(5)
    settled(world, receipts, tmp_path / "caught", delivered=5, duplicates=0)


# -- 421 at the greeting and mid-session ------------------------------------------------------


@pytest.mark.parametrize("stage", ["greeting", "ehlo", "starttls", "auth", "mail", "rcpt", "data"])
async def test_a_421_closes_the_session_and_the_message_is_retried(
    world: World, certs: Certs, tmp_path: Path, stage: str
) -> None:
    maildir = tmp_path / "caught"
    fault = f"{stage}*1=421 4.3.2 Service shutting down"
    async with tls_server(certs, maildir, faults=[fault]) as server:
        channel = world.channel(server.port, certs=certs)
        receipts = world.send()
        now = time.time()
        assert await world.services.dispatcher.run_once(at(now)) == 1
        view = world.store.get_message(receipts[0].id)
        assert view.state is State.DEFERRED and not view.possible_duplicate
        assert (view.attempts[0].stage, view.attempts[0].reply.code) == (stage, 421)
        assert world.store.get_channel(channel.id).state is ChannelState.ACTIVE
        assert [s["closed_at"] is not None for s in server.sessions] == [True]  # hung up
        assert await world.services.dispatcher.run_once(at(now + LATER)) == 1
        await server.wait_for(1)
        assert len(server.sessions) == 2  # a new connection for the retry
    settled(world, receipts, maildir, delivered=1, duplicates=0)


def open_at(server: TestServer, t: float) -> int:
    """How many connections the server had open at `t` (idle ones included)."""
    return sum(
        1
        for s in server.sessions
        if s["opened_at"] <= t and (s["closed_at"] is None or s["closed_at"] > t)
    )


def open_at_each_delivery(server: TestServer) -> list[int]:
    """For each message the server stored, in order, how many connections it had open then."""
    return [open_at(server, message["received_at"]) for message in server.received]


async def test_a_421_lowers_the_channels_concurrency_which_then_grows_back(
    world: World, certs: Certs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Row 12's "lower concurrency for that channel; the metric drops, then recovers": five
    connections, two of them told 421 at MAIL in one burst; the channel goes down to two
    connections at once (halved once: both transactions started before the cut, one cohort)
    and back up one per RECOVER_DELIVERIES deliveries. Only the connections above the new
    width close: the two told 421, and one of the three whose transaction was in flight, which
    ends it first; the other two are reused, and only the growth back opens new ones."""
    maildir = tmp_path / "caught"
    total, limit, cut = 70, 5, 2
    # Every transaction waits a little after its final dot, so the connections overlap.
    faults = ["mail*2=421 4.3.2 Service shutting down", "data-end=stall:0.05"]
    async with tls_server(certs, maildir, faults=faults) as server:
        channel = world.channel(server.port, certs=certs, max_connections=limit)
        receipts = world.send(count=total)
        now = time.time()
        dispatcher = world.services.dispatcher
        assert await dispatcher.run_once(at(now)) == total
        assert dispatcher.concurrency.allowed(channel, now) == limit  # back to full width
        cuts = [r.getMessage() for r in caplog.records if "(421)" in r.getMessage()]
        assert [c.rsplit("; ", 1)[1] for c in cuts] == [f"{cut} connections at once"], cuts
        await server.wait_for(total - 2)
        counts = open_at_each_delivery(server)
        refused = [s for s in server.sessions if "MAIL" in " ".join(s["commands"][-1:])]
        assert len(refused) == 2
        assert all(s["closed_at"] is not None for s in refused)  # the server said so
        # Several at once before the 421s (counted when each connection opened: at the first
        # deliveries a connection still in its TLS handshake on a busy machine is not open yet).
        assert max(open_at(server, s["opened_at"]) for s in server.sessions[:limit]) >= 3
        low = counts.index(cut)  # down to two connections after them (one cut, not two) ...
        assert counts[low : low + 5] == [cut] * 5, counts
        assert min(counts[low:]) == cut, counts
        # ... then one more at a time, never faster than one per RECOVER_DELIVERIES (the
        # server sees a connection a moment after the gate lets it in, and the deliveries in
        # flight at the 421s count towards the first step: one of slack), back to five.
        for i in range(low, len(counts)):
            assert counts[i] <= cut + 1 + (i - low) // RECOVER_DELIVERIES, (i, counts)
        assert counts[-1] == limit, counts
        # The five first, then one new connection per step back up (the pool was not retired).
        assert len(server.sessions) == limit + (limit - cut), len(server.sessions)
        assert await dispatcher.run_once(at(now + LATER)) == 2  # the two refused, retried
        await server.wait_for(total)
    settled(world, receipts, maildir, delivered=total, duplicates=0)


# -- 4xx and 5xx at each command --------------------------------------------------------------

TEMPORARY = "451 4.3.0 Temporary local problem"
# What a 5xx at each stage means: the server refuses the channel (held, the channel
# disconnected) or the message (bounced).
PERMANENT = [
    ("greeting", "554 5.3.2 No service here", State.HELD),
    ("ehlo", "550 5.7.1 Client host rejected", State.HELD),
    ("starttls", "554 5.7.3 TLS not available", State.HELD),
    ("auth", "535 5.7.8 Authentication credentials invalid", State.HELD),
    ("mail", "550 5.7.1 Sender not allowed", State.HELD),
    ("rcpt", "550 5.1.1 No such user", State.BOUNCED),
    ("data", "554 5.5.1 No valid recipients", State.BOUNCED),
    ("data-end", "554 5.6.0 Message content rejected", State.BOUNCED),
]


@pytest.mark.parametrize("stage", ["greeting", "ehlo", "starttls", "auth", "mail", "rcpt", "data"])
async def test_a_4xx_at_each_command_defers_and_the_retry_delivers_once(
    world: World, certs: Certs, tmp_path: Path, stage: str
) -> None:
    maildir = tmp_path / "caught"
    async with tls_server(certs, maildir, faults=[f"{stage}*1={TEMPORARY}"]) as server:
        channel = world.channel(server.port, certs=certs)
        receipts = world.send()
        now = time.time()
        await world.services.dispatcher.run_once(at(now))
        view = world.store.get_message(receipts[0].id)
        assert view.state is State.DEFERRED
        attempt = view.attempts[0]
        assert (attempt.stage, attempt.outcome, str(attempt.reply)) == (stage, "retry", TEMPORARY)
        assert view.next_attempt_at is not None and view.next_attempt_at >= now + 239
        assert world.store.get_channel(channel.id).state is ChannelState.ACTIVE
        assert await world.services.dispatcher.run_once(at(now + LATER)) == 1
        await server.wait_for(1)
    settled(world, receipts, maildir, delivered=1, duplicates=0)


async def test_a_4xx_after_the_final_dot_defers_and_the_retry_delivers_once(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    maildir = tmp_path / "caught"
    async with tls_server(certs, maildir, faults=[f"data-end*1={TEMPORARY}"]) as server:
        world.channel(server.port, certs=certs)
        receipts = world.send()
        now = time.time()
        await world.services.dispatcher.run_once(at(now))
        view = world.store.get_message(receipts[0].id)
        assert view.state is State.DEFERRED and not view.possible_duplicate  # a reply came
        assert server.received == []
        await world.services.dispatcher.run_once(at(now + LATER))
        await server.wait_for(1)
    settled(world, receipts, maildir, delivered=1, duplicates=0)


@pytest.mark.parametrize(("stage", "reply", "state"), PERMANENT)
async def test_a_5xx_at_each_command_bounces_the_message_or_holds_the_channel(
    world: World, certs: Certs, tmp_path: Path, stage: str, reply: str, state: State
) -> None:
    maildir = tmp_path / "caught"
    async with tls_server(certs, maildir, faults=[f"{stage}={reply}"]) as server:
        channel = world.channel(server.port, certs=certs)
        receipts = world.send(count=2)
        now = time.time()
        await world.services.dispatcher.run_once(at(now))
        views = [world.store.get_message(r.id) for r in receipts]
        assert server.received == []
        got = world.store.get_channel(channel.id)
        if state is State.BOUNCED:
            assert [v.state for v in views] == [State.BOUNCED] * 2
            for view in views:
                [recipient] = view.recipients
                assert str(recipient.reply) == reply  # the server's own words are kept
            assert got.state is ChannelState.ACTIVE
            # Terminal: never tried again.
            assert await world.services.dispatcher.run_once(at(now + LATER)) == 0
            settled(world, receipts, maildir, bounced=2)
            return
        # Refused before any message went: the channel is disconnected, its mail held.
        assert [v.state for v in views] == [State.HELD] * 2
        assert got.state is ChannelState.DISCONNECTED and reply in (got.state_reason or "")
        if stage in ("greeting", "ehlo", "starttls", "auth"):
            assert "MAIL" not in commands(server)
        events, _ = world.store.list_events(world.jane.organization_id, cursor=None, limit=100)
        [disconnected] = [e for e in events if e.type == "channel.disconnected"]
        assert disconnected.data["held"] == 2
        assert await world.services.dispatcher.run_once(at(now + LATER)) == 0  # held stays held
        settled(world, receipts, maildir, pending=2)
        # Fixed at the server and reconnected: the held mail goes, once.
        server.set_faults([])
        assert world.services.tester is not None
        done = await world.services.tester.reconnect(
            world.jane, channel.name, password=None, now=time.time()
        )
        assert done.reconnected and done.released == 2
        await world.services.dispatcher.run_once(time.time)
        await server.wait_for(2)
    settled(world, receipts, maildir, delivered=2, duplicates=0)


async def test_a_4xx_for_one_recipient_defers_only_that_one(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    """Recipients already accepted stay delivered; the retry goes to the deferred one only."""
    maildir = tmp_path / "caught"
    async with tls_server(certs, maildir) as server:
        world.channel(server.port, certs=certs)
        receipts = world.send(to=("tempfail+1@example.com", "ok@example.com"))
        now = time.time()
        await world.services.dispatcher.run_once(at(now))
        view = world.store.get_message(receipts[0].id)
        assert view.state is State.DEFERRED
        states = {r.address: r.state for r in view.recipients}
        assert states == {
            "tempfail+1@example.com": State.DEFERRED,
            "ok@example.com": State.DELIVERED,
        }
        await world.services.dispatcher.run_once(at(now + LATER))
        got = await server.wait_for(2)
    assert [g["rcpt_to"] for g in got] == [["ok@example.com"], ["tempfail+1@example.com"]]
    assert message_id_of(got[0]["content"]) == message_id_of(got[1]["content"])
    settled(world, receipts, maildir, delivered=1, duplicates=0)


# -- a server that stalls at each phase -------------------------------------------------------

# phase -> (fault, the Timeouts field that must fire, the stage the attempt ends at, the
# last command the server sees before it stalls)
STALLS = {
    "greeting": ("greeting=stall", "greeting", "greeting", None),
    "ehlo": ("ehlo=stall", "command", "ehlo", "EHLO"),
    "starttls": ("starttls=stall", "command", "starttls", "STARTTLS"),
    "auth": ("auth=stall", "command", "auth", "AUTH"),
    "mail": ("mail=stall", "command", "mail", "MAIL"),
    "rcpt": ("rcpt=stall", "command", "rcpt", "RCPT"),
    "data": ("data=stall", "data_init", "data", "DATA"),
    "body": ("body=stall", "data_block", "data", "DATA"),
    "data-end": ("data-end=noreply", "data_end", "data-end", "DATA"),
}
FIRES = 2.0  # the stalled phase's timeout
SOON = RetryPolicy(first_delay=1, max_delay=1)
BIG = 16_000_000  # bytes: more than loopback's socket buffers, so a body stall blocks writes


def other_channel(world: World, port: int) -> Channel:
    """A second channel (sales@acme.test, no TLS) on a healthy server."""
    now = time.time()
    world.services.tenancy.grant("jane@acme.test", "sales@acme.test", now)
    spec = ChannelSpec(
        name="sales-box",
        host="127.0.0.1",
        port=port,
        security=Security.NONE,
        auth=Auth.NONE,
        address="sales@acme.test",
        timeouts=SHORT,
    )
    return world.services.channels.add(world.jane, spec, now)[0]


def reached(server: TestServer, verb: str | None) -> bool:
    """Whether the server has a connection that got as far as `verb` (None: connected)."""
    return any(verb is None or verb in s["commands"] for s in server.sessions)


def send_other(world: World, count: int, tag: str) -> list[Receipt]:
    now = time.time()
    drafts = [
        Draft(from_="sales@acme.test", to=["x@example.com"], subject=f"{tag} {i}", text="hi")
        for i in range(count)
    ]
    subs = [Submission(compose(d, now=now, max_size=10**8)) for d in drafts]
    return world.services.submitter.submit(world.jane, subs, now=now)


@pytest.mark.parametrize("phase", list(STALLS))
async def test_a_stalled_phase_times_out_while_another_channel_keeps_its_pace(
    world: World, certs: Certs, tmp_path: Path, phase: str
) -> None:
    fault, timeout, ends_at, verb = STALLS[phase]
    timeouts = replace(SHORT, **{timeout: FIRES})
    stalled_dir, fine_dir = tmp_path / "stalled", tmp_path / "fine"
    async with (
        tls_server(certs, stalled_dir, faults=[fault]) as stalled,
        TestServer(maildir=fine_dir) as fine,
    ):
        channel = world.channel(
            stalled.port, certs=certs, timeouts=timeouts, retry=SOON, max_connections=1
        )
        other_channel(world, fine.port)
        if phase == "body":
            big = b"x" * 998 + b"\r\n"
            raw = b"From: jane@acme.test\r\nTo: bob@example.com\r\nSubject: big\r\n\r\n" + big * (
                BIG // len(big)
            )
            receipts = [world.submit_raw(raw, ["bob@example.com"])]
        else:
            receipts = world.send()
        stop = asyncio.Event()
        task = asyncio.create_task(world.services.dispatcher.run_forever(time.time, stop))
        others: list[Receipt] = []
        started = time.time()
        stalled_at: float | None = None
        try:
            while not world.store.get_message(receipts[0].id).attempts:
                assert time.time() - started < FIRES + 10, "the stalled phase never timed out"
                if stalled_at is None and reached(stalled, verb):
                    stalled_at = time.time()
                if stalled_at is not None:
                    # While the phase stalls, another channel's mail, five every 0.2 s.
                    others += send_other(world, 5, f"b{len(others)}")
                await asyncio.sleep(0.2 if stalled_at is not None else 0.02)
            stalled.set_faults([])  # the server recovers; the retry (1 s later) goes through
            view = world.store.get_message(receipts[0].id)
            await stalled.wait_for(1, timeout=30)
            await fine.wait_for(len(others), timeout=30)
        finally:
            stop.set()
            await task
        [attempt, *_] = view.attempts
        assert (attempt.stage, attempt.reply.code, attempt.reply.enhanced) == (
            ends_at,
            451,
            "4.4.2",
        )
        assert view.state is State.DEFERRED
        # The configured timeout fired, not a later one (the others are 5 s): from the
        # connection's opening to the attempt's end.
        opened = stalled.sessions[0]["opened_at"]
        assert FIRES - 0.05 <= attempt.at - opened < 4.9, attempt.at - opened
        # Meanwhile the other channel kept delivering: two batches or more arrived while the
        # phase stalled (a dispatcher held up by the stall would deliver none before its end).
        assert stalled_at is not None
        during = [g for g in fine.received if stalled_at < g["received_at"] < attempt.at]
        assert len(during) >= 10, (len(during), len(others))
        # Only after the final dot is the outcome unknown.
        assert view.possible_duplicate is (phase == "data-end")
        assert world.store.get_channel(channel.id).state is ChannelState.ACTIVE
    settled(world, receipts, stalled_dir, delivered=1, duplicates=0)
    settled(world, others, fine_dir, delivered=len(others), duplicates=0)


# -- no reply after the final dot --------------------------------------------------------------


async def test_no_reply_after_the_dot_is_retried_flagged_with_the_same_message_id(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    """The server took the message but its reply never came in time: the retry sends the same
    bytes (the same Message-ID), so the copies can be told apart as one message."""
    maildir = tmp_path / "caught"
    quick = replace(SHORT, data_end=0.5)
    async with tls_server(certs, maildir, faults=["data-end*1=stall:1.5"]) as server:
        world.channel(server.port, certs=certs, timeouts=quick)
        receipts = world.send()
        now = time.time()
        await world.services.dispatcher.run_once(at(now))
        view = world.store.get_message(receipts[0].id)
        assert view.state is State.DEFERRED and view.possible_duplicate
        assert "may have been delivered" in view.attempts[0].reply.text
        await server.wait_for(1)  # it did arrive, after mailvia stopped waiting
        await world.services.dispatcher.run_once(at(now + LATER))
        first, second = await server.wait_for(2)
    assert first["content"] == second["content"] == world.sent[receipts[0].id]
    assert message_id_of(first["content"]) == message_id_of(second["content"]) != ""
    view = world.store.get_message(receipts[0].id)
    assert view.state is State.DELIVERED and view.possible_duplicate
    settled(world, receipts, maildir, delivered=1, duplicates=1, flagged=1)


# -- TLS handshake failure and bad certificates ------------------------------------------------


@pytest.mark.parametrize("case", ["badtls", "implicit-to-plain", "self-signed"])
async def test_tls_that_fails_never_falls_back_to_plaintext(
    world: World, certs: Certs, tmp_path: Path, case: str
) -> None:
    maildir = tmp_path / "caught"
    if case == "badtls":
        server = tls_server(certs, maildir, faults=["starttls=badtls"])
        security = Security.STARTTLS
    elif case == "implicit-to-plain":
        server = TestServer(auth={"jane": "secret"}, maildir=maildir)
        security = Security.TLS
    else:
        server = TestServer(self_signed=True, auth={"jane": "secret"}, maildir=maildir)
        security = Security.STARTTLS
    async with server:
        # The self-signed server's own CA is not given: its certificate is not trusted.
        channel = world.channel(
            server.port, certs=None if case == "self-signed" else certs, security=security
        )
        receipts = world.send(count=2)
        await world.services.dispatcher.run_once(time.time)
        seen = commands(server)
        sessions = server.sessions
    # Nothing after the failed handshake: no EHLO again, no AUTH, no MAIL FROM in clear.
    assert not {"AUTH", "MAIL", "RCPT", "DATA"} & set(seen), seen
    assert all(not s["tls"] for s in sessions)
    if security is Security.STARTTLS:
        assert seen.count("EHLO") == len(sessions) and seen.count("STARTTLS") == len(sessions)
    views = [world.store.get_message(r.id) for r in receipts]
    assert [v.state for v in views] == [State.HELD] * 2
    reply = views[0].attempts[0].reply
    assert (reply.code, reply.enhanced) == (530, "5.7.10")
    expected = "certificate" if case == "self-signed" else "TLS handshake failed"
    assert expected in reply.text
    got = world.store.get_channel(channel.id)
    assert got.state is ChannelState.DISCONNECTED and expected in (got.state_reason or "")
    settled(world, receipts, maildir, pending=2)


# -- provider throttling ----------------------------------------------------------------------

THROTTLES = [
    ("mail", "421 4.7.0 Try again later, closing connection", False),
    ("greeting", "432 4.3.2 Concurrent connections limit exceeded", False),
    ("rcpt", "450 4.2.1 The user you are trying to contact is receiving mail too quickly", False),
    ("mail", "550 5.4.5 Daily user sending limit exceeded", True),
    (
        "data-end",
        "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
        True,
    ),
]


@pytest.mark.parametrize(("stage", "reply", "daily"), THROTTLES)
async def test_a_provider_throttle_pauses_the_channel_and_bounces_nothing(
    world: World, certs: Certs, tmp_path: Path, stage: str, reply: str, daily: bool
) -> None:
    maildir = tmp_path / "caught"
    async with tls_server(certs, maildir, faults=[f"{stage}={reply}"]) as server:
        channel = world.channel(server.port, certs=certs)
        receipts = world.send(count=3)
        now = time.time()
        await world.services.dispatcher.run_once(at(now))
        views = [world.store.get_message(r.id) for r in receipts]
        assert State.BOUNCED not in {v.state for v in views}
        throttled = [v for v in views if v.attempts]
        assert throttled and {v.attempts[0].outcome for v in throttled} == {"throttled"}
        got = world.store.get_channel(channel.id)
        pause = 3600 if daily else 60
        assert got.state is ChannelState.ACTIVE and got.throttle_level == 1
        assert got.throttled_until == pytest.approx(now + pause, abs=2)
        # A throttle does not advance the message's retry: it stays due, the channel waits.
        assert all(v.next_attempt_at is not None and v.next_attempt_at < now + 5 for v in views)
        sessions = len(server.sessions)
        assert await world.services.dispatcher.run_once(at(now + pause - 5)) == 0
        assert len(server.sessions) == sessions  # not even a connection while paused
        server.set_faults([])
        assert await world.services.dispatcher.run_once(at(now + pause + 1)) == 3
        await server.wait_for(3)
        assert world.store.get_channel(channel.id).throttle_level == 0
    settled(world, receipts, maildir, delivered=3, duplicates=0)


# -- a message past its give-up time ----------------------------------------------------------


async def expire_two(
    world: World, certs: Certs, maildir: Path, now: float
) -> tuple[list[Receipt], list[Receipt]]:
    """One message deferred by a 4xx until its give-up time, its last try at that time, and
    one held on a disconnected channel past it; returns (deferred, held)."""
    policy = RetryPolicy(first_delay=60, max_delay=60, give_up_after=200, jitter=0)
    async with tls_server(certs, maildir, faults=[f"rcpt={TEMPORARY}"]) as server:
        world.channel(server.port, certs=certs, retry=policy)
        deferred = world.send(now=now)
        for step in (0, 70, 140, 200):  # the last try is due at the give-up time
            assert await world.services.dispatcher.run_once(at(now + step)) == 1
        assert commands(server).count("RCPT") == 4 and not server.received
    async with tls_server(certs, maildir, faults=["auth=535 5.7.8 bad credentials"]) as broken:
        world.services.tenancy.grant("jane@acme.test", "sales@acme.test", now)
        spec = ChannelSpec(
            name="sales-box",
            host="127.0.0.1",
            port=broken.port,
            security=Security.STARTTLS,
            auth=Auth.PLAIN,
            username="jane",
            password="secret",
            ca_pem=certs.ca_pem,
            address="sales@acme.test",
            retry=policy,
            timeouts=SHORT,
        )
        world.services.channels.add(world.jane, spec, now)
        draft = Draft(from_="sales@acme.test", to=["x@example.com"], subject="held", text="hi")
        held = world.services.submitter.submit(
            world.jane, [Submission(compose(draft, now=now, max_size=10**6))], now=now
        )
        await world.services.dispatcher.run_once(at(now))
        assert world.store.get_message(held[0].id).state is State.HELD
        await world.services.dispatcher.run_once(at(now + 201))
    return deferred, held


async def test_a_message_past_its_give_up_time_expires_and_the_owner_is_told_why(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    """Deferred until its give-up time (the last try's reply is the reason), or held on a
    disconnected channel past it (mailvia's 4.4.7 reason): either ends `expired`, and a
    `message.expired` event saying why reaches the organization's webhook."""
    maildir = tmp_path / "caught"
    now = time.time()
    webhooks = world.services.webhook_dispatcher
    assert webhooks is not None
    with Receiver() as hooks:
        world.services.webhooks.add(world.admin, hooks.url(), ["message.expired"], now - 1)
        deferred, held = await expire_two(world, certs, maildir, now)
        assert await webhooks.run_once(at(now + 202)) == 2
        posted = [json.loads(r.body) for r in hooks.wait_for(2)]
    first, second = (world.store.get_message(m[0].id) for m in (deferred, held))
    reasons = {first.id: TEMPORARY, second.id: "451 4.4.7 mailvia: gave up after the retry period"}
    for message in (first, second):
        [recipient] = message.recipients
        assert message.state is State.EXPIRED and recipient.state is State.EXPIRED
        assert str(recipient.reply) == reasons[message.id]
    assert {p["data"]["message_id"] for p in posted} == set(reasons)
    for payload in posted:
        data = payload["data"]
        assert payload["type"] == "message.expired" and data["state"] == "expired"
        reason = data.get("reason") or data["recipients"][0]["reply"]
        assert reason == reasons[data["message_id"]]
    settled(world, deferred + held, maildir, expired=2)


async def test_a_last_try_that_cannot_happen_expires_after_the_grace(
    world: World, certs: Certs, tmp_path: Path
) -> None:
    """The last try is due at the give-up time; a channel that cannot make it (throttled
    here) has LAST_TRY_GRACE more seconds, and then the sweep expires the message unsent."""
    maildir = tmp_path / "caught"
    policy = RetryPolicy(first_delay=60, max_delay=60, give_up_after=200, jitter=0)
    async with tls_server(certs, maildir, faults=[f"rcpt={TEMPORARY}"]) as server:
        channel = world.channel(server.port, certs=certs, retry=policy)
        now = time.time()
        receipts = world.send(now=now)
        for step in (0, 70, 140):
            await world.services.dispatcher.run_once(at(now + step))
        view = world.store.get_message(receipts[0].id)
        assert view.next_attempt_at == view.expires_at == pytest.approx(now + 200, abs=1)
        world.store.set_channel_throttle(channel.id, now + 10_000, 1)
        assert await world.services.dispatcher.run_once(at(now + 200 + LAST_TRY_GRACE - 5)) == 0
        assert world.store.get_message(receipts[0].id).state is State.DEFERRED
        assert await world.services.dispatcher.run_once(at(now + 200 + LAST_TRY_GRACE + 1)) == 0
    view = world.store.get_message(receipts[0].id)
    assert view.state is State.EXPIRED and len(view.attempts) == 3
    settled(world, receipts, maildir, expired=1)
