"""A sender's right to a From (or Sender) address: its domain is its organization's, and
one of its sender identities covers it (the checks `Submitter` runs before it routes); and
`TrustedFrom`, what a trusted network's From needs read at once.

Side effects: none (reads through `owner` and `identities`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from mailvia.domain.channel import Channel
from mailvia.domain.errors import Forbidden
from mailvia.domain.tenancy import Organization, User, domain_of, identity_covers
from mailvia.outbox.remembered import Remembered


@dataclass(frozen=True)
class TrustedFrom:
    """What mail From `address` without a login, from a trusted network of `organization`,
    needs, read together (one statement, one snapshot): `user`, its trusted sender (the
    organization's user who may send as the address: the address's domain is the
    organization's and the user holds the address, else its `@domain`; by email among
    equals), None when nobody may; and the organization with its channels, by name: what the
    route is worked out from."""

    address: str  # lower-cased
    user: User | None
    organization: Organization
    channels: tuple[Channel, ...]


def check_sender(
    sender: User,
    from_address: str,
    owner: Callable[[str], str | None],
    identities: Callable[[str], list[str]],
) -> None:
    """Raise Forbidden unless `sender` may send From this address: `owner` gives a domain's
    organization, `identities` a user's sender identities."""
    domain = domain_of(from_address)
    if owner(domain) != sender.organization_id:
        raise Forbidden(f"{from_address}: the domain {domain} is not assigned to your organization")
    if not any(identity_covers(i, from_address) for i in identities(sender.id)):
        raise Forbidden(f"{from_address} is not one of your sender identities")


def nobody_sends_as(address: str) -> Forbidden:
    """The refusal of a trusted network's From that no user of its organization may use."""
    return Forbidden(f"{address} is not a sender identity of this network's organization")


def checked_pair(sender: User, address: str) -> tuple[str, str]:
    """The key of a (sender, address) check: the user id and the lower-cased address (a
    `checked` pair of `Submitter.plan_each`)."""
    return (sender.id, address.lower())


def sender_checks(
    owner: Callable[[str], str | None], identities: Callable[[str], list[str]]
) -> Callable[[User, str], None]:
    """`check_sender`, each (sender, address) worked out once, and each domain's owner and
    each sender's identities read once: for one request's messages."""
    found: Remembered[tuple[str, str], None] = Remembered()
    owner_of, identities_of = cache(owner), cache(identities)  # this request's: read once

    def check(sender: User, from_address: str) -> None:
        outcome = found.get(
            checked_pair(sender, from_address),
            lambda: check_sender(sender, from_address, owner_of, identities_of),
        )
        if isinstance(outcome, Exception):
            raise outcome

    return check
