"""What the submission port does with a message once DATA is over: check the client's bytes
(`compose`, on the event loop), then find its sender and submit it with the messages that
arrived at the same time (a group commit in two steps, `plan` and `write`, each in a worker
thread, see outbox/group_commit.py; the store is synchronous)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailvia.domain.errors import Forbidden, InvalidInput
from mailvia.domain.message import Envelope
from mailvia.domain.tenancy import User
from mailvia.outbox.compose import Composed, has_bare_line_ends, inspect_raw
from mailvia.outbox.receipts import Receipt
from mailvia.outbox.remembered import Remembered
from mailvia.outbox.senders import TrustedFrom
from mailvia.outbox.services import Services
from mailvia.outbox.submit import EachPlan, Submission


def refuse_bare_line_ends(content: bytes) -> None:
    """Refuse a bare LF or CR: either is how SMTP smuggling hides a second message."""
    if has_bare_line_ends(content):
        raise InvalidInput("bare LF or CR in the message: every line must end in CRLF")


@dataclass(frozen=True)
class Arrived:
    """One message the client sent, already checked (`Intake.compose`): the logged-in user,
    or else the organization of the trusted network it came from."""

    composed: Composed
    user: User | None
    organization_id: str | None


class Intake:
    """`commit(group)`: each message checked on its own, the good ones committed together."""

    def __init__(self, services: Services, clock: Callable[[], float]) -> None:
        self.services = services
        self.clock = clock

    def compose(self, content: bytes, envelope: Envelope) -> Composed:
        """Check the client's bytes (no I/O, on the event loop: it keeps this work out of the
        one-at-a-time commits). Raises InvalidInput and its kinds."""
        refuse_bare_line_ends(content)
        return inspect_raw(content, envelope=envelope, max_size=self.services.max_message_size)

    def commit(self, group: list[Arrived]) -> list[Receipt | BaseException]:
        """Each message's receipt or refusal, in order: `plan`, then `write`."""
        return self.write(self.plan(group))

    def plan(self, group: list[Arrived]) -> EachPlan:
        """The group's look-ups: the submit use case's `plan_each`, as the API's batch uses
        it. A trusted network's From is read once per group with what its route needs
        (`Tenancy.trusted_from`: its user, the organization and its channels in one
        statement, on PostgreSQL one round trip without BEGIN and COMMIT), so neither the
        sender's right to it nor the route is read again; a logged-in user's checks and
        routes are read in `plan_each`'s one read transaction. No forecast is read: the 250
        tells neither when the message leaves nor what is ahead of it."""
        senders: Remembered[tuple[str, str], tuple[User, TrustedFrom]] = Remembered()
        prepared = [self._prepare(item, senders) for item in group]
        return self.services.submitter.plan_each(prepared, now=self.clock(), forecast=False)

    def write(self, plan: EachPlan) -> list[Receipt | BaseException]:
        """Commit what `plan` accepted: each message's receipt or refusal, in order."""
        return [*self.services.submitter.commit_each(plan)]

    def _prepare(
        self, item: Arrived, senders: Remembered[tuple[str, str], tuple[User, TrustedFrom]]
    ) -> tuple[User, Submission] | Exception:
        if item.user is not None:
            return item.user, Submission(item.composed)
        found = self._sender(item.organization_id, item.composed.from_address, senders)
        if isinstance(found, Exception):
            return found
        user, trusted = found
        return user, Submission(item.composed, trusted=trusted)

    def _sender(
        self,
        organization_id: str | None,
        address: str,
        senders: Remembered[tuple[str, str], tuple[User, TrustedFrom]],
    ) -> tuple[User, TrustedFrom] | Exception:
        """The trusted network's read of this From (once per group)."""
        if organization_id is None:
            return Forbidden("authentication required")
        lookup = self.services.tenancy.trusted_from
        return senders.get(
            (organization_id, address.lower()), lambda: lookup(organization_id, address)
        )
