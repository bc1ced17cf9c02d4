"""Getting an organization going from the pages: the first run of a fresh install (its name,
the admin's real address, the first sending domains) and the checklist that ticks itself off
from what is really there (a domain, a channel, a team, a delivered message).

Side effects: the first run renames the organization, assigns its domains, changes the
admin's sign-in email (from `admin@localhost`) and grants it as their first identity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from mailvia.domain.channel import Channel, Kind
from mailvia.domain.clock import Instant
from mailvia.domain.errors import Conflict, InvalidInput
from mailvia.domain.message import State
from mailvia.domain.tenancy import User, domain_of, require_admin
from mailvia.outbox.addresses import check_domain, check_login
from mailvia.outbox.records import MessageFilter, MessageView
from mailvia.outbox.tenancy import Tenancy


class SetupStore(Protocol):
    """What the first run and the checklist need from the store."""

    def find_user(self, email: str) -> User | None: ...
    def change_email(self, user_id: str, email: str) -> User: ...
    def list_users(self, org_id: str) -> list[User]: ...
    def list_channels(self, org_id: str | None = None) -> list[Channel]: ...
    def list_messages(self, query: MessageFilter) -> tuple[list[MessageView], str | None]: ...


class Task(StrEnum):
    """The steps of the checklist, in the order the page shows them."""

    DOMAIN = "domain"  # the organization has a sending domain
    CHANNEL = "channel"  # a team channel or someone's own mailbox is connected
    TEAM = "team"  # someone besides the first admin was invited
    TEST = "test"  # a message (a test message counts) was delivered


@dataclass(frozen=True)
class Checklist:
    """Which tasks are done, read from the organization's real state."""

    done: frozenset[Task]

    @property
    def complete(self) -> bool:
        return self.done >= set(Task)

    def __contains__(self, task: object) -> bool:
        return task in self.done


@dataclass(frozen=True)
class FirstRun:
    """What the first-run form asks: the organization's name (empty: keep it), the admin's
    real address, and the sending domains (empty: the address's own domain)."""

    organization: str
    email: str
    domains: str


_SEPARATORS = re.compile(r"[\s,;]+")


class Setup:
    """The first run and the checklist, for an organization's admins."""

    def __init__(self, store: SetupStore, tenancy: Tenancy) -> None:
        self._store = store
        self._tenancy = tenancy

    def first_run_open(self, actor: User) -> bool:
        """Whether the actor still has the first run to do: an admin who may assign domains
        from the pages (domain/tenancy.may_add_domains), of an organization with none yet."""
        return self._tenancy.may_add_domains(actor) and not self._tenancy.domains(actor)

    def first_run(self, actor: User, answers: FirstRun, now: Instant) -> User:
        """Name the organization, assign its domains, and make the actor's real address their
        sign-in and first identity. Everything is checked before anything changes. Raises
        Forbidden (not an admin), Conflict (done already; an address, domain or name someone
        else has), InvalidInput / InvalidAddress (what to fix)."""
        require_admin(actor, "set the organization up")
        if not self.first_run_open(actor):
            raise Conflict("This organization is set up already: add domains on its page.")
        email = check_login(answers.email)
        if email.endswith("@localhost"):
            raise InvalidInput("Give your real email address: the one you send from.")
        domains = self._domains(answers.domains, email)
        taken = self._store.find_user(email)
        if taken is not None and taken.id != actor.id:
            raise Conflict(f"Someone else already signs in to mailvia as {email}.")
        if answers.organization.strip():
            self._tenancy.rename(actor, answers.organization)
        for domain in domains:
            self._tenancy.add_domain_as(actor, domain, now)
        user = self._store.change_email(actor.id, email)
        self._tenancy.grant(email, email, now)
        return user

    def _domains(self, raw: str, email: str) -> list[str]:
        # each in the form addresses hold it (`check_domain`: A-labels decoded), as the email's
        named = [check_domain(d) for d in _SEPARATORS.split(raw) if d.strip("@ ")]
        domains = list(dict.fromkeys(named)) or [domain_of(email)]
        if domain_of(email) not in domains:
            raise InvalidInput(
                f"Your address {email} is not at one of the sending domains "
                f"({', '.join(domains)}): add {domain_of(email)}, or give an address at one "
                "of them."
            )
        return domains

    def checklist(self, actor: User) -> Checklist:
        """The organization's checklist as things are now (admins). Raises Forbidden."""
        require_admin(actor, "see the organization's checklist")
        org = actor.organization_id
        done: set[Task] = set()
        if self._tenancy.domains(actor):
            done.add(Task.DOMAIN)
        if any(c.kind is Kind.SMTP for c in self._store.list_channels(org)):
            done.add(Task.CHANNEL)
        if len(self._store.list_users(org)) > 1:
            done.add(Task.TEAM)
        delivered = MessageFilter(organization_id=org, state=State.DELIVERED, limit=1)
        if self._store.list_messages(delivered)[0]:
            done.add(Task.TEST)
        return Checklist(frozenset(done))
