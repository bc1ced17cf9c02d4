"""A channel whose sign-in no longer works is disconnected: one code path for a channel run
that met the refusal (run_effects.py) and for Test connection that found it (probe.py).

Once: the store disconnects the channel only as the party saw it when it met the refusal
(active, in the same generation: store `disconnect_channel`, one conditional UPDATE). Of a
run and Test connection that meet the refusal together, one disconnects, holds, records
the event and tells the owner; the other does nothing. A refusal met before the channel was
reconnected (or edited, paused, resumed) disconnects nothing: the next use finds out again.

Side effects: the channel's state and reason, its queued mail held, a `channel.disconnected`
event, its pooled connections closed, its owner told.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from mailvia.domain.channel import Channel
from mailvia.domain.clock import Instant
from mailvia.outbox.dispatch_ports import Notifier
from mailvia.outbox.ports import Transport
from mailvia.outbox.records import Event
from mailvia.outbox.run_context import new_event

log = logging.getLogger(__name__)


class DisconnectStore(Protocol):
    """What disconnecting needs from the store."""

    def disconnect_channel(
        self, seen: Channel, reason: str, now: Instant, *, refusal: str | None = None
    ) -> Channel | None:
        """Disconnect the channel if it is active and still in `seen`'s generation; returns
        it disconnected, or None (it is not active, or changed since)."""
        ...

    def hold_channel(self, channel_id: str, now: Instant) -> int: ...
    def add_events(self, events: Sequence[Event]) -> None: ...


async def disconnect(
    store: DisconnectStore,
    transport: Transport,
    notify: Notifier,
    channel: Channel,
    reason: str,
    now: Instant,
    *,
    held: int = 0,
    refusal: str | None = None,
) -> int | None:
    """Mark `channel` (as the refusal found it: active) disconnected for `reason` (the
    reply, e.g. `535 5.7.8 ...`) and, for an OAuth mailbox that got no token, the
    `refusal`'s kind (domain/oauth.Refusal), hold its queued mail, record
    `channel.disconnected` (with the count held, `held` being those the caller held already,
    and the refusal's kind), close its pooled connections and tell its owner (and, for its
    app's refusal, the organization's admins: notices.py). Returns the count held in all;
    None when it was not active or has changed since (another party disconnected it, or it
    was reconnected): then nothing is done."""
    done = store.disconnect_channel(channel, reason, now, refusal=refusal)
    if done is None:
        log.info("channel %s changed since it met %s: not disconnected here", channel.id, reason)
        return None
    held += store.hold_channel(channel.id, now)
    data: dict[str, object] = {"channel_id": channel.id, "reason": reason, "held": held}
    if refusal is not None:
        data["refusal"] = refusal
    store.add_events([new_event(channel.organization_id, "channel.disconnected", now, data)])
    await transport.forget(channel.id)
    await notify(done, reason, now)
    log.warning("channel %s disconnected: %s", channel.id, reason)
    return held
