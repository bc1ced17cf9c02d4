"""Tenancy: organizations, teams, users and their roles, sender identities, API tokens."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mailvia.domain.errors import Forbidden, InvalidAddress


class Role(StrEnum):
    MEMBER = "member"
    ADMIN = "admin"


class Fallback(StrEnum):
    """What happens to mail whose routed channel is disconnected or paused."""

    HOLD = "hold"  # keep it until the channel is back (the default: no surprise reputation)
    NEXT = "next"  # use the next channel that may send as that From


@dataclass(frozen=True)
class Organization:
    id: str
    name: str
    default_channel_id: str | None = None
    fallback: Fallback = Fallback.HOLD


@dataclass(frozen=True)
class Team:
    id: str
    organization_id: str
    name: str


@dataclass(frozen=True)
class User:
    id: str
    organization_id: str
    team_id: str
    email: str
    role: Role
    must_change_password: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def require_admin(user: User, what: str) -> None:
    """Raise Forbidden unless the user is an admin of their organization (`what`: what only
    admins may do, for the message)."""
    if not user.is_admin:
        raise Forbidden(f"only admins may {what}")


def reserved_organization(name: str) -> bool:
    """Names starting with `_` belong to the platform (the shared pool's `_platform`), not to a
    tenant."""
    return name.startswith("_")


def may_add_domains(user: User, organizations: int) -> bool:
    """Whether this user may assign sending domains from the pages: an admin, while the install
    serves one organization (`organizations`: how many tenants it has). A fresh install's
    bootstrap admin is its operator too; once the operator has made a second organization,
    only the operator assigns domains (`mailvia admin add-domain`), so that no tenant can
    claim a domain another one sends from."""
    return user.is_admin and organizations == 1


def domain_of(address: str) -> str:
    """The domain part of an address, lower-cased."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidAddress(f"{address!r} is not an email address")
    return domain.lower()


def identity_covers(identity: str, address: str) -> bool:
    """An identity is an address (`jane@acme.test`) or a whole domain (`@acme.test`)."""
    identity, address = identity.lower(), address.lower()
    if identity.startswith("@"):
        return address.rpartition("@")[2] == identity[1:]
    return identity == address


def sendable_addresses(email: str, identities: list[str]) -> list[str]:
    """The addresses a user with this login email and these identities may send From, in the
    order they were granted (for `@domain` identities: their own local part at that domain)."""
    local = email.rpartition("@")[0]
    seen: list[str] = []
    for identity in identities:
        address = f"{local}@{identity[1:]}" if identity.startswith("@") else identity
        if address not in seen:
            seen.append(address)
    return seen
