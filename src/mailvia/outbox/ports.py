"""The ports the use cases share: a transport, a vault, the credential source, the prober,
and `Store`, the whole outbox as the SQL store implements it.

Each use case but the dispatcher takes a narrow Protocol of its own with just the store
methods it calls (`TenancyStore` in tenancy.py, `MessageStore` in messages.py, ...), a subset
of `Store`; the SQL store implements them all. Adapters implement these (store/, transport/,
secrets.py); the composition root (app.py) hands concrete ones in. Store methods are
synchronous and each is one transaction; they raise domain errors (NotFound, Conflict,
StoreUnavailable), never driver exceptions. web/ and ingress/ never import this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailvia.domain.channel import Budget, Channel, ChannelState
from mailvia.domain.clock import Instant
from mailvia.domain.delivery import RecipientSettlement, TransactionResult
from mailvia.domain.message import Envelope, State
from mailvia.domain.probe import ProbeReport
from mailvia.domain.shaping import UseLog
from mailvia.domain.tenancy import Fallback, Organization, Team, User
from mailvia.outbox.records import (
    AttemptView,
    Event,
    MessageFilter,
    MessageView,
    RecipientView,
    TokenView,
    WaitingMail,
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
    stage: str
    recipients: tuple[RecipientSettlement, ...]
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

    def mark_started(self, seqs: Sequence[int], worker: str, now: Instant) -> list[bool]:
        """Transactions for these messages start now; per seq, whether it is still held."""
        ...


class Store(Protocol):
    """The outbox and everything it refers to: the union the SQL store implements, and what
    the dispatcher sees (its narrowing comes with the dispatch core's clock, issue 11)."""

    # tenancy
    def create_organization(self, org_id: str, name: str, now: Instant) -> Organization: ...
    def get_organization(self, org_id: str) -> Organization: ...
    def find_organization(self, name: str) -> Organization | None: ...
    def update_organization(
        self, org_id: str, *, default_channel_id: str | None, fallback: Fallback
    ) -> Organization: ...
    def create_team(self, team_id: str, org_id: str, name: str, now: Instant) -> Team: ...
    def find_team(self, org_id: str, name: str) -> Team | None: ...
    def create_user(
        self,
        user: User,
        *,
        password_hash: str | None,
        now: Instant,
    ) -> User: ...
    def find_user(self, email: str) -> User | None: ...
    def get_user(self, user_id: str) -> User: ...
    def list_users(self, org_id: str) -> list[User]: ...
    def count_users(self) -> int: ...
    def add_domain(self, org_id: str, domain: str, now: Instant) -> None: ...
    def domain_organization(self, domain: str) -> str | None: ...
    def grant_identity(self, user_id: str, identity: str, now: Instant) -> None: ...
    def identities(self, user_id: str) -> list[str]: ...
    def add_token(
        self, token_id: str, user_id: str, token_hash: str, name: str, now: Instant
    ) -> None: ...
    def user_for_token(self, token_hash: str) -> User | None: ...
    def senders_for(self, org_id: str, address: str) -> list[User]: ...

    # channels
    def add_channel(self, channel: Channel, secret: bytes | None, now: Instant) -> Channel: ...
    def get_channel(self, channel_id: str) -> Channel: ...
    def find_channel(self, org_id: str, name: str) -> Channel | None: ...
    def list_channels(self, org_id: str | None = None) -> list[Channel]: ...
    def channel_secret(self, channel_id: str) -> bytes | None: ...
    def remove_channel(self, channel_id: str) -> None: ...
    def set_channel_state(
        self, channel_id: str, state: ChannelState, reason: str | None, now: Instant
    ) -> Channel: ...
    def set_channel_throttle(self, channel_id: str, until: Instant | None, level: int) -> None: ...
    def update_channel(self, channel: Channel, secret: bytes | None) -> Channel: ...
    def budget_ledger(self, channel_id: str, budgets: Sequence[Budget]) -> Ledger: ...

    # the outbox
    def add_messages(self, messages: Sequence[NewMessage]) -> list[tuple[str, bool]]: ...
    def channels_due(self, now: Instant) -> list[str]: ...
    def next_due_at(self) -> Instant | None: ...
    def claim(
        self, *, channel_id: str, now: Instant, limit: int, lease_until: Instant, worker: str
    ) -> list[Claim]: ...
    def unclaim(self, claims: Sequence[Claim], *, state: State, now: Instant) -> None: ...
    def record_attempts(self, records: Sequence[AttemptRecord]) -> None: ...
    def hold_channel(self, channel_id: str, now: Instant) -> int: ...
    def release_channel(self, channel_id: str, now: Instant) -> int: ...
    def expire_due(self, now: Instant, events_for: str, *, limit: int = 1000) -> list[Event]: ...
    def get_message(self, message_id: str) -> MessageView: ...
    def list_messages(self, query: MessageFilter) -> tuple[list[MessageView], str | None]: ...
    def cancel_message(
        self, message_id: str, now: Instant, reason: str = "cancelled"
    ) -> MessageView: ...
    def waiting_mail(self, channel_id: str) -> list[WaitingMail]: ...
    def cancel_channel_mail(
        self, channel_id: str, now: Instant, reason: str, ids: Sequence[str] | None = None
    ) -> int: ...
    def move_mail(
        self, channel_id: str, ids: Sequence[str], to_channel_id: str, *, held: bool, now: Instant
    ) -> int: ...
    def retry_channel_now(self, channel_id: str, now: Instant) -> int: ...
    def queue_counts(self, org_id: str | None = None) -> dict[str, dict[State, int]]: ...
    def waiting_count(self, channel_id: str) -> int: ...
    def add_events(self, events: Sequence[Event]) -> None: ...
    def list_workers(self) -> list[WorkerView]: ...
    def list_events(
        self, org_id: str, *, cursor: str | None, limit: int
    ) -> tuple[list[Event], str | None]: ...

    # sign-in, teams and API tokens
    def password_hash(self, user_id: str) -> str | None: ...
    def set_password(
        self, user_id: str, password_hash: str | None, *, must_change_password: bool
    ) -> None: ...
    def list_teams(self, org_id: str) -> list[Team]: ...
    def list_tokens(self, user_id: str) -> list[TokenView]: ...
    def revoke_token(self, token_id: str, now: Instant) -> None: ...


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

    async def aclose(self) -> None: ...


class CredentialSource(Protocol):
    """What a channel signs in with, as delivery needs it now: a password, or for an OAuth
    mailbox a fresh access token (renewed ahead of expiry, once per channel across workers).

    `rejected`: the credentials the server just refused; the source renews an OAuth token
    unless another caller already has. Raises CredentialsFailed (with the reply to settle
    with) when none can be had, SecretsUnavailable on a wrong master key."""

    async def __call__(
        self, channel: Channel, *, rejected: Credentials | None = None
    ) -> Credentials | None: ...


class Vault(Protocol):
    """Authenticated encryption of secrets at rest."""

    def seal(self, plaintext: bytes) -> bytes: ...
    def open(self, sealed: bytes) -> bytes: ...


class Prober(Protocol):
    """Tests a channel step by step (resolve, connect, TLS, EHLO, AUTH, an optional test
    message; for a provider API's mailbox, the test message's request) with the code that
    delivers, on a one-off connection, never a pooled one, within `timeout` seconds in all.
    Failures are in the report, never raised; the report's `delivery` is the test message's
    result, for recording it."""

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


# The records the Store's methods take and give (outbox/records.py), for its implementers.
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
    "Store",
    "TokenView",
    "Transport",
    "Vault",
]
