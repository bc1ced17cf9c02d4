"""The memory store's mending: the same rules as store/mending.py (what waits on a channel,
cancelling with a reason and a `message.cancelled` event each, moving waiting mail to another
channel, retrying deferred mail now), on plain objects."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

from mailvia.domain.clock import Instant
from mailvia.domain.ids import make_id
from mailvia.domain.message import State, message_state
from mailvia.domain.replies import Reply
from mailvia.domain.retry import CANCELLED
from mailvia.outbox.records import Event, WaitingMail
from mailvia.store.memory.data import Data, Message, locked

# what waits on a channel (the SQL store's WAITING): queued, deferred, held
WAITING = frozenset({State.QUEUED, State.DEFERRED, State.HELD})


def cancel(d: Data, msgs: Sequence[Message], now: Instant, reason: str) -> None:
    """Cancel the waiting recipients of these messages, settle each message's state from its
    recipients', record one `message.cancelled` event each."""
    reply = Reply(*CANCELLED, f"mailvia: cancelled: {reason}")
    for msg in msgs:
        d.unindex(msg)
        for rcpt in msg.recipients:
            if rcpt.state in WAITING:
                rcpt.state, rcpt.reply, rcpt.updated_at = State.CANCELLED, reply, now
        msg.state = message_state(r.state for r in msg.recipients)
        if msg.state.terminal:
            msg.next_attempt_at = None
        d.reindex(msg)
    d.add_events(
        [
            Event(
                make_id("evt", now, os.urandom(10)),
                msg.organization_id,
                "message.cancelled",
                now,
                {"message_id": msg.id, "reason": reason},
            )
            for msg in msgs
        ]
    )


class MemoryMending:
    _d: Data

    def _waiting(self, channel_id: str, ids: Sequence[str] | None = None) -> list[Message]:
        wanted = None if ids is None else set(ids)
        return sorted(
            (
                msg
                for msg in self._d.messages.values()
                if msg.channel_id == channel_id
                and msg.state in WAITING
                and (wanted is None or msg.id in wanted)
            ),
            key=lambda msg: msg.seq,
        )

    @locked
    def waiting_mail(self, channel_id: str) -> list[WaitingMail]:
        return [
            WaitingMail(msg.id, msg.user_id, msg.content.partition(b"\r\n\r\n")[0])
            for msg in self._waiting(channel_id)
        ]

    @locked
    def cancel_channel_mail(
        self, channel_id: str, now: Instant, reason: str, ids: Sequence[str] | None = None
    ) -> int:
        msgs = self._waiting(channel_id, ids)
        cancel(self._d, msgs, now, reason)
        return len(msgs)

    @locked
    def move_mail(
        self, channel_id: str, ids: Sequence[str], to_channel_id: str, *, held: bool, now: Instant
    ) -> int:
        to = State.HELD if held else State.QUEUED
        msgs = self._waiting(channel_id, ids)
        for msg in msgs:
            self._d.unindex(msg)
            for rcpt in msg.recipients:
                if rcpt.state in WAITING:
                    rcpt.state, rcpt.updated_at = to, now
            msg.channel_id, msg.state = to_channel_id, to
            if not held:
                msg.next_attempt_at = now
            self._d.reindex(msg)
        return len(msgs)

    @locked
    def retry_channel_now(self, channel_id: str, now: Instant) -> int:
        channel = self._d.channels.get(channel_id)
        if channel is not None:
            self._d.channels[channel_id] = replace(channel, throttled_until=None, throttle_level=0)
        retried = 0
        for msg in self._waiting(channel_id):
            due = msg.next_attempt_at
            if msg.state is State.DEFERRED and due is not None and due > now:
                self._d.unindex(msg)
                msg.next_attempt_at = now
                self._d.reindex(msg)
                retried += 1
        return retried
