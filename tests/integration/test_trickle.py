"""Mail trickling in while the dispatcher delivers (run_forever): the channel's run claims the
new mail itself and goes on, rather than end after every few messages and have the dispatcher
look for due channels, read the channel and start a new run each time (each of those is a
transaction; on PostgreSQL several round trips); the look a submission's wake-up asks for is
made at most every LOOK_GAP while runs go on. Nothing is left undelivered."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from mailvia.domain.channel import Auth, Channel, Security
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.message import Envelope, State
from mailvia.domain.replies import Reply, Stage
from mailvia.outbox.ports import Credentials
from support.world import World

OK = Reply(250, "2.0.0", "ok")


class SlowTransport:
    """Accepts every transaction after `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.sent = 0

    async def send(
        self, channel: Channel, credentials: Credentials | None, envelope: Envelope, content: bytes
    ) -> TransactionResult:
        await asyncio.sleep(self.seconds)
        self.sent += 1
        return TransactionResult(Stage.DATA_END, OK, dict.fromkeys(envelope.rcpt_to, OK))

    async def forget(self, channel_id: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def _trickle(world: World, bursts: int, queued: int = 0) -> dict[str, int]:
    """Run the dispatcher on `queued` messages while `bursts` of 3 messages come 20 ms
    apart, each submit waking it; returns how often it read the channel (once a run) and
    looked for due channels."""
    world.channel(9, security=Security.NONE, auth=Auth.NONE, max_connections=4)
    dispatcher = world.services.dispatcher
    transport = SlowTransport(0.01)
    dispatcher.transport = transport  # type: ignore[assignment]
    store = world.store
    calls = {"get_channel": 0, "channels_due": 0}

    def counted(name: str) -> Any:
        method = getattr(store, name)

        def call(*args: Any, **kw: Any) -> Any:
            calls[name] += 1
            return method(*args, **kw)

        return call

    for name in calls:
        setattr(store, name, counted(name))
    if queued:
        world.send(count=queued)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run_forever(time.time, stop))
    for _ in range(bursts):
        world.send(count=3)
        await asyncio.sleep(0.02)
    total = queued + 3 * bursts
    deadline = time.monotonic() + 20
    while transport.sent < total and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 20)
    counts = store.queue_counts(world.jane.organization_id)
    assert [c[State.DELIVERED] for c in counts.values()] == [total]
    assert transport.sent == total
    return calls


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_a_run_goes_on_while_mail_trickles_in(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("migrated_pg_url") if backend == "postgresql" else None
    world = World(tmp_path / "data", db_url=url)
    try:
        bursts = 20
        calls = await _trickle(world, bursts)
        # One run (a second at most, should a claim have come back empty between bursts on a
        # slow machine), not one per burst; looks at most every LOOK_GAP (50 ms) while it went.
        assert calls["get_channel"] <= 3, calls
        assert calls["channels_due"] < bursts, calls
    finally:
        await world.close()


async def test_a_trickling_run_ends_after_trickle_run_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A steady stream does not keep one run (and its copy of the channel) going for ever."""
    from mailvia.outbox import run_context

    monkeypatch.setattr(run_context, "RUN_SECONDS", 0.1)
    world = World(tmp_path / "data")
    try:
        calls = await _trickle(world, 25)  # 0.5 s of mail
        assert calls["get_channel"] >= 3, calls
    finally:
        await world.close()


async def test_a_backlog_does_not_keep_one_run_going(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run on a backlog stops claiming more after RUN_SECONDS and ends with what it holds;
    the next run reads the channel afresh (before, a run refilled for as long as mail was
    queued: 1,000 messages, one run)."""
    from mailvia.outbox import run_context

    monkeypatch.setattr(run_context, "RUN_SECONDS", 0.1)
    world = World(tmp_path / "data")
    try:
        calls = await _trickle(world, 0, queued=1000)  # 2.5 s over 4 connections
        assert calls["get_channel"] >= 4, calls  # claims of 200: five runs or more
    finally:
        await world.close()
