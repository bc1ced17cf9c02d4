"""A sender's right to a From (or Sender) address: its domain is its organization's (the
domain rule, written once: `domain_is_theirs`), and one of its sender identities covers it
(the checks `Submitter` runs before it routes); `FromRead`, a From's rights and route inputs
read in one statement, and `CheckedFrom`, what it is found to allow (a trusted network's
From: `trusted_of`; a logged-in user's: `user_of_read`); `FromChecks`, one request's checks of
its senders' addresses, each domain read once with `user_from`.

Side effects: none here; the reads are the callers' (`check_sender`'s `owner` and
`identities`, `FromChecks`'s `user_from`). A `FromChecks` keeps its reads and its answers for
the one request it serves (a later request makes its own: a right revoked since is seen).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from mailvia.domain.channel import Channel
from mailvia.domain.errors import Forbidden
from mailvia.domain.tenancy import Organization, User, domain_of, identity_covers
from mailvia.outbox.remembered import Remembered


@dataclass(frozen=True)
class FromRead:
    """A From's facts read together (one statement, one snapshot), for the rules below to
    judge: `owner`, the organization its domain is assigned to (None: nobody's); `holder`, a
    trusted network's read: the organization's first user holding the address, else its
    `@domain` (by email among equals), whoever owns the domain; `identities`, a logged-in
    user's read: that user's sender identities; and the organization with its channels, by
    name: what the route is worked out from."""

    address: str  # lower-cased
    owner: str | None
    organization: Organization
    channels: tuple[Channel, ...]
    holder: User | None = None
    identities: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckedFrom:
    """A From checked for its sender: found to be `user`'s to send as, by the trusted
    network's rule (`trusted_of`: the organization's user who may send as it) or the
    logged-in user's (`user_of_read`: that user), with the organization and its channels
    read with it: what the route is worked out from, not read again."""

    address: str  # lower-cased
    user: User
    organization: Organization
    channels: tuple[Channel, ...]


def domain_is_theirs(owner: str | None, organization_id: str) -> bool:
    """The domain rule: mail From an address needs its domain (whose organization is
    `owner`) assigned to the sender's organization. Every sender check asks it here."""
    return owner is not None and owner == organization_id


def trusted_sender(organization_id: str, owner: str | None, holders: list[User]) -> User | None:
    """Who of a trusted network's organization may send as an address, given its domain's
    `owner` and the organization's users holding it in order (`holders`): the first, when
    the domain is the organization's; None: nobody may."""
    return holders[0] if holders and domain_is_theirs(owner, organization_id) else None


def trusted_of(found: FromRead, organization_id: str) -> CheckedFrom | None:
    """What a trusted network's read allows: its user with the route's inputs; None when
    nobody may send as it."""
    holders = [found.holder] if found.holder is not None else []
    user = trusted_sender(organization_id, found.owner, holders)
    if user is None:
        return None
    return CheckedFrom(found.address, user, found.organization, found.channels)


def user_of_read(user: User, found: FromRead, from_address: str) -> CheckedFrom:
    """What a logged-in user's read of `from_address` allows: raises Forbidden
    (`check_sender`'s answers, quoting the From as sent) unless the user may send as it;
    else the user with the route's inputs."""
    check_sender(user, from_address, lambda _: found.owner, lambda _: list(found.identities))
    return CheckedFrom(found.address, user, found.organization, found.channels)


class FromChecks:
    """One request's checks of its senders' addresses (an envelope sender's, a From's, a
    Sender header's), each judged as `check_sender` judges it (its rule, its answers, the
    address quoted as sent), from `user_from` reads (`FromRead`: a domain's owner, the user's
    identities, the organization and its channels in one statement), one per sender and
    domain: an envelope sender and a From of one domain are read once, with the route's
    inputs (`checked`). Each sender and address (without case) is judged once: a batch of
    1,000 with one envelope sender judges it once, and each message gets the same answer
    (a refusal quotes the spelling judged first, as a batch's routes do)."""

    def __init__(self, read: Callable[[str, str, str], FromRead]) -> None:
        self._read = read  # (organization id, user id, address): the store's `user_from`
        self._reads: dict[tuple[str, str], FromRead] = {}
        self._judged: Remembered[tuple[str, str], CheckedFrom] = Remembered()

    def check(self, sender: User, address: str) -> None:
        """Raise Forbidden unless `sender` may send as `address` (`check_sender`'s
        answers)."""
        self.checked(sender, address)

    def checked(self, sender: User, address: str) -> CheckedFrom:
        """`address` checked for `sender` (raises Forbidden and InvalidAddress as
        `check_sender`), with the route's inputs read with it."""
        key = (sender.id, address.lower())
        return self._judged.value(key, lambda: self._judge(sender, address))

    def _judge(self, sender: User, address: str) -> CheckedFrom:
        key = (sender.id, domain_of(address))  # raises InvalidAddress as check_sender
        found = self._reads.get(key)
        if found is None:
            found = self._reads[key] = self._read(sender.organization_id, sender.id, address)
        return user_of_read(sender, replace(found, address=address.lower()), address)


def check_sender(
    sender: User,
    from_address: str,
    owner: Callable[[str], str | None],
    identities: Callable[[str], list[str]],
) -> None:
    """Raise Forbidden unless `sender` may send From this address: `owner` gives a domain's
    organization, `identities` a user's sender identities."""
    domain = domain_of(from_address)
    if not domain_is_theirs(owner(domain), sender.organization_id):
        raise Forbidden(f"{from_address}: the domain {domain} is not assigned to your organization")
    if not any(identity_covers(i, from_address) for i in identities(sender.id)):
        raise Forbidden(f"{from_address} is not one of your sender identities")


def nobody_sends_as(address: str) -> Forbidden:
    """The refusal of a trusted network's From that no user of its organization may use."""
    return Forbidden(f"{address} is not a sender identity of this network's organization")
