"""A test message is a message: the same sender check, the channel's budgets, and a record.

"Test connection" with an address sends one small message through the channel at once. It is
From the tester's own address that the channel may carry (an address-scoped channel's address,
or the member's own address at one of a team channel's domains) and passes the sender check
every intake passes (`Submitter.check_sender`: the actor must hold that identity) and the
channel's transport check (`check_carried`). It takes the channel's budgets like any message:
when they allow none now it is refused (RateLimited, with the time one fits), never queued, since
a test is about now. It is stored (`test`: true) already claimed by the tester, sent on the
probe's one-off connection, and settled with its one attempt like any: delivered, or bounced
with the reply that stopped it (a test message is never retried later).

Side effects: takes and finishes a budget transaction; stores the message, its attempt and
its event.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from mailvia.domain.channel import Budget, Channel, Kind, Scope, may_send_as
from mailvia.domain.clock import Instant, to_iso
from mailvia.domain.delivery import TransactionResult, settle
from mailvia.domain.errors import Forbidden, RateLimited
from mailvia.domain.ids import make_id
from mailvia.domain.message import State, message_state
from mailvia.domain.replies import Stage, network_failure
from mailvia.domain.tenancy import User, domain_of
from mailvia.outbox.compose import Composed, Draft, compose
from mailvia.outbox.ports import AttemptRecord, Claim, Ledger, NewMessage
from mailvia.outbox.run_context import new_event

SUBJECT = "mailvia test message"
TEXT = "This is a test message from mailvia: the channel works.\n"
MAX_SIZE = 64 * 1024
LEASE = 120.0  # seconds: longer than a probe's budget; then a dispatcher may send it


class TestMessageStore(Protocol):
    """What recording a test message needs from the store."""

    def budget_ledger(self, channel_id: str, budgets: Sequence[Budget]) -> Ledger: ...
    def add_leased(self, msg: NewMessage, *, worker: str, lease_until: Instant) -> Claim: ...
    def record_attempts(self, records: Sequence[AttemptRecord]) -> None: ...


class SenderChecks(Protocol):
    """The submit use case's checks, as every intake runs them (outbox/submit.py)."""

    def check_sender(self, sender: User, from_address: str) -> None: ...
    def check_carried(self, channel: Channel, composed: Composed) -> None: ...


@dataclass(frozen=True)
class Prepared:
    """A test message stored and claimed, with the budget transaction it took."""

    composed: Composed
    claim: Claim
    taken: int | None  # the ledger id (None: the channel has no budgets)


class TestMessages:
    """Prepares, and after the probe records, the test messages of "Test connection"."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        store: TestMessageStore,
        checks: SenderChecks,
        *,
        clock: Callable[[], Instant],
        worker: str | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.checks = checks
        self.clock = clock
        self.worker = worker or f"test:{os.getpid()}"
        self.rand = rand

    def prepare(self, actor: User, channel: Channel, to: str) -> Prepared:
        """Check, take the budget and store the message. Raises Forbidden (not the actor's
        address, or one the channel cannot carry), InvalidInput (a bad `to`), CannotCarry,
        RateLimited (the channel's budgets allow no message now)."""
        now = self.clock()
        sender = sender_for_test(actor, channel)
        self.checks.check_sender(actor, sender)
        if not may_send_as(channel, sender):
            raise Forbidden(f"{channel.name} may not send as {sender}")
        draft = Draft(from_=sender, to=(to,), subject=SUBJECT, text=TEXT)
        composed = compose(draft, now=now, max_size=MAX_SIZE)  # checks `to`
        self.checks.check_carried(channel, composed)
        taken = self._take_budget(channel, now)
        message = NewMessage(
            id=make_id("msg", now, os.urandom(10)),
            organization_id=channel.organization_id,
            user_id=actor.id,
            channel_id=channel.id,
            envelope=composed.envelope,
            content=composed.content,
            state=State.SENDING,
            created_at=now,
            expires_at=now + channel.retry.give_up_after,
            test=True,
        )
        claim = self.store.add_leased(message, worker=self.worker, lease_until=now + LEASE)
        return Prepared(composed, claim, taken)

    def _take_budget(self, channel: Channel, now: Instant) -> int | None:
        if not channel.budgets:
            return None
        taken, wait = self.store.budget_ledger(channel.id, channel.budgets).take(now, 1)
        if taken is None:
            at = wait if wait is not None else now + 60
            limits = ", ".join(str(b) for b in channel.budgets)
            raise RateLimited(
                f"{channel.name}'s budgets ({limits}) allow no message now: a test message "
                f"takes them like any message; test again at {to_iso(at)}",
                retry_after=max(at - now, 1.0),
            )
        return taken

    def record(
        self, prepared: Prepared, channel: Channel, delivery: TransactionResult | None
    ) -> None:
        """Settle the message with its one attempt: delivered, or bounced with the reply."""
        now = self.clock()
        if prepared.taken is not None:
            ledger = self.store.budget_ledger(channel.id, channel.budgets)
            ledger.finish([(prepared.taken, now)])
        claim = prepared.claim
        result = delivery or TransactionResult(Stage.CONNECT, network_failure("not tried"))
        settled = settle(
            result,
            pending=claim.pending,
            failures=0,
            policy=channel.retry,
            now=now,
            expires_at=claim.expires_at,
            rand=self.rand(),
        )
        recipients = tuple(
            r if r.state is State.DELIVERED else replace(r, state=State.BOUNCED)
            for r in settled.recipients
        )
        state = message_state(r.state for r in recipients)
        data: dict[str, object] = {
            "message_id": claim.message_id,
            "state": str(state),
            "channel_id": channel.id,
            "test": True,
            "recipients": [
                {"address": r.address, "state": str(r.state), "reply": str(r.reply)}
                for r in recipients
            ],
        }
        event = new_event(claim.organization_id, f"message.{state}", now, data)
        record = AttemptRecord(
            claim=claim,
            worker=self.worker,
            at=now,
            recipients=recipients,
            message_state=state,
            next_attempt_at=None,
            failures=0,
            possible_duplicate=settled.possible_duplicate,
            events=(event,),
        )
        self.store.record_attempts([record])


def sender_for_test(actor: User, channel: Channel) -> str:
    """The From of a test message: the address-scoped channel's address, else the actor's own
    address when the channel carries it (a team channel's domain, the shared pool). Raises
    Forbidden for a team channel whose domains do not cover the actor's address."""
    if channel.scope is Scope.ADDRESS and channel.address:
        return channel.address
    if channel.kind is Kind.POOL or domain_of(actor.email) in {d.lower() for d in channel.domains}:
        return actor.email
    domains = ", ".join(channel.domains) or "none"
    raise Forbidden(
        f"a test message is sent From your own address, and {channel.name} does not carry "
        f"{actor.email} (its domains: {domains})"
    )


__all__ = ["Prepared", "SenderChecks", "TestMessageStore", "TestMessages", "sender_for_test"]
