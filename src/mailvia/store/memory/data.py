"""The memory store's tables: plain objects under one lock, with the few indexes the hot path
needs (each channel's waiting mail by due time, its leased mail, every message by give-up
time), kept in step by `reindex` around every change of a message's state or times."""

from __future__ import annotations

import functools
import threading
from bisect import bisect_left, insort
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from mailvia.domain.channel import Channel
from mailvia.domain.clock import Instant
from mailvia.domain.message import State
from mailvia.domain.replies import Reply
from mailvia.domain.tenancy import Organization, Team, User
from mailvia.outbox.ports import WorkerView
from mailvia.outbox.records import AttemptView, Event

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="HasData")
WAITING = frozenset({State.QUEUED, State.DEFERRED})


@dataclass
class Recipient:
    address: str
    state: State
    reply: Reply | None
    updated_at: Instant


@dataclass
class Message:
    seq: int
    id: str
    organization_id: str
    user_id: str
    channel_id: str
    mail_from: str
    content: bytes
    state: State
    created_at: Instant
    expires_at: Instant
    next_attempt_at: Instant | None
    recipients: list[Recipient]
    subject: str | None
    test: bool
    subject_read: bool = False  # `subject` is read from the bytes when first asked for
    failures: int = 0
    possible_duplicate: bool = False
    lease_owner: str | None = None
    lease_expires_at: Instant | None = None
    started_at: Instant | None = None
    attempts: list[AttemptView] = field(default_factory=list)


@dataclass
class Account:
    user: User
    password_hash: str | None
    created_at: Instant


@dataclass
class Token:
    id: str
    user_id: str
    token_hash: str
    name: str
    created_at: Instant
    revoked_at: Instant | None = None


class Data:
    """Everything the memory store holds. Change a message's state, due time or lease only
    between `unindex` and `reindex` (or through `move`)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.organizations: dict[str, Organization] = {}
        self.teams: dict[str, Team] = {}
        self.accounts: dict[str, Account] = {}
        self.domains: dict[str, str] = {}  # domain -> organization id
        self.identities: dict[str, list[tuple[Instant, str]]] = {}  # user id -> (granted, who)
        self.tokens: dict[str, Token] = {}
        self.channels: dict[str, Channel] = {}
        self.secrets: dict[str, bytes | None] = {}
        self.budget_wait: dict[str, Instant] = {}  # the budgets allow nothing until then
        self.messages: dict[int, Message] = {}
        self.by_id: dict[str, int] = {}
        self.keys: dict[tuple[str, str], tuple[str, str | None, Instant]] = {}
        self.waiting: dict[str, list[tuple[Instant, int]]] = {}  # channel -> (due, seq)
        self.leased: dict[str, dict[int, Instant]] = {}  # channel -> seq -> lease expiry
        self.expiry: list[tuple[Instant, int]] = []  # (expires_at, seq), pruned lazily
        self.events: list[tuple[int, Event]] = []
        self.event_ids: set[str] = set()
        self.workers: dict[str, WorkerView] = {}
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def unindex(self, msg: Message) -> None:
        if msg.state in WAITING and msg.next_attempt_at is not None:
            queue = self.waiting.get(msg.channel_id, [])
            i = bisect_left(queue, (msg.next_attempt_at, msg.seq))
            if i < len(queue) and queue[i] == (msg.next_attempt_at, msg.seq):
                del queue[i]
        elif msg.state is State.SENDING:
            self.leased.get(msg.channel_id, {}).pop(msg.seq, None)

    def reindex(self, msg: Message) -> None:
        if msg.state in WAITING and msg.next_attempt_at is not None:
            insort(self.waiting.setdefault(msg.channel_id, []), (msg.next_attempt_at, msg.seq))
        elif msg.state is State.SENDING and msg.lease_expires_at is not None:
            self.leased.setdefault(msg.channel_id, {})[msg.seq] = msg.lease_expires_at

    def add(self, msg: Message) -> None:
        self.messages[msg.seq] = msg
        self.by_id[msg.id] = msg.seq
        self.reindex(msg)
        if not msg.state.terminal:
            insort(self.expiry, (msg.expires_at, msg.seq))

    def add_events(self, events: list[Event]) -> None:
        for event in events:
            self.events.append((self.next_seq(), event))
            self.event_ids.add(event.id)


class HasData(Protocol):
    _d: Data


def locked(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Run the method under the store's lock: each is one transaction, as in the SQL store."""

    @functools.wraps(method)
    def run(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._d.lock:
            return method(self, *args, **kwargs)

    return run
