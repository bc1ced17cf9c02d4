"""A worker's started marks and its channel runs' records share commits (outbox/liveness.py):
every message's mark is committed, as another connection to the database sees it, before
its transaction starts (through the store process, on SQLite and PostgreSQL); records that
arrive while a commit of marks is under way go in the next one with the marks asked for
meanwhile; an outage fails both, and a message no longer leased is neither marked nor
recorded."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailvia.domain.channel import Auth, Channel, Security
from mailvia.domain.clock import Instant, SteppingClock
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.errors import StoreUnavailable
from mailvia.domain.message import Envelope, State
from mailvia.domain.replies import Reply, Stage
from mailvia.outbox.liveness import Liveness, Rider
from mailvia.outbox.ports import AttemptRecord, Claim, Credentials
from mailvia.store import SqlStore
from support.rows import T0, channel, new, record, seeded, sent
from support.world import World

OK = Reply(250, "2.0.0", "ok")
MESSAGES = 300


class CheckingTransport:
    """Accepts everything; at each transaction's start reads, on a connection of its own,
    whether the message's started mark is committed."""

    def __init__(self, url: str, ids: dict[bytes, str]) -> None:
        self.engine = sa.create_engine(url)
        self.ids = ids  # content -> message id
        self.unmarked: list[str] = []
        self.started = 0

    async def send(
        self, channel: Channel, credentials: Credentials | None, envelope: Envelope, content: bytes
    ) -> TransactionResult:
        self.started += 1
        message_id = self.ids[content]
        with self.engine.connect() as conn:
            marked = conn.execute(
                sa.text("SELECT started_at FROM messages WHERE id = :id"), {"id": message_id}
            ).scalar_one()
        if marked is None:
            self.unmarked.append(message_id)
        return TransactionResult(Stage.DATA_END, OK, dict.fromkeys(envelope.rcpt_to, OK))

    async def forget(self, channel_id: str) -> None:
        return None

    def narrow(self, channel_id: str, width: int) -> None:
        return None

    async def aclose(self) -> None:
        self.engine.dispose()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_every_mark_is_committed_before_its_transaction_starts(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    world = World(tmp_path / "data", db_url=url, delivery_store="process")
    try:
        world.channel(2525, security=Security.NONE, auth=Auth.NONE, max_connections=20)
        receipts = world.send(count=MESSAGES)
        ids = {world.sent[r.id]: r.id for r in receipts}
        transport = CheckingTransport(world.settings.database_url, ids)
        dispatcher = world.services.dispatcher
        dispatcher.transport = transport
        now = time.time()
        dispatcher.liveness.start(now)
        assert await dispatcher.run_once(SteppingClock(now)) == MESSAGES
        await transport.aclose()
        assert transport.started == MESSAGES
        assert transport.unmarked == []
        states = {world.store.get_message(r.id).state for r in receipts}
        assert states == {State.DELIVERED}
    finally:
        await world.close()


class HeldRegistry:
    """A registry whose first commit of marks waits until `release` is set; notes each
    commit's seqs and records."""

    def __init__(self, fail: bool = False) -> None:
        self.commits: list[tuple[list[int], list[AttemptRecord]]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = fail

    def mark_started(
        self,
        seqs: Sequence[int],
        worker: str,
        now: Instant,
        *,
        records: Sequence[AttemptRecord] = (),
    ) -> list[bool]:
        self.commits.append((list(seqs), list(records)))
        if len(self.commits) == 1:
            self.entered.set()
            self.release.wait(5)
        elif self.fail:
            raise StoreUnavailable("gone")
        return [True] * len(seqs)


async def _under_way(registry: HeldRegistry) -> tuple[Liveness, asyncio.Future[list[bool]]]:
    liveness = Liveness(registry, worker="w1", lease_seconds=60.0)  # type: ignore[arg-type]
    first = asyncio.ensure_future(liveness.started((1, 2), T0))
    while not registry.entered.is_set():
        await asyncio.sleep(0.001)
    assert liveness.marking
    return liveness, first


async def test_records_finding_no_commit_under_way_wait_before_one_of_their_own() -> None:
    registry = HeldRegistry()
    registry.entered.set()  # no commit held
    registry.commits.append(([], []))
    liveness = Liveness(registry, worker="w1", lease_seconds=60.0)  # type: ignore[arg-type]
    records = [record(c, sent("bob@example.test"), state=State.DELIVERED) for c in seeded_claims()]
    recorded = asyncio.ensure_future(
        liveness.record(Rider(lambda: records))
    )  # nothing under way: it waits
    await asyncio.sleep(0)
    assert await liveness.started((3,), T0) == [True]  # starts a commit, alone
    await recorded
    assert registry.commits[1:] == [([3], []), ([], records)]  # the records: the next one
    # ... and on their own once RIDE_WAIT has passed with no marks
    await liveness.record(Rider(lambda: records))
    assert registry.commits[-1] == ([], records)


async def test_records_go_with_the_next_commit_of_marks() -> None:
    registry = HeldRegistry()
    liveness, first = await _under_way(registry)
    claims = seeded_claims()
    records = [record(c, sent("bob@example.test"), state=State.DELIVERED) for c in claims]
    hand = records[:1]  # the run's records in hand

    def take() -> list[AttemptRecord]:
        taken = hand[:]
        hand.clear()
        return taken

    recorded = asyncio.ensure_future(liveness.record(Rider(take)))
    marked = asyncio.ensure_future(liveness.started((3,), T0 + 1))
    await asyncio.sleep(0.01)
    hand.append(records[1])  # gathered while the commit of marks before was under way
    registry.release.set()
    assert await first == [True, True]
    assert await marked == [True]
    await recorded
    assert registry.commits == [([1, 2], []), ([3], records)]  # one commit for both
    assert hand == []


async def test_an_outage_fails_the_records_and_the_marks_of_its_commit() -> None:
    registry = HeldRegistry(fail=True)
    liveness, first = await _under_way(registry)
    records = [record(c, sent("bob@example.test"), state=State.DELIVERED) for c in seeded_claims()]
    recorded = asyncio.ensure_future(liveness.record(Rider(lambda: records)))
    marked = asyncio.ensure_future(liveness.started((3,), T0 + 1))
    await asyncio.sleep(0.01)
    registry.release.set()
    await first
    for step in (recorded, marked):
        with pytest.raises(StoreUnavailable):
            await step


def seeded_claims() -> list[Claim]:
    return [
        Claim(
            seq=seq,
            message_id=f"m{seq}",
            organization_id="org_1",
            channel_id="ch_a",
            mail_from="jane@acme.test",
            pending=("bob@example.test",),
            settled=(),
            content=b"",
            failures=0,
            created_at=T0,
            expires_at=T0 + 100,
            possible_duplicate=False,
        )
        for seq in (10, 11)
    ]


def test_marks_and_records_in_one_transaction_on_sql(tmp_path: Path) -> None:
    store: SqlStore = seeded(f"sqlite:///{tmp_path / 'm.db'}", channel("ch_a", "relay"))
    store.add_messages([new("m1"), new("m2"), new("m3")])
    claims = store.claim(channel_id="ch_a", now=T0, limit=3, lease_until=T0 + 60, worker="w1")
    done, lost, ahead = claims
    store.mark_started([done.seq], "w1", T0)
    # `lost`: another worker took it over (its lease ran out): neither marked nor recorded
    store.unclaim([lost], state=State.QUEUED, now=T0)
    records = [
        record(done, sent("bob@example.test"), state=State.DELIVERED),
        record(lost, sent("bob@example.test"), state=State.DELIVERED),
    ]
    assert store.mark_started([ahead.seq, lost.seq], "w1", T0 + 1, records=records) == [
        True,
        False,
    ]
    assert store.get_message("m1").state is State.DELIVERED
    assert store.get_message("m2").state is State.QUEUED
    with store._db.read() as conn:
        started = dict(conn.exec_driver_sql("SELECT id, started_at FROM messages").all())
    assert started == {"m1": None, "m2": None, "m3": T0 + 1}
