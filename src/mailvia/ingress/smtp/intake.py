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
from mailvia.outbox.senders import CheckedFrom
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
        return inspect_raw(
            content, envelope=envelope, max_size=self.services.max_message_size, crlf_only=True
        )

    def commit(self, group: list[Arrived]) -> list[Receipt | BaseException]:
        """Each message's receipt or refusal, in order: `plan`, then `write`."""
        return self.write(self.plan(group))

    def plan(self, group: list[Arrived]) -> EachPlan:
        """The group's look-ups: the submit use case's `plan_each`, as the API's batch uses
        it. Each distinct From of the group is read once with what its route needs, in one
        statement (on PostgreSQL one round trip, without BEGIN and COMMIT): a trusted
        network's by `Tenancy.trusted_from` (its user, the organization and its channels), a
        logged-in user's by `Tenancy.user_from` (the user's right to it, the organization and
        its channels), each a `CheckedFrom`, so neither the sender's right nor the route is
        read again. No forecast is read: the 250 tells neither when the message leaves nor
        what is ahead."""
        reads: Remembered[tuple[str, str, str], CheckedFrom] = Remembered()
        prepared = [self._prepare(item, reads) for item in group]
        return self.services.submitter.plan_each(prepared, now=self.clock(), forecast=False)

    def write(self, plan: EachPlan) -> list[Receipt | BaseException]:
        """Commit what `plan` accepted: each message's receipt or refusal, in order."""
        return [*self.services.submitter.commit_each(plan)]

    def _prepare(
        self, item: Arrived, reads: Remembered[tuple[str, str, str], CheckedFrom]
    ) -> tuple[User, Submission] | Exception:
        found = self._from(item, reads)
        if isinstance(found, Exception):
            return found
        return found.user, Submission(item.composed, checked_from=found)

    def _from(
        self, item: Arrived, reads: Remembered[tuple[str, str, str], CheckedFrom]
    ) -> CheckedFrom | Exception:
        """This message's read of its From (once per group and sender): its user, or the
        refusal of its From (the same Forbidden as every intake's)."""
        address, tenancy = item.composed.from_address, self.services.tenancy
        user, organization_id = item.user, item.organization_id
        if user is not None:
            return reads.get(
                ("user", user.id, address),  # as given: a refusal quotes it so
                lambda: tenancy.user_from(user, address),
            )
        if organization_id is None:
            return Forbidden("authentication required")
        return reads.get(
            ("network", organization_id, address.lower()),
            lambda: tenancy.trusted_from(organization_id, address),
        )
