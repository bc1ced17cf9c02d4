"""Submit: accept a message into the outbox (the only hand-off point of every intake).

Validates the sender's right to the From address, routes it, checks that the channel's
transport can carry it as stored (a provider's API cannot split a message or send to other
people than its headers name: domain/api_mail.py), and commits it before returning: a
Receipt means the message is on disk.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from mailvia.domain.api_mail import DEFAULT_LIMITS, ApiLimits, refusal
from mailvia.domain.channel import Budget, Channel, ChannelState, TransportKind, may_send_as
from mailvia.domain.clock import Clock, Instant
from mailvia.domain.errors import CannotCarry, Forbidden, NotFound
from mailvia.domain.ids import make_id
from mailvia.domain.message import State
from mailvia.domain.routing import Route, route
from mailvia.domain.tenancy import Organization, User
from mailvia.outbox.ahead import QueuedAhead
from mailvia.outbox.compose import Composed
from mailvia.outbox.forecasts import Forecasts
from mailvia.outbox.ports import Ledger, NewMessage
from mailvia.outbox.receipts import Receipt, receipt_of, with_forecast
from mailvia.outbox.records import MessageView
from mailvia.outbox.remembered import Remembered
from mailvia.outbox.senders import CheckedFrom, FromChecks, FromRead, check_sender


class SubmitStore(Protocol):
    """What submitting needs from the store: the sender's rights and routes, the forecast's
    backlog and budgets, and the one commit."""

    def get_organization(self, org_id: str) -> Organization: ...
    def list_channels(self, org_id: str | None = None) -> list[Channel]: ...
    def domain_organization(self, domain: str) -> str | None: ...
    def identities(self, user_id: str) -> list[str]: ...
    def user_from(self, org_id: str, user_id: str, address: str) -> FromRead: ...
    def get_channel(self, channel_id: str) -> Channel: ...
    def waiting_count(self, channel_id: str) -> int: ...
    def budget_ledger(self, channel_id: str, budgets: Sequence[Budget]) -> Ledger: ...

    def add_messages(self, messages: Sequence[NewMessage]) -> list[tuple[str, bool]]:
        """Commit them all in one transaction: (id, whether new) each; an idempotency key
        seen before gives its earlier message's id (raises Conflict for another body)."""
        ...

    def get_message(self, message_id: str) -> MessageView: ...

    def snapshot(self) -> AbstractContextManager[None]:
        """The reads of this thread inside it share one read transaction."""
        ...


@dataclass(frozen=True)
class Submission:
    """One message to submit, with the caller's idempotency key if any; `checked_from`: its
    From read and checked already, with its route's inputs (the submission port's: a trusted
    network's by `Tenancy.trusted_from`, a logged-in user's by `Tenancy.user_from`): its user
    may send From it, and its organization and channels are this message's route inputs, not
    read again. Without it, `plan_each` checks the From with the request's `FromChecks`."""

    composed: Composed
    idempotency_key: str | None = None
    request_hash: str | None = None
    checked_from: CheckedFrom | None = None


class PoolNow:
    """The shared pool's row as it reads now, read at most once (one request's, inside its
    read transaction) and only when a route reaches the pool. `wired` is the channel as it
    was read at start, which another process (`mailvia channel pause`) or the dispatcher (a
    disconnect) may have paused or disconnected since. None: no pool, or its row is gone."""

    def __init__(self, store: SubmitStore, pool: Channel | None) -> None:
        self._store = store
        self.wired = pool
        self._now: Channel | None = None
        self._read = False

    def __call__(self) -> Channel | None:
        if not self._read and self.wired is not None:
            try:
                self._now = self._store.get_channel(self.wired.id)
            except NotFound:
                self._now = None
            self._read = True
        return self._now


