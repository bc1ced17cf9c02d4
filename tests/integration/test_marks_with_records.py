"""A worker's started marks and its channel runs' records share commits (outbox/liveness.py):
every message's mark is committed, as another connection to the database sees it, before
its transaction starts (through the store process, on SQLite and PostgreSQL); records that
arrive while a commit of marks is under way go in the next one with the marks asked for
meanwhile, in one write transaction (marks that fail roll the records back); an outage fails
both (the records go back in hand and are recorded once, at the run's end), a fault of one
run's records is that run's alone, and a connection's fault stops its run with what the
other connections sent recorded; a message no longer leased is neither marked nor
recorded."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from mailvia.domain.channel import Auth, Channel, Security
from mailvia.domain.clock import Instant, SteppingClock
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.errors import Conflict, StoreUnavailable
from mailvia.domain.message import Envelope, State
from mailvia.domain.replies import Reply, Stage
from mailvia.outbox import liveness as liveness_module
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.liveness import Liveness, Rider
from mailvia.outbox.ports import AttemptRecord, Claim, Credentials
from mailvia.outbox.submit import Submission
from mailvia.store import SqlStore
from mailvia.store import workers as workers_module
from support.memory_world import MemoryWorld
from support.rows import T0, channel, new, record, seeded, sent
from support.transports import QuietTransport
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


async def test_every_mark_is_committed_before_its_transaction_starts(
    tmp_path: Path, migrated_store_url: str
) -> None:
    world = World(tmp_path / "data", db_url=migrated_store_url, delivery_store="process")
    try:
        world.channel(2525, security=Security.NONE, auth=Auth.NONE, max_connections=20)
        receipts = world.send(count=MESSAGES)
        ids = {world.sent[r.id]: r.id for r in receipts}
        transport = CheckingTransport(world.settings.database_url, ids)
        dispatcher = world.services.dispatcher
        dispatcher.transport = transport
        # app.wire: records ride with the marks on SQLite only (commit on their own on PG)
        assert dispatcher.options.records_with_marks is migrated_store_url.startswith("sqlite")
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


async def _queued(liveness: Liveness, count: int) -> None:
    """Until `count` entries wait for the next commit (the tasks that put them have run)."""
    for _ in range(100):
        marks = liveness._marks
        if marks is not None and len(marks._waiting) >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError("the entries were not put")


async def _under_way(registry: HeldRegistry) -> tuple[Liveness, asyncio.Future[list[bool]]]:
    liveness = Liveness(registry, worker="w1", lease_seconds=60.0)  # type: ignore[arg-type]
    first = asyncio.ensure_future(liveness.started((1, 2), T0))
    while not registry.entered.is_set():
        await asyncio.sleep(0.001)
    assert liveness.marking
    return liveness, first


async def test_records_finding_no_commit_under_way_wait_before_one_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(liveness_module, "RIDE_WAIT", 0.3)  # long enough to see it wait
    registry = HeldRegistry()
    registry.entered.set()  # no commit held
    registry.commits.append(([], []))
    liveness = Liveness(registry, worker="w1", lease_seconds=60.0)  # type: ignore[arg-type]
    records = [record(c, sent("bob@example.test"), state=State.DELIVERED) for c in seeded_claims()]
    recorded = asyncio.ensure_future(liveness.record(Rider(lambda: records)))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not recorded.done() and not liveness.marking  # nothing under way: it waits
    assert await liveness.started((3,), T0) == [True]  # starts a commit, alone
    assert not recorded.done()
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
    await _queued(liveness, 2)
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
    await _queued(liveness, 2)
    registry.release.set()
    await first
    for step in (recorded, marked):
        with pytest.raises(StoreUnavailable):
            await step


class FaultyRegistry(HeldRegistry):
    """After the held first commit, a commit carrying a record of a seq in `bad` fails with a
    fault that is not an outage (as record_in's Conflict, or an error of the store process)."""

    def __init__(self, bad: set[int]) -> None:
        super().__init__()
        self.bad = bad

    def mark_started(
        self,
        seqs: Sequence[int],
        worker: str,
        now: Instant,
        *,
        records: Sequence[AttemptRecord] = (),
    ) -> list[bool]:
        held = super().mark_started(seqs, worker, now, records=records)
        if any(rec.claim.seq in self.bad for rec in records):
            raise Conflict("a record clashes")
        return held


async def test_a_fault_of_one_runs_records_is_that_runs_alone() -> None:
    registry = FaultyRegistry(bad={10})
    liveness, first = await _under_way(registry)
    bad, good = (
        record(c, sent("bob@example.test"), state=State.DELIVERED) for c in seeded_claims()
    )
    failing = asyncio.ensure_future(liveness.record(Rider(lambda: [bad])))
    other = asyncio.ensure_future(liveness.record(Rider(lambda: [good])))
    marked = asyncio.ensure_future(liveness.started((3,), T0 + 1))
    await _queued(liveness, 3)
    registry.release.set()
    assert await first == [True, True]
    assert await marked == [True]  # another channel's marks: committed all the same
    await other  # and another run's records
    with pytest.raises(Conflict):
        await failing  # the fault is the run's whose records it was
    # tried together, then apart: the marks, then each run's records
    assert registry.commits[1:] == [([3], [bad, good]), ([3], []), ([], [bad]), ([], [good])]


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


def test_marks_and_records_in_one_transaction_on_sql(migrated_store_url: str) -> None:
    store: SqlStore = seeded(migrated_store_url, channel("ch_a", "relay"))
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
    begun: list[str] = []

    def begin(conn: sa.Connection) -> None:
        begun.append("write" if conn.get_execution_options().get("mailvia_write") else "read")

    event.listen(store._db.engine, "begin", begin)
    try:
        held = store.mark_started([ahead.seq, lost.seq], "w1", T0 + 1, records=records)
    finally:
        event.remove(store._db.engine, "begin", begin)
    assert held == [True, False]
    assert begun == ["write"]  # one transaction for the marks and the records
    assert store.get_message("m1").state is State.DELIVERED
    assert store.get_message("m2").state is State.QUEUED
    with store._db.read() as conn:
        started = dict(conn.exec_driver_sql("SELECT id, started_at FROM messages").all())
    assert started == {"m1": None, "m2": None, "m3": T0 + 1}


def test_marks_that_fail_roll_their_records_back_on_sql(
    migrated_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: SqlStore = seeded(migrated_store_url, channel("ch_a", "relay"))
    store.add_messages([new("m1"), new("m2")])
    done, ahead = store.claim(channel_id="ch_a", now=T0, limit=2, lease_until=T0 + 60, worker="w1")
    store.mark_started([done.seq], "w1", T0)

    def failing(*args: object) -> set[int]:
        raise RuntimeError("the marks fail after the records were written")

    monkeypatch.setattr(workers_module, "mark_started", failing)
    with pytest.raises(RuntimeError):
        store.mark_started(
            [ahead.seq],
            "w1",
            T0 + 1,
            records=[record(done, sent("bob@example.test"), state=State.DELIVERED)],
        )
    assert store.get_message("m1").state is State.SENDING  # the record rolled back with them
    with store._db.read() as conn:
        attempts = conn.exec_driver_sql("SELECT count(*) FROM attempts").scalar_one()
    assert attempts == 0


class AcceptingTransport(QuietTransport):
    """Accepts everything; counts the transactions."""

    def __init__(self) -> None:
        self.started = 0

    async def send(
        self, channel: Channel, credentials: Credentials | None, envelope: Envelope, content: bytes
    ) -> TransactionResult:
        self.started += 1
        return TransactionResult(Stage.DATA_END, OK, dict.fromkeys(envelope.rcpt_to, OK))


async def test_records_of_an_outage_go_back_in_hand_and_are_recorded_once_at_the_end() -> None:
    clock = SteppingClock(1_800_000_000.0)
    transport = AcceptingTransport()
    world = MemoryWorld(transport, clock)
    store = world.store
    recorded: list[int] = []  # every seq each commit recorded
    inside: list[bool] = []
    mark_started = store.mark_started
    failed: list[int] = []

    def down_once(
        seqs: list[int], worker: str, now: Instant, *, records: Sequence[AttemptRecord] = ()
    ) -> list[bool]:
        if records and not failed:  # the first commit carrying records: the store is gone
            failed.append(len(records))
            raise StoreUnavailable("gone")
        inside.append(True)
        try:
            return mark_started(seqs, worker, now, records=records)
        finally:
            inside.pop()

    record_attempts = store.record_attempts

    def counted(records: Sequence[AttemptRecord]) -> None:
        recorded.extend(rec.claim.seq for rec in records)
        record_attempts(records)

    store.mark_started = down_once  # type: ignore[method-assign]
    store.record_attempts = counted  # type: ignore[method-assign]
    world.channel(max_connections=4)
    draft = Draft(from_="jane@acme.test", to=["bob@example.com"], subject="hi", text="hi")
    one = compose(draft, now=clock.now, max_size=10**6)
    messages = world.dispatcher.options.flush_every * 2
    receipts = world.submitter.submit(world.jane, [Submission(one)] * messages, now=clock.now)

    attempts = await world.dispatcher.run_once(clock)
    assert failed and failed[0] > 0  # a rider's commit failed: the run stopped, store_down
    assert 0 < attempts == transport.started
    # every attempt made is recorded, exactly once (the rider's by `go`'s last flush)
    assert len(recorded) == len(set(recorded)) == attempts
    states = [store.get_message(r.id).state for r in receipts]
    assert states.count(State.DELIVERED) == attempts
    assert all(s in (State.DELIVERED, State.QUEUED) for s in states)


class SlowTransport(AcceptingTransport):
    """Accepts everything after a moment: connections are mid-transaction when another fails."""

    async def send(
        self, channel: Channel, credentials: Credentials | None, envelope: Envelope, content: bytes
    ) -> TransactionResult:
        await asyncio.sleep(0.002)
        return await super().send(channel, credentials, envelope, content)


async def test_a_connections_fault_stops_its_run_and_what_the_others_sent_is_recorded() -> None:
    clock = SteppingClock(1_800_000_000.0)
    transport = SlowTransport()
    world = MemoryWorld(transport, clock)
    store = world.store
    mark_started = store.mark_started
    commits: list[int] = []

    def faulty(
        seqs: list[int], worker: str, now: Instant, *, records: Sequence[AttemptRecord] = ()
    ) -> list[bool]:
        commits.append(len(seqs))
        if len(commits) == 4 and seqs:
            raise RuntimeError("the store process broke")  # a fault, not an outage
        return mark_started(seqs, worker, now, records=records)

    store.mark_started = faulty  # type: ignore[method-assign]
    world.channel(max_connections=4)
    draft = Draft(from_="jane@acme.test", to=["bob@example.com"], subject="hi", text="hi")
    one = compose(draft, now=clock.now, max_size=10**6)
    receipts = world.submitter.submit(world.jane, [Submission(one)] * 60, now=clock.now)

    with pytest.raises(RuntimeError):
        await world.dispatcher.run_once(clock)
    sent = transport.started
    await asyncio.sleep(0.05)
    assert transport.started == sent > 0  # no connection of the run goes on after it
    states = [store.get_message(r.id).state for r in receipts]
    assert states.count(State.DELIVERED) == sent  # every message sent is recorded
    assert set(states) <= {State.DELIVERED, State.QUEUED, State.SENDING}
