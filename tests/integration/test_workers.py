"""Several dispatchers sharing one PostgreSQL database: every message is delivered exactly
once, and a channel's budget holds across them."""

from __future__ import annotations

import asyncio
import email
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from mailvia.app import build
from mailvia.domain.channel import Auth, Budget, Security, Timeouts, Unit
from mailvia.outbox.services import Services
from mailvia.testserver import TestServer
from support.world import World

# No fault here: a reply late on a loaded machine (the test server, both dispatchers and their
# store calls share this process) must not defer a message 5 minutes, as SHORT's 5 s would.
PATIENT = Timeouts(*(60.0,) * 6)


@pytest.fixture
async def world(tmp_path: Path, migrated_pg_url: str) -> AsyncIterator[World]:
    w = World(tmp_path / "data", db_url=migrated_pg_url)
    yield w
    await w.close()


async def run_workers(world: World, count: int, until: asyncio.Future[object]) -> None:
    """Run `count` dispatchers, each with its own store connections, until `until` is done."""
    others: list[Services] = [
        build(replace(world.settings, worker_id=f"w{i}")) for i in range(count - 1)
    ]
    stop = asyncio.Event()
    dispatchers = [world.services.dispatcher, *(s.dispatcher for s in others)]
    tasks = [asyncio.create_task(d.run_forever(time.time, stop)) for d in dispatchers]
    try:
        await until
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for services in others:
            await services.aclose()


def message_ids(received: list[dict[str, object]]) -> Counter[str]:
    return Counter(
        str(email.message_from_bytes(r["content"])["Message-ID"])  # type: ignore[arg-type]
        for r in received
    )


async def test_two_workers_deliver_each_message_exactly_once(world: World, tmp_path: Path) -> None:
    async with TestServer(maildir=tmp_path / "caught") as server:
        world.channel(
            server.port, security=Security.NONE, auth=Auth.NONE, max_connections=4, timeouts=PATIENT
        )
        world.send(count=200)
        await run_workers(world, 2, asyncio.ensure_future(server.wait_for(200, timeout=60)))
        await asyncio.sleep(0)  # nothing else may arrive after the 200th
        ids = message_ids(server.received)
    assert len(ids) == 200 and set(ids.values()) == {1}


async def test_a_budget_holds_across_two_workers(world: World, tmp_path: Path) -> None:
    async with TestServer(maildir=tmp_path / "caught") as server:
        world.channel(
            server.port,
            security=Security.NONE,
            auth=Auth.NONE,
            max_connections=3,
            budgets=(Budget(4, 2, Unit.MESSAGES),),
            timeouts=PATIENT,
        )
        world.send(count=16)
        started = time.time()
        await run_workers(world, 2, asyncio.ensure_future(server.wait_for(16, timeout=30)))
        got = server.received
    times = sorted(float(g["received_at"]) for g in got)  # type: ignore[arg-type]
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u - t < 2.0) <= 4, times
    assert times[-1] - started < 12
    assert set(message_ids(got).values()) == {1}