class Submitter:
    """The submit use case, shared by the API, the SMTP submission server and the CLI."""

    def __init__(
        self,
        store: SubmitStore,
        *,
        pool: Callable[[], Channel | None],
        on_submit: Callable[[], None] = lambda: None,
        api_limits: Mapping[TransportKind, ApiLimits] = DEFAULT_LIMITS,
        ahead_clock: Clock = time.monotonic,
    ) -> None:
        self._store = store
        self._pool = pool
        self.on_submit = on_submit  # after a commit: wake delivery (here, or serve's worker)
        self._api_limits = api_limits
        # The forecast's backlog per channel, counted at most once a second (ahead.py) on
        # `ahead_clock` (monotonic: not a request's `now`).
        self._ahead = QueuedAhead(
            lambda channel_id: self._store.waiting_count(channel_id), clock=ahead_clock
        )

    def explain(
        self,
        sender: User,
        from_address: str,
        *,
        known: CheckedFrom | None = None,
        pool: PoolNow | None = None,
    ) -> Route:
        """Which channel mail From this address would take, and why (no checks of rights).
        `known`: the sender's organization and channels, read already (else they are read).
        A route that reaches the shared pool is worked out with the pool's row as it reads
        now (`pool`: the request's reader, one read for all its routes; else one of its own),
        so mail for a pool paused or disconnected since the start is held; one that does not
        reach it reads nothing more."""
        if known is not None and known.organization.id == sender.organization_id:
            organization, channels = known.organization, list(known.channels)
        else:
            organization = self._store.get_organization(sender.organization_id)
            channels = self._store.list_channels(sender.organization_id)
        pool = pool if pool is not None else self.pool_now()
        found = route(
            sender=sender,
            from_address=from_address,
            channels=channels,
            organization=organization,
            pool=pool.wired,
        )
        if pool.wired is None or not found.reached_pool:
            return found
        return route(  # the same steps up to the pool's, which its row now decides
            sender=sender,
            from_address=from_address,
            channels=channels,
            organization=organization,
            pool=pool(),
        )

    def pool_now(self) -> PoolNow:
        """A reader of the shared pool's row as it reads now (one request's: see `PoolNow`)."""
        return PoolNow(self._store, self._pool())

    def check_sender(self, sender: User, from_address: str) -> None:
        """Raise Forbidden unless `sender` may send From this address."""
        check_sender(sender, from_address, self._store.domain_organization, self._store.identities)

    def from_checks(self) -> FromChecks:
        """One request's sender checks (`FromChecks`): each (sender, address) judged once, each
        sender's rights and route inputs read once per domain (a batch of 1,000 with one
        envelope sender reads them once, not 1,000 times; an envelope sender and a From of
        one domain, once, not twice). Pass it to `plan_each` with the request's items."""
        return FromChecks(self._store.user_from)

    def submit(
        self, sender: User, submissions: Sequence[Submission], *, now: Instant
    ) -> list[Receipt]:
        """Validate, route and commit a batch in one transaction; all or nothing.

        Raises Forbidden (From or Sender not the sender's, or no channel may send as the
        From), CannotCarry (the channel's API cannot carry a message as stored) and the
        store's Conflict (idempotency key reused with another body)."""
        routes: Remembered[tuple[str, str, str, bool], Channel] = Remembered()
        checks = self.from_checks()
        pool = self.pool_now()
        planned = []
        forecasts = Forecasts(self._store, now=now, queued=self._ahead)
        with self._store.snapshot():  # the lookups: one read transaction
            for submission in submissions:
                channel = self._route(routes, checks, pool, sender, submission.composed)
                if isinstance(channel, Exception):
                    raise channel
                self.check_carried(channel, submission.composed)
                planned.append((self._message(sender, submission, channel, now), channel))
            forecasts.plan_all(planned)
        return self._commit(planned, forecasts)

    def submit_one(
        self,
        make: Callable[[Callable[[User, str], None]], tuple[User, Submission]],
        *,
        now: Instant,
    ) -> Receipt:
        """One message of an intake that answers for it alone (the API's single POST): `make`
        finds its sender and builds it inside the read transaction, given the request's
        sender check (`FromChecks.check`: its envelope sender's), so the sender's own read
        (the API token's) shares that transaction; then `plan_each` there with the same
        `FromChecks` (its From's check, its route and forecast: an envelope sender and a From
        of one domain, one read), and its commit after, in its own transaction.

        Raises what `make` raises, Forbidden, CannotCarry and the commit's errors (Conflict,
        StoreUnavailable), in that order."""
        checks = self.from_checks()
        with self._store.snapshot():  # make's reads and the plan's: one read transaction
            item = make(checks.check)
            plan = self.plan_each([item], now=now, checks=checks)
        [receipt] = self.commit_each(plan)
        if isinstance(receipt, Exception):
            raise receipt
        return receipt

    def check_carried(self, channel: Channel, composed: Composed) -> None:
        """Raise CannotCarry when the channel's provider API cannot carry the message to
        exactly these recipients as stored (SMTP channels carry anything)."""
        limits = self._api_limits.get(channel.transport)
        if limits is None:
            return
        reason = refusal(
            channel.transport,
            limits,
            recipients=composed.envelope.rcpt_to,
            content=composed.content,
            max_recipients=channel.max_recipients_per_message,
        )
        if reason is not None:
            raise CannotCarry(f"{channel.name} cannot send this message: {reason}")

    def submit_each(
        self,
        items: Sequence[tuple[User, Submission] | Exception],
        *,
        now: Instant,
        checks: FromChecks | None = None,
    ) -> list[Receipt | Exception]:
        """Messages of different senders, each judged on its own: the one per-item submit of
        every intake that answers per message (the API's batch, the submission port's group
        commit). A refused one gets its error in its place and does not hold up the others;
        an item the intake already refused (an Exception) keeps its place as it is; the
        accepted ones are committed together in one transaction. Raises only what the commit
        itself raises (e.g. StoreUnavailable). The two steps: `plan_each`, `commit_each`."""
        return self.commit_each(self.plan_each(items, now=now, checks=checks))

    def plan_each(
        self,
        items: Sequence[tuple[User, Submission] | Exception],
        *,
        now: Instant,
        checks: FromChecks | None = None,
        forecast: bool = True,
    ) -> EachPlan:
        """submit_each's look-ups, in one read transaction (its own, or the caller's store
        snapshot it runs in: `submit_one`'s): each item's channel or refusal.

        An item's `Submission.checked_from` is its own read of its From (the user's right to
        it, the organization and channels its route is worked out from); the others' From and
        every Sender header are checked by `checks` (the request's `from_checks()`, whose
        reads its envelope senders' checks made already; else a new one). `forecast=False`:
        an intake whose answer does not tell when the message leaves (SMTP's 250) skips the
        channels' backlog and budget reads; its receipts have no `queued_ahead`, and
        `expected_at` is `now` for a queued message."""
        routes: Remembered[tuple[str, str, str, bool], Channel] = Remembered()
        checks = checks or self.from_checks()
        pool = self.pool_now()
        results: list[Receipt | Exception | None] = []
        planned = []
        forecasts = Forecasts(self._store, now=now, queued=self._ahead)
        with self._store.snapshot():  # the lookups: one read transaction
            for item in items:
                if isinstance(item, Exception):
                    results.append(item)
                    continue
                sender, submission = item
                channel = self._route(
                    routes, checks, pool, sender, submission.composed, submission.checked_from
                )
                if not isinstance(channel, Exception):
                    try:
                        self.check_carried(channel, submission.composed)
                    except CannotCarry as refused:
                        channel = refused
                if isinstance(channel, Exception):
                    results.append(channel)
                    continue
                results.append(None)
                planned.append((self._message(sender, submission, channel, now), channel))
            if forecast:
                forecasts.plan_all(planned)
        return EachPlan(results, planned, forecasts)

    def commit_each(self, plan: EachPlan) -> list[Receipt | Exception]:
        """Commit what `plan_each` accepted (outside any store snapshot, in its own write
        transaction); each item's receipt or refusal, in order."""
        receipts = iter(self._commit(plan.planned, plan.forecasts))
        return [result if result is not None else next(receipts) for result in plan.results]

    def _commit(
        self, planned: list[tuple[NewMessage, Channel]], forecasts: Forecasts
    ) -> list[Receipt]:
        now = forecasts.now
        created = self._store.add_messages([m for m, _ in planned]) if planned else []
        receipts = []
        for (message, channel), (message_id, is_new) in zip(planned, created, strict=True):
            state = message.state if is_new else self._store.get_message(message_id).state
            receipt = receipt_of(message, channel, message_id, is_new, state, now)
            receipts.append(with_forecast(receipt, forecasts.of(message, channel)))
            if is_new and state is State.QUEUED:
                self._ahead.added(channel.id)
        if any(is_new for _, is_new in created):
            self.on_submit()
        return receipts

    def _route(
        self,
        routes: Remembered[tuple[str, str, str, bool], Channel],
        checks: FromChecks,
        pool: PoolNow,
        sender: User,
        composed: Composed,
        checked_from: CheckedFrom | None = None,
    ) -> Channel | Exception:
        """The channel for the message's From, once its sender may use its From and Sender
        (worked out once per distinct pair and read; `checked_from`: this message's read of
        its From, see `Submission`; else `checks` reads and judges it; `pool`: the request's
        reader of the shared pool's row as it reads now)."""
        from_address, on_behalf = composed.from_address, composed.sender_address or ""
        known = checked_from if _holds(checked_from, sender, from_address) else None

        def work_out() -> Channel:
            found = known if known is not None else checks.checked(sender, from_address)
            channel = self._channel_of(sender, from_address, found, pool)
            if on_behalf and on_behalf.lower() != from_address.lower():
                try:
                    checks.check(sender, on_behalf)
                except Forbidden as exc:
                    raise Forbidden(f"Sender header: {exc}") from None
            return channel

        key = (sender.id, from_address.lower(), on_behalf.lower(), known is not None)
        return routes.get(key, work_out)

    def _channel_of(
        self, sender: User, from_address: str, known: CheckedFrom | None, pool: PoolNow
    ) -> Channel:
        """The channel for a From the sender may use."""
        channel = self.explain(sender, from_address, known=known, pool=pool).channel
        if channel is None:
            raise Forbidden(
                f"no channel may send as {from_address}: connect a channel for it, "
                "or ask the operator to configure the shared pool"
            )
        if not may_send_as(channel, from_address):  # routing never picks one; belt and braces
            raise Forbidden(f"{channel.name} may not send as {from_address}")
        return channel

    def _message(
        self, sender: User, submission: Submission, channel: Channel, now: Instant
    ) -> NewMessage:
        return NewMessage(
            id=make_id("msg", now, os.urandom(10)),
            organization_id=sender.organization_id,
            user_id=sender.id,
            channel_id=channel.id,
            envelope=submission.composed.envelope,
            content=submission.composed.content,
            state=State.QUEUED if channel.state is ChannelState.ACTIVE else State.HELD,
            created_at=now,
            expires_at=now + channel.retry.give_up_after,
            idempotency_key=submission.idempotency_key,
            request_hash=submission.request_hash,
        )


@dataclass(frozen=True)
class EachPlan:
    """What `Submitter.plan_each` worked out: per item its refusal, or None where it is to be
    committed (`planned`, in order), and the forecasts."""

    results: list[Receipt | Exception | None]
    planned: list[tuple[NewMessage, Channel]]
    forecasts: Forecasts


def _holds(checked_from: CheckedFrom | None, sender: User, from_address: str) -> bool:
    """Whether `checked_from` is the read of this sender's right to this From."""
    return (
        checked_from is not None
        and checked_from.user == sender
        and checked_from.address == from_address.lower()
    )


def request_hash(*parts: bytes) -> str:
    """A digest of a request body, to tell a retried request from a different one."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()
