"""Shaping through the dispatcher: budgets hold exactly with a driven clock over a simulated
day (on the memory store, the logic alone), over a simulated half hour on SQLite and
PostgreSQL (their budget ledger), and in real time against the real test server."""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from mailvia.domain.channel import Auth, Budget, Channel, Security, Unit
from mailvia.domain.clock import SteppingClock
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.message import Envelope, State
from mailvia.domain.presets import PRESETS
from mailvia.domain.replies import Reply, Stage
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.dispatch import Dispatcher
from mailvia.outbox.dispatch_ports import DispatchStore
from mailvia.outbox.ports import Credentials
from mailvia.outbox.submit import Submission
from mailvia.testserver import TestServer
from support.memory_world import MemoryWorld
from support.transports import QuietTransport
from support.world import World

OK = Reply(250, "2.0.0", "OK")
M365 = PRESETS["microsoft365"].budgets


class InstantTransport(QuietTransport):
    """A transport that accepts everything at once and notes when each transaction started
    on the test's clock (the shaping tests are about timing, not SMTP; SMTP is covered
    against the test server)."""

    def __init__(self, clock: SteppingClock) -> None:
        self.clock = clock
        self.starts: list[tuple[float, int]] = []

    async def send(
        self, channel: Channel, credentials: Credentials | None, envelope: Envelope, content: bytes
    ) -> TransactionResult:
        self.starts.append((self.clock.now, len(envelope.rcpt_to)))
        return TransactionResult(Stage.DATA_END, OK, dict.fromkeys(envelope.rcpt_to, OK))


