"""Sender rights, the part of tenancy that says who may send as which From: a user's sender
identities (granted one address, or a whole `@domain`, of the organization's domains), the
addresses they give, and the submission port's reads of a From (a trusted network's, whose
user is found by the address; a logged-in user's), judged by outbox/senders.py's rules.

Side effects: reads and writes through the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from mailvia.domain.clock import Instant
from mailvia.domain.errors import InvalidInput
from mailvia.domain.tenancy import User, domain_of, sendable_addresses
from mailvia.outbox.addresses import check_identity
from mailvia.outbox.senders import (
    CheckedFrom,
    FromRead,
    domain_is_theirs,
    nobody_sends_as,
    trusted_of,
    trusted_sender,
    user_of_read,
)


class SenderRightsStore(Protocol):
    """What sender rights need from the store; each method is one transaction."""

    def domain_organization(self, domain: str) -> str | None: ...
    def grant_identity(self, user_id: str, identity: str, now: Instant) -> None: ...
    def identities(self, user_id: str) -> list[str]: ...
    def senders_for(self, org_id: str, address: str) -> list[User]: ...
    def trusted_from(self, org_id: str, address: str) -> FromRead:
        """The address's domain's owner, the organization's first user holding the address
        (else its @domain), the organization and its channels: one statement."""
        ...

    def user_from(self, org_id: str, user_id: str, address: str) -> FromRead:
        """The address's domain's owner, the user's identities, the organization and its
        channels: one statement."""
        ...


class SenderRights:
    """Tenancy's sender rights (a part of `Tenancy`, which gives `store` and `user`)."""

    store: SenderRightsStore
    user: Callable[[str], User]  # a user by login email; raises NotFound

    def identities(self, user: User) -> list[str]:
        """The user's sender identities (`jane@acme.test`, `@acme.test`), as granted."""
        return self.store.identities(user.id)

    def addresses(self, user: User) -> list[str]:
        """The addresses the user may send From (an `@domain` identity: their own local part
        at that domain), in the order they were granted."""
        return sendable_addresses(user.email, self.store.identities(user.id))

    def grant(self, email: str, identity: str, now: Instant) -> str:
        """Let a user send From an address, or from a whole domain (`@domain`)."""
        user = self.user(email)
        identity = check_identity(identity)  # as addresses are compared (A-labels decoded)
        domain = identity.rpartition("@")[2]
        if not domain_is_theirs(self.store.domain_organization(domain), user.organization_id):
            raise InvalidInput(
                f"{domain} is not assigned to the user's organization "
                "(the operator assigns it with: mailvia admin add-domain ORG DOMAIN)"
            )
        self.store.grant_identity(user.id, identity, now)
        return identity

    def sender_for(self, organization_id: str, address: str) -> User:
        """The user of this organization who may send as `address` (one holding the address
        itself before one holding its domain), for mail that comes without a login (trusted
        networks): the submission port's MAIL, two short reads (no organization or channels
        joined). Raises Forbidden when no user of the organization has such an identity,
        InvalidAddress for something that is not an address."""
        owner = self.store.domain_organization(domain_of(address))
        theirs = domain_is_theirs(owner, organization_id)  # else no holder is read
        holders = self.store.senders_for(organization_id, address) if theirs else []
        user = trusted_sender(organization_id, owner, holders)
        if user is None:
            raise nobody_sends_as(address)
        return user

    def trusted_from(self, organization_id: str, address: str) -> CheckedFrom:
        """`sender_for`'s user (the same rule, `trusted_sender`) with what the route needs
        (the organization and its channels) read with it, in one statement: for the
        submission port's mail from trusted networks. Raises Forbidden (as `sender_for`),
        InvalidAddress, NotFound (no such organization)."""
        found = trusted_of(self.store.trusted_from(organization_id, address), organization_id)
        if found is None:
            raise nobody_sends_as(address)
        return found

    def user_from(self, user: User, address: str) -> CheckedFrom:
        """A logged-in user's right to send as `address` (`check_sender`: the same rule and
        answers as the API's) with the organization and its channels read with it, in one
        statement: for the submission port's logged-in mail. Raises Forbidden,
        InvalidAddress, NotFound (no such organization)."""
        found = self.store.user_from(user.organization_id, user.id, address)
        return user_of_read(user, found, address)
