"""What a channel run works with (`RunContext`, handed in by the dispatcher) and the state
it keeps as it goes (`RunState`): the claims in hand, the attempts not yet recorded, what the
channel's replies did to it, its connection slots. ChannelRun (outbox/channel_run.py) is made
of the parts built on this state: claiming (run_claims.py), recording (run_records.py),
attempts (run_attempts.py) and the effects on the channel (run_effects.py).

Side effects: none of its own (each part's docstring names its own).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from mailvia.domain.channel import Channel
from mailvia.domain.clock import Clock, Instant
from mailvia.domain.delivery import ChannelEffect
from mailvia.domain.ids import make_id
from mailvia.outbox.concurrency import ConcurrencyBook, Gate
from mailvia.outbox.dispatch_ports import DispatchOptions, DispatchStore, Notifier
from mailvia.outbox.liveness import Liveness
from mailvia.outbox.order import Turns
from mailvia.outbox.outage import Outage
from mailvia.outbox.ports import (
    AttemptRecord,
    Claim,
    Credentials,
    CredentialSource,
    Event,
    Ledger,
    Transport,
)
from mailvia.outbox.slots import Connections
from mailvia.outbox.webhook_ports import Metrics

# A run claims more (a backlog, or mail trickling in) for at most this long; then it ends with
# what it holds, and the next run reads its channel (settings, credentials) afresh.
RUN_SECONDS = 5.0

T = TypeVar("T")


async def in_thread(call: Callable[[], T]) -> T:
    """A store call in a worker thread: the store's own locks (SQLite's writer queue, the
    memory store's lock, PostgreSQL's row locks) keep its transactions apart."""
    return await asyncio.to_thread(call)


class _Entropy(threading.local):
    """os.urandom's bytes fetched ENTROPY_POOL at a time (one system call for hundreds of
    event ids, not one per delivered message), per thread; a forked child starts afresh so
    it never reuses its parent's bytes."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.pool, self.at = b"", 0

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.pool):
            self.pool, self.at = os.urandom(ENTROPY_POOL), 0
        self.at += size
        return self.pool[self.at - size : self.at]


ENTROPY_POOL = 4000
_entropy = _Entropy()
os.register_at_fork(after_in_child=_entropy.reset)


def new_event(org_id: str, type_: str, now: Instant, data: dict[str, object]) -> Event:
    return Event(make_id("evt", now, _entropy.take(10)), org_id, type_, now, data)


@dataclass(frozen=True)
class RunContext:
    """What a channel run works with, handed in by the dispatcher: the store, the transport
    and what it signs in with, the one clock, the dispatcher's settings and liveness (the
    claims in hand, the started marks), and who hears of what happened."""

    store: DispatchStore
    transport: Transport
    credentials: CredentialSource
    clock: Clock
    options: DispatchOptions
    liveness: Liveness
    stopping: Callable[[], bool]  # the dispatcher is shutting down: start nothing new
    rand: Callable[[], float]  # retry jitter
    metrics: Metrics
    notify_disconnected: Notifier
    connections: Connections  # max_connections across every worker (outbox/slots.py)
    concurrency: ConcurrencyBook  # how many of them at once, lowered by a 421
    outage: Outage  # the store's outages, logged once (outbox/outage.py)
    past_shutdown: Callable[[], bool]  # a stop's bound for work in flight has passed
    # In service (run_forever): a run waits for the store to come back and for a free
    # connection slot; run_once neither waits nor keeps slots afterwards.
    in_service: bool


class RunState:
    """The state of one channel's run, shared by the parts ChannelRun is made of. Every
    time it acts on is read from the context's clock as it goes."""

    def __init__(self, context: RunContext, channel: Channel) -> None:
        self.ctx = context
        self.store = context.store
        self.clock = context.clock
        self.channel = channel
        self.credentials: Credentials | None = None  # a password's, asked for once a run
        self.asked = False
        self.ledger: Ledger | None = (
            self.store.budget_ledger(channel.id, channel.budgets) if channel.budgets else None
        )
        self.queue: deque[Claim] = deque()
        self.records: list[AttemptRecord] = []
        self.effect = ChannelEffect.NONE
        self.effect_reply: str | None = None
        self.effect_refusal: str | None = None  # an OAuth mailbox's: why it got no token
        self.effect_wait: float | None = None  # the provider's own Retry-After, if given
        self.budget_wait: Instant | None = None
        self.attempts = 0
        self.held = 0  # messages this run moved to held
        self.delivered_any = False
        self.drained_at: Instant | None = None  # when a claim last came back short
        self.trickling = False  # the last claim brought mail, though short of a batch
        self.began = time.monotonic()
        self.claimed: list[int] = []  # seqs this run claimed (in the worker's hand until done)
        self.turns = Turns(channel.max_connections + 1)
        self.gate = Gate(channel.max_connections)  # its concurrency (outbox/concurrency.py)
        # seq -> the group commit marking it started, and its place in the group
        self.marks: dict[int, tuple[asyncio.Future[list[bool]], int]] = {}
        self.store_down = False  # the store failed: send nothing more this run
        # The store's claims and records run in a thread (`in_thread`), one of each at a
        # time, so the event loop keeps every connection going meanwhile (SQLite's fsync,
        # PostgreSQL's round trips).
        self.claiming: asyncio.Task[None] | None = None
        self.flushing: asyncio.Task[None] | None = None
        # Its connection slots (outbox/slots.py), one connection each; while it has more mail
        # than connections it asks for more every GROW_SECONDS (`growing`).
        self.slots = 0
        self.working: list[asyncio.Task[None]] = []  # one per connection
        self.growing: asyncio.Task[None] | None = None
        self.grown_at: Instant = 0.0
        self.ending = False  # its connections are done: no more are added
        # Another worker asks for slots of the channel while this run holds more than its
        # share: the run starts no more attempts and ends (the claims in hand go back to the
        # queue); the next run gives the excess back (outbox/slots.py).
        self.yielding = False
        self.fault: Exception | None = None  # a claim's or record's error, raised by `go`

    def young(self) -> bool:
        """Whether the run may still claim more (RUN_SECONDS since it began)."""
        return time.monotonic() - self.began < RUN_SECONDS

    @property
    def stopped(self) -> bool:
        return (
            self.effect is not ChannelEffect.NONE
            or self.budget_wait is not None
            or self.ctx.stopping()
            or self.store_down
            or self.fault is not None
        )
