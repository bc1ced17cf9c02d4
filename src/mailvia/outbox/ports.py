"""The ports the use cases share: a transport, a vault, the credential source, the prober,
the budget ledger and the worker registry, and the records a store takes and gives.

Each use case takes a narrow Protocol of its own with just the store methods it calls
(`DispatchStore` in dispatch_ports.py, `TenancyStore` in tenancy.py, `MessageStore` in
messages.py, ...); the SQL store implements them all, the memory store those of the
outbox (store/memory/). Adapters implement these (store/, transport/,
secrets.py); the composition root (app/wiring.py) hands concrete ones in. Store methods are
synchronous and each is one transaction; they raise domain errors (NotFound, Conflict,
StoreUnavailable), never driver exceptions. web/ and ingress/ never import this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from mailvia.domain.channel import Channel
from mailvia.domain.clock import Instant
from mailvia.domain.delivery import RecipientSettlement, TransactionResult
from mailvia.domain.message import Envelope, State
from mailvia.domain.probe import ProbeReport
from mailvia.domain.shaping import UseLog
from mailvia.outbox.records import (
    AttemptView,
    Event,
    MessageFilter,
    MessageView,
    RecipientView,
    TokenView,
)


@dataclass(frozen=True)
class Credentials:
    """What a channel signs in with. The password never appears in a repr or a log."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class NewMessage:
    """A message accepted by an intake, as it goes into the outbox."""

    id: str
    organization_id: str
    user_id: str
    channel_id: str
    envelope: Envelope
    content: bytes
    state: State  # queued, or held when its channel is disconnected or paused
    created_at: Instant
    expires_at: Instant
    idempotency_key: str | None = None
    request_hash: str | None = None
    test: bool = False  # a test message of "Test connection"


@dataclass(frozen=True)
class Claim:
    """A message leased to one dispatcher for one attempt."""

    message_id: str
    seq: int
    organization_id: str
    channel_id: str
    mail_from: str
    pending: tuple[str, ...]  # recipients still to deliver, in submission order
    settled: tuple[State, ...]  # states of the recipients already terminal
    content: bytes
    failures: int  # earlier temporary failures (throttles excluded)
    created_at: Instant
    expires_at: Instant
    possible_duplicate: bool
    worker: str = ""  # the lease owner the store handed it to; `unclaim` checks it


@dataclass(frozen=True)
class AttemptRecord:
    """The result of one attempt, as the store persists it (with its events)."""

    claim: Claim
    worker: str
    at: Instant
    recipients: tuple[RecipientSettlement, ...]  # each with the stage its reply came at
    message_state: State
    next_attempt_at: Instant | None
    failures: int
    possible_duplicate: bool
    events: tuple[Event, ...] = ()


class Ledger(Protocol):
    """One channel's budget use, shared by every worker (see store/budgets.py)."""

    def take(
        self, now: Instant, recipients: int, *, start: tuple[int, str] | None = None
    ) -> tuple[int | None, Instant | None]:
        """Start a transaction now: (its id, None), or (None, when one would fit). With
        `start` (message seq, worker) the message is marked started too; (None, None): the
        worker no longer holds its lease."""
        ...

    def finish(self, ended: Sequence[tuple[int, Instant]]) -> None:
        """Record when transactions ended."""
        ...

    def give_back(self, taken: Sequence[int]) -> None:
        """Forget transactions that never reached the provider: they count nowhere."""
        ...

    def allowance(self, now: Instant) -> int | None:
        """How many more transactions may start now (None: no message budget)."""
        ...

    def log(self, now: Instant) -> UseLog:
        """The transactions that count at `now`, by end time."""
        ...


@dataclass(frozen=True)
class WorkerView:
    """A dispatcher as its heartbeat row shows it."""

    id: str
    host: str
    pid: int
    started_at: Instant
    beat_at: Instant


