"""Held mail leaves in the order it was submitted: a channel that disconnects on 535 and is
reconnected releases its mail oldest first, and no message is overtaken by more than the
channel's `max_connections` messages submitted after it (a follow-up never gets far ahead
of the message it follows). Real store, transport and test server (its
faults file is re-read for each connection); run_forever on the real clock."""

from __future__ import annotations

import asyncio
import email
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailvia.domain.channel import ChannelState
from mailvia.testserver import TestServer
from support.reconcile import reconcile
from support.world import Certs, World, make_certs

CONNECTIONS = 5


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path / "data")
    yield w
    await w.close()


async def until(check, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "still waiting"
        await asyncio.sleep(0.02)


def overtakes(order: list[int]) -> list[tuple[int, list[int]]]:
    """Each message that more than CONNECTIONS later-submitted messages arrived before
    (it was overtaken by them), with those messages."""
    found = []
    for place, earlier in enumerate(order):
        ahead = [later for later in order[:place] if later > earlier]
        if len(ahead) > CONNECTIONS:
            found.append((earlier, ahead))
    return found


async def test_held_mail_leaves_in_submission_order_after_a_reconnect(
    world: World, tmp_path: Path
) -> None:
    certs: Certs = make_certs(tmp_path / "certs")
    faults = tmp_path / "faults"
    async with TestServer(
        tls_cert=certs.cert,
        tls_key=certs.key,
        auth={"jane": "secret"},
        maildir=tmp_path / "caught",
        faults_file=faults,
    ) as server:
        channel = world.channel(server.port, certs=certs, max_connections=CONNECTIONS)
        stop = asyncio.Event()
        dispatcher = world.services.dispatcher
        task = asyncio.create_task(dispatcher.run_forever(time.time, stop))
        try:
            first = world.send(count=10, subject="m")  # some go before the password changes
            await until(lambda: len(server.received) >= 3)
            faults.write_text("auth=535 5.7.8 Authentication credentials invalid\n")
            await world.transport.forget(channel.id)  # new connections: new logins
            later = world.send(count=20, subject="n")
            store = world.store
            await until(lambda: store.get_channel(channel.id).state is ChannelState.DISCONNECTED)
            before = len(server.received)
            faults.write_text("")  # the password is fixed at the provider
            assert world.services.tester is not None
            done = await world.services.tester.reconnect(
                world.jane, channel.name, password=None, now=time.time()
            )
            assert done.reconnected and done.released > 0
            await server.wait_for(30, timeout=30)
        finally:
            stop.set()
            await task
    subjects = [str(email.message_from_bytes(r["content"])["Subject"]) for r in server.received]
    number = {f"m {i}": i for i in range(10)} | {f"n {i}": 10 + i for i in range(20)}
    order = [number[s] for s in subjects]
    assert sorted(order) == list(range(30))
    released = order[before:]
    assert overtakes(released) == [], released
    result = reconcile([r.id for r in first + later], world.settings.database_url, server.maildir)
    assert not result.problems and result.delivered == 30, str(result)
