"""A dispatcher's liveness: its heartbeat, the claims it has in hand, and the marks of the
transactions it starts.

A claim lasts while its worker beats: every few seconds the beat extends the lease of each
claim in hand to `lease_seconds` later, so a worker that dies (SIGKILL, a lost host) loses
its claims `lease_seconds` after its last beat, and a long transaction never loses its own.
A restarted worker (the same worker id) gives its previous incarnation's claims back at
once. Before a transaction starts (SMTP MAIL, or the API call), its message is marked
started by a small group commit; a taken-over claim is flagged `possible_duplicate` only if
it was. See docs/architecture.md ("Crash recovery").

Side effects: the worker's row, leases and `started_at` marks in the store, and the channel
runs' records of attempts (committed with the marks).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mailvia.domain.clock import Instant
from mailvia.domain.errors import StoreUnavailable
from mailvia.outbox.group_commit import GroupCommit
from mailvia.outbox.ports import AttemptRecord, AwaitedMarks, WorkerRegistry

log = logging.getLogger(__name__)

BEAT_EVERY = 5.0  # seconds between beats (at most; a sixth of the lease when that is shorter)
# Records that find no commit of marks under way wait this long for one to start, so that
# they go in the commit after it with the marks asked for meanwhile, not in one of their own
# that the next marks would wait for (records have no one waiting for them; at a crash the
# records in hand are re-sent, flagged, as before).
RIDE_WAIT = 0.01  # seconds

Mark = tuple[tuple[int, ...], Instant]  # (message seqs, when their transactions start)


class Rider:
    """A channel run's records of attempts in a commit of marks: `take` hands over the records
    the run has in hand when the commit starts (on the event loop), so those that gathered
    while it waited go too; `taken` is what it handed over."""

    def __init__(self, take: Callable[[], list[AttemptRecord]]) -> None:
        self.take = take
        self.taken: list[AttemptRecord] = []


# What one commit of the worker's bookkeeping takes: marks, and the runs' records of attempts.
Entry = Mark | Rider


Marking = Callable[..., Awaitable[list[bool]]]  # mark_started's arguments, awaited


async def _begin(commit: Callable[[list[Entry]], Awaitable[list[Any]]], items: list[Entry]) -> Any:
    for item in items:  # on the event loop, as the commit starts: the records in hand now
        if isinstance(item, Rider):
            item.taken = item.take()
    return await commit(items)


def _marking(registry: WorkerRegistry) -> Marking:
    """How the commits of marks reach the store: awaited on the event loop when it can
    (AwaitedMarks: the store process, no thread hop either way, ~1-2 ms of a commit's cycle
    on a busy loop), else `mark_started` in a thread."""
    if isinstance(registry, AwaitedMarks):
        return registry.mark_started_awaited

    async def in_thread(
        seqs: Sequence[int], worker: str, now: Instant, *, records: Sequence[AttemptRecord]
    ) -> list[bool]:
        call = functools.partial(registry.mark_started, seqs, worker, now, records=records)
        return await asyncio.to_thread(call)

    return in_thread


class Liveness:
    """One dispatcher's heartbeat and marks. `holding` is the set of message seqs it has
    claimed and not yet settled or given back (its channel runs add and remove them)."""

    def __init__(
        self,
        registry: WorkerRegistry,
        *,
        worker: str,
        lease_seconds: float,
        host: str = "",
        pid: int = 0,
    ) -> None:
        self.registry = registry
        self.worker = worker
        self.lease_seconds = lease_seconds
        self.host = host
        self.pid = pid
        self.every = min(BEAT_EVERY, lease_seconds / 6)
        self.holding: set[int] = set()
        self.beaten_at: Instant | None = None
        self._marks: GroupCommit[Entry, list[bool]] | None = None
        self._marking = _marking(registry)

    def start(self, now: Instant) -> int:
        """Announce this worker; its previous incarnation's claims become claimable now.
        Returns how many there were. Raises StoreUnavailable."""
        given = self.registry.start_worker(self.worker, now, host=self.host, pid=self.pid)
        if given:
            log.warning("worker %s: %d claims of its previous run given back", self.worker, given)
        self.beaten_at = now
        return given

    async def beat_aside(self, now: Instant) -> bool:
        """Beat when the last beat is `every` seconds old (or the clock went back); whether it
        beat. Raises StoreUnavailable (the caller tries again on its next pass). Its write is
        made in a thread: the event loop goes on with every connection meanwhile (on SQLite
        the beat waits for the write lock, which the store process's claims and commits of
        marks hold for ms at a time, and for its fsync; in the loop that held up all of a
        worker's connections every few seconds). The claims in hand are read here, on the
        loop that changes them; a claim settled or given back meanwhile is not extended (the
        store extends only leases still `sending`)."""
        if not self._due(now):
            return False
        seqs = sorted(self.holding)
        await asyncio.to_thread(self._beat, now, seqs)
        return True

    def _due(self, now: Instant) -> bool:
        last = self.beaten_at
        return last is None or not 0 <= now - last < self.every

    def _beat(self, now: Instant, seqs: list[int]) -> None:
        self.registry.beat(
            self.worker,
            now,
            lease_until=now + self.lease_seconds,
            seqs=seqs,
            host=self.host,
            pid=self.pid,
        )
        self.beaten_at = now

    def stop(self) -> None:
        """A clean stop, after every claim was settled or given back."""
        self.registry.stop_worker(self.worker)

    @property
    def marking(self) -> bool:
        """A commit of marks is under way, any channel's: the worker's marks share one
        commit (marks asked for now go in the next one)."""
        return self._marks is not None and not self._marks.idle

    async def started(self, seqs: tuple[int, ...], now: Instant) -> list[bool]:
        """Mark these messages' transactions as started, committed before this returns (with
        the other marks and records of the moment in one transaction). Per seq, False: the
        lease was lost to another worker, and the message must not be sent. Raises
        StoreUnavailable, or a fault of the marks' own (when a commit with records fails for
        another reason, the marks are committed again without them: a fault of the records
        is the records' run's, never the marks')."""
        return await self._put((seqs, now))

    async def record(self, rider: Rider) -> None:
        """Record a run's attempts (those `rider.take` hands over as the commit starts),
        committed before this returns, in the same transaction as the marks of the moment:
        one commit (an fsync on SQLite, a BEGIN and COMMIT on PostgreSQL) for both. When no
        commit is under way it waits RIDE_WAIT for one to start; when none started meanwhile,
        the records are committed alone (and marks asked for then wait for that commit).
        Raises StoreUnavailable, or a fault of these records' own (a commit that fails for
        another reason is made again apart: the marks, then each run's records); either way
        `rider.taken` are then not recorded."""
        if not self.marking:
            await asyncio.sleep(RIDE_WAIT)
        await self._put(rider)

    async def _put(self, entry: Entry) -> list[bool]:
        if self._marks is None:
            self._marks = GroupCommit(self._commit, _begin)
        return await self._marks.put(entry)

    async def _commit(self, items: list[Entry]) -> list[list[bool] | BaseException]:
        marks = [item for item in items if isinstance(item, tuple)]
        riders = [item for item in items if isinstance(item, Rider)]
        records = [rec for rider in riders for rec in rider.taken]
        try:
            held = await self._mark(marks, records)
        except StoreUnavailable:
            raise  # an outage: every entry's (the runs' records go back in hand)
        except Exception:
            if bool(marks) + sum(bool(rider.taken) for rider in riders) < 2:
                raise  # one entry's, or the marks' only: theirs
            # A fault of one run's records must not fail the marks or the other runs' records.
            log.exception("worker %s: marks with records failed; again apart", self.worker)
            return await self._apart(items)
        return _results(items, held)

    async def _apart(self, items: list[Entry]) -> list[list[bool] | BaseException]:
        """The marks in one commit, then each run's records in one of their own: each entry
        gets its own outcome."""
        marks = [item for item in items if isinstance(item, tuple)]
        outcome: list[list[bool] | BaseException] = []
        held: list[bool] | BaseException = []
        try:
            if marks:
                held = await self._mark(marks, [])
        except Exception as exc:
            held = exc
        flags = iter(held) if isinstance(held, list) else None
        for item in items:
            if isinstance(item, tuple):
                outcome.append([next(flags) for _ in item[0]] if flags is not None else held)
                continue
            try:
                if item.taken:
                    await self._mark([], item.taken)
                outcome.append([])
            except Exception as exc:
                outcome.append(exc)
        return outcome

    async def _mark(self, marks: list[Mark], records: list[AttemptRecord]) -> list[bool]:
        # `now` is when the marked transactions start; with no marks the store does not use
        # it (records carry their own times).
        now = max((at for _, at in marks), default=0.0)
        seqs = [seq for group, _ in marks for seq in group]
        return await self._marking(seqs, self.worker, now, records=records)


def _results(items: list[Entry], held: list[bool]) -> list[list[bool] | BaseException]:
    """Per entry, in order: a mark's held flags (one per seq), a rider's nothing."""
    flags = iter(held)
    return [[next(flags) for _ in item[0]] if isinstance(item, tuple) else [] for item in items]
