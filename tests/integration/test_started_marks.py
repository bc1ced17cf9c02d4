"""Started marks under the dispatcher (on the memory store, the real channel run): every
transaction starts marked, the marks are committed in groups of about max_connections or
more (the run's records of attempts in the same commits), and fewer than (MARKS_AHEAD + 1)
x max_connections marked messages wait unstarted (those marked ahead, and those a connection
took: the bound on what a crash flags possible_duplicate without having sent it)."""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import Any

from mailvia.domain.channel import Channel
from mailvia.domain.clock import Instant, SteppingClock
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.message import Envelope, State
from mailvia.domain.replies import Reply, Stage
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.ports import AttemptRecord, Credentials
from mailvia.outbox.run_attempts import MARKS_AHEAD
from mailvia.outbox.submit import Submission
from support.memory_world import MemoryWorld
from support.transports import QuietTransport

OK = Reply(250, "2.0.0", "ok")
CONNECTIONS = 4
MESSAGES = 400


class CountingTransport(QuietTransport):
    """Accepts everything; at each transaction's start notes how many messages had been asked
    to be marked started so far (the spied liveness) against how many transactions started."""

    def __init__(self) -> None:
        self.marked: set[int] = set()
        self.committed: set[int] = set()  # marks whose commit has finished
        self.started = 0
        self.waiting_marked: list[int] = []  # per start: marked messages not started yet

    async def send(
        self, channel: Channel, credentials: Credentials | None, envelope: Envelope, content: bytes
    ) -> TransactionResult:
        self.started += 1
        # Sent in queue order, as marked: no transaction begins before its mark's commit.
        assert len(self.committed) >= self.started, (len(self.committed), self.started)
        self.waiting_marked.append(len(self.marked) - self.started)
        return TransactionResult(Stage.DATA_END, OK, dict.fromkeys(envelope.rcpt_to, OK))


async def test_marks_are_committed_ahead_in_groups_and_within_the_bound() -> None:
    clock = SteppingClock(1_800_000_000.0)
    transport = CountingTransport()
    world = MemoryWorld(transport, clock)
    store = world.store
    groups: list[tuple[int, ...]] = []  # the marks asked for (each goes in a group commit)
    liveness = world.dispatcher.liveness
    started = liveness.started

    def spied(seqs: tuple[int, ...], now: Instant) -> Coroutine[Any, Any, list[bool]]:
        groups.append(seqs)  # noted when asked for, not when its task first runs
        transport.marked.update(seqs)

        async def commit() -> list[bool]:
            done = await started(seqs, now)
            transport.committed.update(seqs)
            return done

        return commit()

    liveness.started = spied  # type: ignore[method-assign]
    commits: list[int] = []  # the seqs of each commit of marks
    recorded: list[int] = []  # the records of each commit of marks (records ride along)
    inside: list[bool] = []
    mark_started = store.mark_started

    def counted(
        seqs: list[int], worker: str, now: Instant, *, records: Sequence[AttemptRecord] = ()
    ) -> list[bool]:
        commits.append(len(seqs))
        recorded.append(len(records))
        inside.append(True)
        try:
            return mark_started(seqs, worker, now, records=records)
        finally:
            inside.pop()

    store.mark_started = counted  # type: ignore[method-assign]
    alone: list[int] = []  # records committed on their own (the run's last, at its end)
    record_attempts = store.record_attempts

    def counted_records(records: Sequence[AttemptRecord]) -> None:
        if not inside:  # the memory store's mark_started records through it too
            alone.append(len(records))
        record_attempts(records)

    store.record_attempts = counted_records  # type: ignore[method-assign]
    world.channel(max_connections=CONNECTIONS)
    draft = Draft(from_="jane@acme.test", to=["bob@example.com"], subject="hi", text="hi")
    one = compose(draft, now=clock.now, max_size=10**6)
    receipts = world.submitter.submit(world.jane, [Submission(one)] * MESSAGES, now=clock.now)

    assert await world.dispatcher.run_once(clock) == MESSAGES
    assert all(store.get_message(r.id).state is State.DELIVERED for r in receipts)
    assert transport.started == MESSAGES
    assert len(transport.marked) == MESSAGES  # every transaction started marked
    assert min(transport.waiting_marked) >= 0
    # ahead, and taken not started: the bound on what a crash flags without having sent it
    assert max(transport.waiting_marked) <= (MARKS_AHEAD + 1) * CONNECTIONS - 1
    assert max(transport.waiting_marked) >= MARKS_AHEAD * CONNECTIONS - 1  # as far ahead
    # One commit serves about max_connections transactions (not one commit each); marks
    # asked for while a commit is under way (topping the lead up) go together in the next.
    assert sum(commits) == MESSAGES
    # The records go in the commits of marks (no commit of their own during the run): at
    # most the run's last few are recorded alone, at its end.
    assert sum(recorded) + sum(alone) == MESSAGES and len(alone) <= 1, (recorded, alone)
    flush_every = world.dispatcher.options.flush_every
    assert sum(recorded) >= MESSAGES - flush_every
    assert len(commits) <= MESSAGES // CONNECTIONS + 2 + MESSAGES // flush_every, commits
    assert all(len(group) <= MARKS_AHEAD * CONNECTIONS for group in groups)


async def test_without_records_with_marks_the_records_commit_on_their_own() -> None:
    """PostgreSQL's setting (app.wire): the marks' commits carry no records; every record
    is committed in a transaction of its own, and every message is delivered."""
    clock = SteppingClock(1_800_000_000.0)
    transport = CountingTransport()
    world = MemoryWorld(transport, clock)
    dispatcher, store = world.dispatcher, world.store
    dispatcher.options = replace(dispatcher.options, records_with_marks=False)
    riding: list[int] = []
    mark_started = store.mark_started

    def counted(
        seqs: list[int], worker: str, now: Instant, *, records: Sequence[AttemptRecord] = ()
    ) -> list[bool]:
        riding.append(len(records))
        held = mark_started(seqs, worker, now, records=records)
        transport.committed.update(seqs)
        return held

    store.mark_started = counted  # type: ignore[method-assign]
    world.channel(max_connections=CONNECTIONS)
    draft = Draft(from_="jane@acme.test", to=["bob@example.com"], subject="hi", text="hi")
    one = compose(draft, now=clock.now, max_size=10**6)
    receipts = world.submitter.submit(world.jane, [Submission(one)] * MESSAGES, now=clock.now)

    assert await dispatcher.run_once(clock) == MESSAGES
    assert all(store.get_message(r.id).state is State.DELIVERED for r in receipts)
    assert riding and not any(riding), riding  # marks were committed, never with records
