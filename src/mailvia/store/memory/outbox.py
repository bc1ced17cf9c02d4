"""The memory store's outbox: intake (with idempotency keys), due channels, claims under a
lease and giving them back, settling attempts, holding, releasing, expiring, cancelling; the
same rules as store/outbox.py and store/settle.py, on plain objects."""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Sequence

from mailvia.domain.channel import Channel, ChannelState
from mailvia.domain.clock import Instant
from mailvia.domain.errors import Conflict, InvalidInput, NotFound
from mailvia.domain.ids import make_id
from mailvia.domain.message import State
from mailvia.domain.replies import Reply
from mailvia.domain.retry import GAVE_UP, GAVE_UP_TEXT, LAST_TRY_GRACE
from mailvia.outbox.ports import AttemptRecord, Claim, NewMessage
from mailvia.outbox.records import AttemptView, Event, MessageView
from mailvia.store.memory.data import WAITING, Data, Message, Recipient, locked
from mailvia.store.memory.mending import cancel
from mailvia.store.memory.reads import view

IDEMPOTENCY_WINDOW = 86400.0
EXPIRABLE = frozenset({State.QUEUED, State.DEFERRED, State.HELD})


class MemoryOutbox:
    _d: Data

    @locked
    def add_messages(self, msgs: Sequence[NewMessage]) -> list[tuple[str, bool]]:
        if not msgs:
            return []
        d = self._d
        horizon = min(x.created_at for x in msgs) - IDEMPOTENCY_WINDOW
        seen = {k: v for k, v in d.keys.items() if v[2] >= horizon}
        results: list[tuple[str, bool]] = []
        fresh: list[NewMessage] = []
        for msg in msgs:
            key = (msg.user_id, msg.idempotency_key) if msg.idempotency_key is not None else None
            earlier = seen.get(key) if key else None
            if key and earlier is not None:
                if earlier[1] != msg.request_hash:
                    raise Conflict(
                        f"idempotency key {msg.idempotency_key!r} was already used with "
                        "another request"
                    )
                results.append((earlier[0], False))
                continue
            if key:
                seen[key] = (msg.id, msg.request_hash, msg.created_at)
            results.append((msg.id, True))
            fresh.append(msg)
        ids = [x.id for x in fresh]
        if len(set(ids)) < len(ids) or any(i in d.by_id for i in ids):
            raise Conflict("a message id or idempotency key is already in use")
        d.keys = seen
        for msg in fresh:
            d.add(_message(d.next_seq(), msg))
        return results

    @locked
    def add_leased(self, msg: NewMessage, *, worker: str, lease_until: Instant) -> Claim:
        if msg.id in self._d.by_id:
            raise Conflict("a message id is already in use")
        made = _message(self._d.next_seq(), msg)
        made.state = State.SENDING
        for rcpt in made.recipients:
            rcpt.state = State.SENDING
        made.lease_owner, made.lease_expires_at, made.started_at = (
            worker,
            lease_until,
            msg.created_at,
        )
        self._d.add(made)
        return _claim(made, worker)

    def _open(self, channel_id: str, now: Instant) -> bool:
        channel = self._d.channels.get(channel_id)
        return (
            channel is not None
            and channel.state is ChannelState.ACTIVE
            and (channel.throttled_until is None or channel.throttled_until <= now)
            and self._d.budget_wait.get(channel_id, now) <= now
        )

    @locked
    def channels_due(self, now: Instant) -> list[str]:
        due = []
        for channel_id in sorted(self._d.channels):
            if not self._open(channel_id, now):
                continue
            waiting = self._d.waiting.get(channel_id)
            leased = self._d.leased.get(channel_id)
            if (waiting and waiting[0][0] <= now) or (leased and min(leased.values()) <= now):
                due.append(channel_id)
        return due

    @locked
    def next_due_at(self) -> Instant | None:
        times = []
        for channel_id, channel in self._d.channels.items():
            if channel.state is not ChannelState.ACTIVE:
                continue
            waiting = self._d.waiting.get(channel_id)
            leased = self._d.leased.get(channel_id)
            candidates = [waiting[0][0]] if waiting else []
            candidates += [min(leased.values())] if leased else []
            if candidates:
                after = [channel.throttled_until or 0.0, self._d.budget_wait.get(channel_id, 0.0)]
                times.append(max(min(candidates), *after))
        return min(times) if times else None

    @locked
    def claim(
        self, *, channel_id: str, now: Instant, limit: int, lease_until: Instant, worker: str
    ) -> list[Claim]:
        if limit < 1 or not self._open(channel_id, now):
            return []
        d = self._d
        waiting = d.waiting.get(channel_id, [])
        candidates = waiting[: min(limit, bisect_right(waiting, (now, float("inf"))))]
        # Leases run out: the `limit` that ran out first, as the SQL stores pick them (in
        # the order of their index), then by due time with the others.
        leased = d.leased.get(channel_id, {})
        expired = sorted((expiry, seq) for seq, expiry in leased.items() if expiry <= now)
        candidates += [(d.messages[seq].next_attempt_at or 0.0, seq) for _, seq in expired[:limit]]
        claims = []
        for _, seq in sorted(candidates)[:limit]:
            msg = d.messages[seq]
            d.unindex(msg)
            if msg.state is State.SENDING and msg.started_at is not None:
                msg.possible_duplicate = True  # its transaction had started: maybe sent
            msg.state, msg.lease_owner, msg.lease_expires_at = State.SENDING, worker, lease_until
            msg.started_at = None
            for rcpt in msg.recipients:
                if not rcpt.state.terminal:
                    rcpt.state, rcpt.updated_at = State.SENDING, now
            d.reindex(msg)
            claims.append(_claim(msg, worker))
        return claims

    @locked
    def unclaim(self, claims: Sequence[Claim], *, state: State, now: Instant) -> None:
        if State(state) not in EXPIRABLE:
            raise InvalidInput(f"unclaim: cannot put messages back as {state}")
        for claim in claims:
            msg = self._d.messages.get(claim.seq)
            if msg is None or msg.state is not State.SENDING or msg.lease_owner != claim.worker:
                continue
            self._d.unindex(msg)
            msg.state = State(state)
            # Never pushed past now: mail given back keeps its place in the queue.
            due = msg.next_attempt_at
            msg.next_attempt_at = due if due is not None and due < now else now
            msg.lease_owner = msg.lease_expires_at = msg.started_at = None
            for rcpt in msg.recipients:
                if rcpt.state is State.SENDING:
                    rcpt.state, rcpt.updated_at = State(state), now
            self._d.reindex(msg)

    @locked
    def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        d = self._d
        live = [r for r in records if r.claim.seq in d.messages]
        live = [r for r in live if d.messages[r.claim.seq].lease_owner == r.worker]
        for rec in live:
            msg = d.messages[rec.claim.seq]
            d.unindex(msg)
            after = State.DEFERRED if rec.message_state is State.SENDING else rec.message_state
            msg.state, msg.next_attempt_at, msg.failures = after, rec.next_attempt_at, rec.failures
            msg.possible_duplicate = msg.possible_duplicate or rec.possible_duplicate
            msg.lease_owner = msg.lease_expires_at = msg.started_at = None
            for s in rec.recipients:
                for rcpt in msg.recipients:
                    if rcpt.address == s.address:
                        rcpt.state, rcpt.reply, rcpt.updated_at = State(s.state), s.reply, rec.at
                msg.attempts.append(
                    AttemptView(
                        rec.at,
                        rec.claim.channel_id,
                        s.address,
                        str(s.stage),
                        s.reply,
                        str(s.outcome),
                    )
                )
            if not after.terminal:
                for rcpt in msg.recipients:
                    if rcpt.state is State.SENDING:
                        rcpt.state, rcpt.updated_at = after, rec.at
            d.reindex(msg)
        d.add_events([e for rec in live for e in rec.events])

    @locked
    def hold_channel(self, channel_id: str, now: Instant) -> int:
        return self._move(channel_id, WAITING, State.HELD, now)

    @locked
    def release_channel(self, channel_id: str, now: Instant) -> int:
        return self._move(channel_id, {State.HELD}, State.QUEUED, now, due=now)

    @locked
    def release_if_active(self, seen: Channel, now: Instant) -> int | None:
        now_is = self._d.channels.get(seen.id)
        if now_is is None or (now_is.state, now_is.generation) != (
            ChannelState.ACTIVE,
            seen.generation,
        ):
            return None
        return self._move(seen.id, {State.HELD}, State.QUEUED, now, due=now)

    def _move(
        self,
        channel_id: str,
        which: frozenset[State] | set[State],
        to: State,
        now: Instant,
        *,
        due: Instant | None = None,
    ) -> int:
        moved = 0
        for msg in list(self._d.messages.values()):
            if msg.channel_id != channel_id or msg.state not in which:
                continue
            self._d.unindex(msg)
            msg.state = to
            if due is not None:
                msg.next_attempt_at = due
            for rcpt in msg.recipients:
                if rcpt.state in EXPIRABLE:
                    rcpt.state, rcpt.updated_at = to, now
            self._d.reindex(msg)
            moved += 1
        return moved

    @locked
    def expire_due(self, now: Instant, events_for: str, *, limit: int = 1000) -> list[Event]:
        d = self._d
        taken: dict[State, list[Message]] = {state: [] for state in EXPIRABLE}
        kept: list[tuple[Instant, int]] = []
        end = bisect_right(d.expiry, (now, float("inf")))
        for expires_at, seq in d.expiry[:end]:
            msg = d.messages[seq]
            if msg.state.terminal:
                continue  # settled since: forget it here
            if _last_try_to_come(msg, now):
                kept.append((expires_at, seq))
            elif msg.state in taken and len(taken[msg.state]) < limit:
                taken[msg.state].append(msg)
            else:
                kept.append((expires_at, seq))
        d.expiry[:end] = kept
        expired = sorted((m for ms in taken.values() for m in ms), key=lambda m: m.seq)
        code, enhanced, text = GAVE_UP
        for msg in expired:
            d.unindex(msg)
            msg.state, msg.next_attempt_at = State.EXPIRED, None
            for rcpt in msg.recipients:
                if not rcpt.state.terminal:
                    rcpt.state, rcpt.reply = State.EXPIRED, Reply(code, enhanced, text)
                    rcpt.updated_at = now
        events = [
            Event(
                make_id("evt", now, os.urandom(10)),
                m.organization_id,
                "message.expired",
                now,
                {"message_id": m.id, "state": State.EXPIRED.value, "reason": GAVE_UP_TEXT},
            )
            for m in expired
        ]
        d.add_events(events)
        return events

    @locked
    def cancel_message(
        self, message_id: str, now: Instant, reason: str = "cancelled"
    ) -> MessageView:
        seq = self._d.by_id.get(message_id)
        if seq is None:
            raise NotFound(f"no message {message_id!r}")
        msg = self._d.messages[seq]
        if msg.state is State.SENDING:
            raise Conflict("the message is being sent right now; try again in a moment")
        if msg.state.terminal:
            raise Conflict(f"the message is already {msg.state}")
        cancel(self._d, [msg], now, reason)
        return view(msg, with_attempts=True)


