"""Two `mailvia worker` processes on one PostgreSQL database deliver twenty messages of one
Gmail mailbox whose access token is due: the fake Google sees exactly one refresh, and every
message arrives once (the token's single flight holds across processes, not only across
builds in one process)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailvia.testserver.fake import FakeProviders
from support.cli import Cli, LongRunning, poll
from support.fake_providers import CLIENT_ID, CLIENT_SECRET
from support.oauth import connect, oauth_world, pages, sign_in
from support.world import World

JANE = "jane@acme.test"
pytestmark = pytest.mark.postgres


@pytest.fixture
async def world(tmp_path: Path, fake_providers: FakeProviders, pg_url: str) -> AsyncIterator[World]:
    w = oauth_world(tmp_path / "data", fake_providers, db_url=pg_url, dispatch="off")
    yield w
    await w.close()


def worker_env(fake: FakeProviders, pg_url: str, name: str) -> dict[str, str]:
    endpoints = {
        key: value
        for key, value in fake.settings.items()
        if key.startswith("MAILVIA_OAUTH_") or key.endswith("_API_URL")
    }
    return endpoints | {
        "MAILVIA_DB_URL": pg_url,
        "MAILVIA_WORKER_ID": name,
        "MAILVIA_OAUTH_GOOGLE_CLIENT_ID": CLIENT_ID,
        "MAILVIA_OAUTH_GOOGLE_CLIENT_SECRET": CLIENT_SECRET,
    }


async def test_twenty_messages_over_two_worker_processes_cause_one_refresh(
    world: World, fake_providers: FakeProviders, pg_url: str, tmp_path: Path
) -> None:
    async with pages(world) as jane:
        await sign_in(jane, world, JANE)
        channel_id = await connect(jane, fake_providers, "google", JANE)
    data = tmp_path / "data"
    workers: list[LongRunning] = []
    try:
        for name in ("worker-a", "worker-b"):
            env = worker_env(fake_providers, pg_url, name) | {"MAILVIA_CLAIM_BATCH": "2"}
            workers.append(Cli(data, **env).start("worker"))
        for process in workers:
            process.wait_for_line(r"^worker \S+ delivering$")
        # The token is due (inside the five minutes before expiry) once both workers run, and
        # the fake's token endpoint takes 2 s: whichever worker asks second must wait for the
        # first one's refresh rather than make its own.
        make_due(pg_url, channel_id)
        fake_providers.set_faults(["refresh=stall:2"])
        before = sum(fake_providers.refresh_counts().values())
        receipts = world.send(count=20, subject="twenty")
        assert all(r.channel.id == channel_id for r in receipts)
        poll(lambda: len(fake_providers.received) >= 20 or None, timeout=60)
    finally:
        codes = [process.stop() for process in workers]
    assert codes == [0, 0], [process.stderr for process in workers]
    subjects = sorted(
        r["content"].split(b"Subject: ")[1].split(b"\r\n")[0] for r in fake_providers.received
    )
    assert subjects == sorted(f"twenty {i}".encode() for i in range(20))  # each once
    assert sum(fake_providers.refresh_counts().values()) - before == 1
    store = world.store
    assert {str(store.get_message(r.id).state) for r in receipts} == {"delivered"}
    assert delivering_workers(pg_url) == {"worker-a", "worker-b"}


def make_due(pg_url: str, channel_id: str) -> None:
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE oauth_tokens SET obtained_at = :got, expires_at = :at "
                "WHERE channel_id = :id"
            ),
            {"got": time.time() - 3540, "at": time.time() + 60, "id": channel_id},
        )
    engine.dispose()


def delivering_workers(pg_url: str) -> set[str]:
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT DISTINCT worker FROM attempts")).scalars().all()
    engine.dispose()
    return set(found)
