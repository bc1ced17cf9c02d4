"""The memory store's reads and the rest of its outbox: a message, filtered pages of
messages, queue counts, the event streams, and the workers' heartbeats and started marks;
the same answers as store/message_reads.py, store/events.py and store/workers.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailvia.domain.clock import Instant
from mailvia.domain.cursors import CursorSeal
from mailvia.domain.errors import Conflict, InvalidInput, NotFound
from mailvia.domain.message import Envelope, State
from mailvia.outbox.headers import subject_of
from mailvia.outbox.ports import AttemptRecord, WorkerView
from mailvia.outbox.records import Event, MessageFilter, MessageView, RecipientView
from mailvia.store.memory.data import Data, Message, locked

COUNTED = frozenset({State.QUEUED, State.DEFERRED, State.SENDING})


def view(msg: Message, *, with_attempts: bool) -> MessageView:
    return MessageView(
        id=msg.id,
        organization_id=msg.organization_id,
        user_id=msg.user_id,
        channel_id=msg.channel_id,
        state=msg.state,
        envelope=Envelope(msg.mail_from, tuple(r.address for r in msg.recipients)),
        size=len(msg.content),
        created_at=msg.created_at,
        expires_at=msg.expires_at,
        next_attempt_at=msg.next_attempt_at,
        possible_duplicate=msg.possible_duplicate,
        recipients=tuple(
            RecipientView(r.address, r.state, r.reply, r.updated_at) for r in msg.recipients
        ),
        attempts=tuple(sorted(msg.attempts, key=lambda a: a.at)) if with_attempts else (),
        test=msg.test,
        subject=subject(msg),
    )


def subject(msg: Message) -> str | None:
    """The message's Subject, read from its bytes once (most are never asked for)."""
    if not msg.subject_read:
        msg.subject, msg.subject_read = subject_of(msg.content), True
    return msg.subject


def _matches(msg: Message, query: MessageFilter) -> bool:
    if msg.organization_id != query.organization_id:
        return False
    wanted = (
        (query.user_id, msg.user_id),
        (query.state and State(query.state), msg.state),
        (query.channel_id, msg.channel_id),
    )
    if any(want is not None and want != have for want, have in wanted):
        return False
    if query.search:
        words = " ".join(query.search.split()).lower()
        places = [subject(msg) or "", *(r.address for r in msg.recipients)]
        return any(words in place.lower() for place in places)
    return True


class MemoryReads:
    _d: Data
    _cursors: CursorSeal

    @locked
    def get_message(self, message_id: str) -> MessageView:
        seq = self._d.by_id.get(message_id)
        if seq is None:
            raise NotFound(f"no message {message_id!r}")
        return view(self._d.messages[seq], with_attempts=True)

    @locked
    def list_messages(self, query: MessageFilter) -> tuple[list[MessageView], str | None]:
        if query.limit < 1:
            raise InvalidInput("limit: must be at least 1")
        before = None
        if query.cursor is not None:
            before = self._cursors.open("msg", query.organization_id, query.cursor)
        page: list[Message] = []
        for seq in reversed(self._d.messages):  # kept in seq order
            if before is not None and seq >= before:
                continue
            msg = self._d.messages[seq]
            if _matches(msg, query):
                page.append(msg)
                if len(page) > query.limit:
                    break
        views = [view(m, with_attempts=False) for m in page[: query.limit]]
        if len(page) <= query.limit:
            return views, None
        return views, self._cursors.seal("msg", query.organization_id, page[query.limit - 1].seq)

    @locked
    def waiting_count(self, channel_id: str) -> int:
        every = self._d.messages.values()
        return sum(1 for m in every if m.channel_id == channel_id and m.state in COUNTED)

    @locked
    def queue_counts(self, org_id: str | None = None) -> dict[str, dict[State, int]]:
        result = {
            c.id: dict.fromkeys(State, 0)
            for c in self._d.channels.values()
            if org_id in (None, c.organization_id)
        }
        for msg in self._d.messages.values():
            if org_id in (None, msg.organization_id):
                result.setdefault(msg.channel_id, dict.fromkeys(State, 0))[msg.state] += 1
        return result

    @locked
    def add_events(self, events: Sequence[Event]) -> None:
        ids = [e.id for e in events]
        if len(set(ids)) < len(ids) or any(i in self._d.event_ids for i in ids):
            raise Conflict("an event with this id already exists")
        self._d.add_events(list(events))

    @locked
    def list_events(
        self, org_id: str, *, cursor: str | None, limit: int
    ) -> tuple[list[Event], str | None]:
        if limit < 1:
            raise InvalidInput("limit: must be at least 1")
        after = 0 if cursor is None else self._cursors.open("evt", org_id, cursor)
        rows = [(s, e) for s, e in self._d.events if s > after and e.organization_id == org_id]
        rows = rows[:limit]
        if not rows:
            return [], cursor
        return [e for _, e in rows], self._cursors.seal("evt", org_id, rows[-1][0])


class MemoryWorkers:
    _d: Data

    if TYPE_CHECKING:  # MemoryOutbox's (store/memory/outbox.py), in the same store

        def record_attempts(self, records: Sequence[AttemptRecord]) -> None: ...

    def _upsert(self, worker: str, now: Instant, *, host: str, pid: int, restart: bool) -> None:
        old = self._d.workers.get(worker)
        started = now if restart or old is None else old.started_at
        self._d.workers[worker] = WorkerView(worker, host, pid, started, now)

    def _leased_to(self, worker: str) -> list[Message]:
        return [
            self._d.messages[seq]
            for leased in self._d.leased.values()
            for seq in leased
            if self._d.messages[seq].lease_owner == worker
        ]

    def _relet(self, msg: Message, until: Instant) -> None:
        self._d.unindex(msg)
        msg.lease_expires_at = until
        self._d.reindex(msg)

    @locked
    def start_worker(self, worker: str, now: Instant, *, host: str, pid: int) -> int:
        self._upsert(worker, now, host=host, pid=pid, restart=True)
        mine = self._leased_to(worker)
        for msg in mine:
            self._relet(msg, now)
        return len(mine)

    @locked
    def beat(
        self,
        worker: str,
        now: Instant,
        *,
        lease_until: Instant,
        seqs: Sequence[int],
        host: str,
        pid: int,
    ) -> int:
        self._upsert(worker, now, host=host, pid=pid, restart=False)
        kept = 0
        for seq in set(seqs):
            msg = self._d.messages.get(seq)
            if msg is not None and msg.state is State.SENDING and msg.lease_owner == worker:
                self._relet(msg, lease_until)
                kept += 1
        return kept

    @locked
    def stop_worker(self, worker: str) -> None:
        self._d.workers.pop(worker, None)

    @locked
    def list_workers(self) -> list[WorkerView]:
        every = sorted(self._d.workers.values(), key=lambda w: w.id)
        return sorted(every, key=lambda w: w.beat_at, reverse=True)

    @locked
    def mark_started(
        self,
        seqs: Sequence[int],
        worker: str,
        now: Instant,
        *,
        records: Sequence[AttemptRecord] = (),
    ) -> list[bool]:
        if records:
            self.record_attempts(records)  # the same lock: one transaction with the marks
        held = set()
        for seq in set(seqs):
            msg = self._d.messages.get(seq)
            if msg is not None and msg.state is State.SENDING and msg.lease_owner == worker:
                msg.started_at = now
                held.add(seq)
        return [seq in held for seq in seqs]