def _last_try_to_come(msg: Message, now: Instant) -> bool:
    """A deferred message whose last try, at its give-up time, is still to come (the SQL
    store's `_not_last_try`): expiry leaves it to that try for LAST_TRY_GRACE seconds."""
    due = msg.next_attempt_at
    return (
        msg.state is State.DEFERRED
        and due is not None
        and due >= msg.expires_at
        and msg.expires_at > now - LAST_TRY_GRACE
    )


def _message(seq: int, msg: NewMessage) -> Message:
    state = State(msg.state)
    return Message(
        seq=seq,
        id=msg.id,
        organization_id=msg.organization_id,
        user_id=msg.user_id,
        channel_id=msg.channel_id,
        mail_from=msg.envelope.mail_from,
        content=msg.content,
        state=state,
        created_at=msg.created_at,
        expires_at=msg.expires_at,
        next_attempt_at=msg.created_at,
        recipients=[Recipient(a, state, None, msg.created_at) for a in msg.envelope.rcpt_to],
        subject=None,  # read from the bytes when asked (reads.view)
        test=msg.test,
    )


def _claim(msg: Message, worker: str) -> Claim:
    return Claim(
        message_id=msg.id,
        seq=msg.seq,
        organization_id=msg.organization_id,
        channel_id=msg.channel_id,
        mail_from=msg.mail_from,
        pending=tuple(r.address for r in msg.recipients if not r.state.terminal),
        settled=tuple(r.state for r in msg.recipients if r.state.terminal),
        content=msg.content,
        failures=msg.failures,
        created_at=msg.created_at,
        expires_at=msg.expires_at,
        possible_duplicate=msg.possible_duplicate,
        worker=worker,
    )