@pytest.fixture
def fast_dir() -> Iterator[Path]:
    """A data folder on tmpfs when there is one: 12,000 budget commits, each fsync'd."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=base) as folder:
        yield Path(folder)


@pytest.fixture
async def world(fast_dir: Path) -> AsyncIterator[World]:
    w = World(fast_dir)
    yield w
    await w.close()


def max_in_window(starts: Sequence[tuple[float, int]], per: float, recipients: bool) -> int:
    """The most any half-open window [t, t + per) holds (messages or recipients)."""
    times = [t for t, _ in starts]
    amounts = [r if recipients else 1 for _, r in starts]
    best, total, lo = 0, 0, 0
    for hi in range(len(times)):
        total += amounts[hi]
        while times[hi] - times[lo] >= per:
            total -= amounts[lo]
            lo += 1
        best = max(best, total)
    return best


async def drive(dispatcher: Dispatcher, store: DispatchStore, clock: SteppingClock, end: float):
    """Pass after pass, each at the time the next mail is due, until `end`."""
    while clock.now <= end:
        await dispatcher.run_once(clock)
        due = store.next_due_at()
        assert due is not None
        clock.at(max(due, clock.now + 0.001))


def assert_no_idle_window(starts: Sequence[tuple[float, int]], gap: float, full: Budget) -> None:
    """No `gap` (the short budget's window) idles while mail waits, unless the long budget's
    window is full (one pass over the starts, in time order)."""
    times = [t for t, _ in starts]
    amounts = [r if full.unit is Unit.RECIPIENTS else 1 for _, r in starts]
    lo = hi = held = 0
    for before, after in itertools.pairwise(times):
        while hi < len(times) and times[hi] <= before:
            held, hi = held + amounts[hi], hi + 1
        while times[lo] <= before - full.per_seconds:
            held, lo = held - amounts[lo], lo + 1
        assert after - before <= gap + 0.01 or held >= full.count, (before, after)


async def test_microsoft365_day_of_limits_with_a_driven_clock() -> None:
    """Microsoft 365's budgets (30 messages a minute, 10,000 recipients a day) over a
    simulated day and an hour, 15,000 messages waiting: on the memory store, in seconds."""
    t0 = 1_800_000_000.0
    clock = SteppingClock(t0)
    transport = InstantTransport(clock)
    world = MemoryWorld(transport, clock)
    channel = world.channel(budgets=M365, max_connections=3, max_recipients_per_message=500)
    composed = compose(
        Draft(from_="jane@acme.test", to=["bob@example.com"], subject="hello", text="hi"),
        now=t0,
        max_size=10**6,
    )
    world.submitter.submit(world.jane, [Submission(composed)] * 15_000, now=t0)
    end = t0 + 25 * 3600
    await drive(world.dispatcher, world.store, clock, end)
    starts = [s for s in transport.starts if s[0] <= end]
    assert max_in_window(starts, 60, recipients=False) <= 30
    assert max_in_window(starts, 86_400, recipients=True) <= 10_000
    assert len(starts) >= 0.99 * 11_800
    assert_no_idle_window(starts, 60, M365[1])
    counts = world.store.queue_counts(world.jane.organization_id)[channel.id]
    assert counts[State.DELIVERED] == len(transport.starts)
    assert counts[State.BOUNCED] == counts[State.EXPIRED] == 0


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_the_sql_budget_ledger_holds_over_a_simulated_half_hour(
    fast_dir: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """The same shaping on SQLite, where the ledger keeps its windows' running sums in
    tables: 10 a minute and 60 recipients in 10 minutes over half an hour, 300 messages of
    one or two recipients waiting; on SQLite and PostgreSQL."""
    url = request.getfixturevalue("migrated_pg_url") if backend == "postgresql" else None
    world = World(fast_dir, db_url=url)
    try:
        await sql_hour(world)
    finally:
        await world.close()


async def sql_hour(world: World) -> None:
    budgets = (Budget(10, 60, Unit.MESSAGES), Budget(60, 600, Unit.RECIPIENTS))
    t0 = 1_800_000_000.0
    clock = SteppingClock(t0)
    transport = InstantTransport(clock)
    world.services.dispatcher.transport = transport
    channel = world.channel(2525, budgets=budgets, max_connections=3)
    world.send(count=150, now=t0)
    world.send(count=150, to=("bob@example.com", "carol@example.net"), now=t0)
    end = t0 + 1800
    await drive(world.services.dispatcher, world.store, clock, end)
    starts = [s for s in transport.starts if s[0] <= end]
    assert max_in_window(starts, 60, recipients=False) <= 10
    assert max_in_window(starts, 600, recipients=True) <= 60
    assert sum(r for _, r in starts) >= 0.97 * 180  # three windows of 60 recipients
    assert_no_idle_window(starts, 60, budgets[1])
    counts = world.store.queue_counts(world.jane.organization_id)[channel.id]
    assert counts[State.DELIVERED] == len(transport.starts)


async def test_budget_in_real_time_against_the_test_server(world: World, tmp_path: Path) -> None:
    async with TestServer(maildir=tmp_path / "caught") as server:
        world.channel(
            server.port,
            security=Security.NONE,
            auth=Auth.NONE,
            budgets=(Budget(5, 2, Unit.MESSAGES),),
            max_connections=3,
        )
        world.send(count=20)
        stop = asyncio.Event()
        started = time.time()
        task = asyncio.create_task(world.services.dispatcher.run_forever(time.time, stop))
        try:
            got = await server.wait_for(20, timeout=30)
        finally:
            stop.set()
            await task
    # four windows of 5: the last about 6 s after the first (the start, slow on a loaded
    # machine, is not the budget's)
    arrived = [g["received_at"] for g in got]
    assert min(arrived) >= started and max(arrived) - min(arrived) < 10
    times = sorted((g["received_at"], 1) for g in got)
    assert max_in_window(times, 2.0, recipients=False) <= 5


async def test_a_large_recipient_list_goes_in_several_identical_transactions(
    world: World, tmp_path: Path
) -> None:
    recipients = [f"r{i}@example.com" for i in range(600)]
    async with TestServer(maildir=tmp_path / "caught") as server:
        world.channel(
            server.port, security=Security.NONE, auth=Auth.NONE, max_recipients_per_message=500
        )
        [receipt] = world.send(to=recipients)
        await world.services.dispatcher.run_once(time.time)
        got = await server.wait_for(2)
    assert [len(g["rcpt_to"]) for g in got] == [500, 100]
    assert got[0]["sha256"] == got[1]["sha256"]
    assert sorted(got[0]["rcpt_to"] + got[1]["rcpt_to"]) == sorted(recipients)
    view = world.store.get_message(receipt.id)
    assert view.state is State.DELIVERED
    assert {r.state for r in view.recipients} == {State.DELIVERED}


async def test_a_throttle_reply_pauses_its_channel_while_another_keeps_delivering(
    world: World, tmp_path: Path
) -> None:
    async with (
        TestServer(maildir=tmp_path / "a", faults=["mail=451 4.7.500 Server busy"]) as busy,
        TestServer(maildir=tmp_path / "b") as fine,
    ):
        slow = world.channel(busy.port, security=Security.NONE, auth=Auth.NONE)
        now = time.time()
        world.send(count=3, now=now)
        world.services.tenancy.grant("jane@acme.test", "sales@acme.test", now)
        other = world.services.channels.add(world.jane, _spec(fine.port), now)[0]
        from mailvia.outbox.compose import Draft, compose
        from mailvia.outbox.submit import Submission

        composed = compose(
            Draft(from_="sales@acme.test", to=["x@example.com"], text="hi"), now=now, max_size=10**6
        )
        world.services.submitter.submit(world.jane, [Submission(composed)], now=now)
        await world.services.dispatcher.run_once(SteppingClock(now))
        assert len(await fine.wait_for(1)) == 1
        paused = world.store.get_channel(slow.id)
        assert paused.throttled_until == pytest.approx(now + 60, abs=1)
        assert paused.throttle_level == 1
        counts = world.store.queue_counts(world.jane.organization_id)[slow.id]
        assert counts[State.DEFERRED] == 3 and counts[State.BOUNCED] == 0
        # Nothing more is tried until the pause ends; the retry count did not advance.
        assert await world.services.dispatcher.run_once(SteppingClock(now + 30)) == 0
        views, _ = world.store.list_messages(_filter(world, slow.id))
        # A retry would have pushed each message ~300 s out; a throttle leaves them due now
        # and lets the channel's pause decide.
        assert [v.next_attempt_at for v in views] == [pytest.approx(now, abs=1)] * 3
        busy.set_faults([])
        assert await world.services.dispatcher.run_once(SteppingClock(now + 61)) == 3
        assert len(await busy.wait_for(3)) == 3
        assert world.store.get_channel(slow.id).throttle_level == 0
        assert world.store.get_channel(other.id).throttle_level == 0


def _spec(port: int):  # type: ignore[no-untyped-def]
    from mailvia.outbox.channels import ChannelSpec
    from support.world import SHORT

    return ChannelSpec(
        name="sales-box",
        host="127.0.0.1",
        port=port,
        security=Security.NONE,
        auth=Auth.NONE,
        address="sales@acme.test",
        timeouts=SHORT,
    )


def _filter(world: World, channel_id: str):  # type: ignore[no-untyped-def]
    from mailvia.outbox.records import MessageFilter

    return MessageFilter(world.jane.organization_id, channel_id=channel_id)


async def test_a_restart_mid_window_sends_no_excess(fast_dir: Path) -> None:
    first = World(fast_dir)
    clock = SteppingClock(1000.0)
    transport = InstantTransport(clock)
    first.services.dispatcher.transport = transport
    first.channel(2525, budgets=(Budget(30, 60, Unit.MESSAGES),))
    first.send(count=100, now=1000.0)
    await first.services.dispatcher.run_once(clock)
    await first.close()
    assert len(transport.starts) == 30
    from mailvia.app import build

    services = build(first.settings)  # a restarted service on the same database
    services.dispatcher.transport = transport
    try:
        for now in (1010.0, 1030.0, 1059.9):
            assert await services.dispatcher.run_once(clock.at(now)) == 0
        assert await services.dispatcher.run_once(clock.at(1060.1)) == 30
    finally:
        await services.aclose()
    assert max_in_window(transport.starts, 60, recipients=False) <= 30


async def test_forecast_and_the_bulk_warning_on_a_mailbox_channel() -> None:
    """The forecast is logic over the budgets and the backlog: on the memory store."""
    t0 = 1_800_000_000.0
    clock = SteppingClock(t0)
    world = MemoryWorld(InstantTransport(clock), clock)
    world.channel(preset="microsoft365")
    one = compose(
        Draft(from_="Jane <jane@acme.test>", to=["bob@example.com"], subject="hi", text="hi"),
        now=t0,
        max_size=10**6,
    )
    [first] = world.submitter.submit(world.jane, [Submission(one)], now=t0)
    assert first.expected_at == t0 and first.queued_ahead == 0 and not first.warnings
    receipts = world.submitter.submit(world.jane, [Submission(one)] * 10_500, now=t0)
    assert receipts[28].expected_at == t0  # 30 a minute: the first 30 go at once
    assert receipts[29].expected_at == t0 + 60
    assert receipts[-1].queued_ahead == 10_500
    assert receipts[-1].expected_at == t0 + 86_400  # past the 10,000 recipients of a day
    warning = receipts[-1].warnings[0]
    assert warning.code == "mailbox_bulk" and "not for bulk mail" in warning.message


async def test_a_slow_channel_does_not_delay_another(world: World, tmp_path: Path) -> None:
    async with (
        TestServer(maildir=tmp_path / "slow", faults=["data-end=stall:3"]) as slow,
        TestServer(maildir=tmp_path / "fast") as fast,
    ):
        world.channel(slow.port, security=Security.NONE, auth=Auth.NONE, max_connections=1)
        now = time.time()
        world.send(count=3, now=now)  # each takes 3 s at the slow server
        world.services.tenancy.grant("jane@acme.test", "sales@acme.test", now)
        world.services.channels.add(world.jane, _spec(fast.port), now)
        stop = asyncio.Event()
        task = asyncio.create_task(world.services.dispatcher.run_forever(time.time, stop))
        try:
            await asyncio.sleep(0.3)  # the slow channel is now busy with its first message
            from mailvia.outbox.compose import Draft, compose
            from mailvia.outbox.submit import Submission

            started = time.time()
            drafts = [
                Draft(from_="sales@acme.test", to=["x@example.com"], text=str(i)) for i in range(5)
            ]
            subs = [Submission(compose(d, now=started, max_size=10**6)) for d in drafts]
            world.services.submitter.submit(world.jane, subs, now=started)
            got = await fast.wait_for(5, timeout=10)
            assert max(g["received_at"] for g in got) - started < 2.0
            assert len(slow.received) <= 1  # still working through its backlog
        finally:
            stop.set()
            await task