class WorkerRegistry(Protocol):
    """What a dispatcher needs to show it is alive and to mark transactions it starts
    (see store/workers.py). A claim lasts while its worker beats."""

    def start_worker(self, worker: str, now: Instant, *, host: str, pid: int) -> int:
        """(Re)start as `worker`: the previous incarnation's claims become claimable now."""
        ...

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
        """Alive at `now`: the leases it holds on `seqs` last until `lease_until`."""
        ...

    def stop_worker(self, worker: str) -> None:
        """Stopped cleanly (claims given back): forget the worker."""
        ...

    def mark_started(
        self,
        seqs: Sequence[int],
        worker: str,
        now: Instant,
        *,
        records: Sequence[AttemptRecord] = (),
    ) -> list[bool]:
        """Transactions for these messages start now; per seq, whether it is still held.
        `records` are recorded in the same transaction (as DispatchStore.record_attempts)."""
        ...


@runtime_checkable
class AwaitedMarks(Protocol):
    """A WorkerRegistry whose started marks can be awaited on the event loop without a
    thread (the store process's: the request is written on the loop and the answer set
    there). Another registry's marks run in a thread."""

    async def mark_started_awaited(
        self,
        seqs: Sequence[int],
        worker: str,
        now: Instant,
        *,
        records: Sequence[AttemptRecord] = (),
    ) -> list[bool]:
        """WorkerRegistry.mark_started, awaited."""
        ...


class Transport(Protocol):
    """Hands a message to a channel's server. Delivery failures are returned, never raised."""

    async def send(
        self,
        channel: Channel,
        credentials: Credentials | None,
        envelope: Envelope,
        content: bytes,
    ) -> TransactionResult: ...

    async def forget(self, channel_id: str) -> None:
        """Close the channel's pooled connections (its settings or credentials changed)."""
        ...

    def narrow(self, channel_id: str, width: int) -> None:
        """Keep no more than `width` of the channel's connections open (its concurrency was
        cut): idle ones above it close now, busy ones as their transaction ends."""
        ...

    async def aclose(self) -> None: ...


class CredentialSource(Protocol):
    """What a channel signs in with, as delivery needs it now: a password, or for an OAuth
    mailbox a fresh access token (renewed ahead of expiry, once per channel across workers).

    `rejected`: the credentials the server just refused; the source renews an OAuth token
    unless another caller already has. `renew`: an OAuth token renewed by the provider now
    (once), whatever is in hand, so that the provider says whether the grant still holds (Test
    connection); a token another caller had renewed meanwhile does as well. Raises
    CredentialsFailed (with the reply to settle with) when none can be had,
    SecretsUnavailable on a wrong master key."""

    async def __call__(
        self, channel: Channel, *, rejected: Credentials | None = None, renew: bool = False
    ) -> Credentials | None: ...


class Vault(Protocol):
    """Authenticated encryption of secrets at rest."""

    def seal(self, plaintext: bytes) -> bytes: ...
    def open(self, sealed: bytes) -> bytes: ...


class Prober(Protocol):
    """Tests a channel step by step (resolve, connect, TLS, EHLO, AUTH, then MAIL FROM
    `mail_from` and RSET, or an optional test message; for a provider API's mailbox, the test
    message's request) with the code that delivers, on a one-off connection, never a pooled
    one, within `timeout` seconds in all. Failures are in the report, never raised; the
    report's `delivery` is the test message's result, for recording it."""

    async def probe(
        self,
        channel: Channel,
        credentials: Credentials | None,
        *,
        to: str | None = None,
        mail_from: str | None = None,
        content: bytes | None = None,
        timeout: float = 10.0,
    ) -> ProbeReport: ...


# The records the stores' methods take and give (outbox/records.py), for their implementers.
__all__ = [
    "AttemptRecord",
    "AttemptView",
    "Claim",
    "CredentialSource",
    "Credentials",
    "Event",
    "Ledger",
    "MessageFilter",
    "MessageView",
    "NewMessage",
    "Prober",
    "RecipientView",
    "TokenView",
    "Transport",
    "Vault",
]
