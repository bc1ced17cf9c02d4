"""Tenancy use cases: organizations (their name and default channel), teams, users, domains
(assigned by the operator, or from the pages while the install has one organization), the
CLI's operator, bootstrap; sender identities and rights in outbox/sender_rights.py.

One-time passwords (and bootstrap's token) are shown once; the store keeps only their hashes.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Literal, Protocol

from mailvia.domain.channel import Channel, shared_refusal
from mailvia.domain.clock import Instant
from mailvia.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, not_found
from mailvia.domain.ids import make_id
from mailvia.domain.tenancy import (
    Fallback,
    Organization,
    Role,
    Team,
    User,
    domain_of,
    may_add_domains,
    require_admin,
    reserved_organization,
)
from mailvia.outbox.addresses import check_domain, check_login
from mailvia.outbox.channels import channel_in
from mailvia.outbox.sender_rights import SenderRights, SenderRightsStore
from mailvia.outbox.senders import domain_is_theirs
from mailvia.outbox.tokens import ApiTokens


class _Unchanged(Enum):
    UNCHANGED = "unchanged"


UNCHANGED = _Unchanged.UNCHANGED  # leave the organization's default channel as it is
# A new default channel: a channel's name or id, None (no default) or UNCHANGED.
DefaultChoice = str | None | Literal[_Unchanged.UNCHANGED]


class TenancyStore(SenderRightsStore, Protocol):
    """What tenancy needs from the store; each method is one transaction."""

    def create_organization(self, org_id: str, name: str, now: Instant) -> Organization: ...
    def get_organization(self, org_id: str) -> Organization: ...
    def find_organization(self, name: str) -> Organization | None: ...
    def organization_names(self) -> list[str]: ...
    def rename_organization(self, org_id: str, name: str) -> Organization: ...
    def update_organization(
        self, org_id: str, *, default_channel_id: str | None, fallback: Fallback
    ) -> Organization: ...
    def create_team(self, team_id: str, org_id: str, name: str, now: Instant) -> Team: ...
    def find_team(self, org_id: str, name: str) -> Team | None: ...
    def list_teams(self, org_id: str) -> list[Team]: ...
    def create_user(self, user: User, *, password_hash: str | None, now: Instant) -> User: ...
    def find_user(self, email: str) -> User | None: ...
    def get_user(self, user_id: str) -> User: ...
    def list_users(self, org_id: str) -> list[User]: ...
    def count_users(self) -> int: ...
    def add_domain(self, org_id: str, domain: str, now: Instant) -> None: ...
    def list_domains(self, org_id: str) -> list[str]: ...
    def find_channel(self, org_id: str, name: str) -> Channel | None: ...
    def get_channel(self, channel_id: str) -> Channel: ...
    def list_channels(self, org_id: str | None = None) -> list[Channel]: ...


def new_password() -> str:
    return secrets.token_urlsafe(12)


@dataclass(frozen=True)
class Member:
    """A user of an organization as its admins see them: their team's name and identities."""

    user: User
    team: str
    identities: list[str]


@dataclass(frozen=True)
class Bootstrap:
    """What an empty database gets on first start; the secrets are shown once."""

    organization: Organization
    admin: User
    password: str
    token: str


class Tenancy(SenderRights):
    """Operator and admin actions on tenants; who may send as what: `SenderRights`."""

    store: TenancyStore

    def __init__(
        self, store: TenancyStore, *, hash_password: Callable[[str], str], tokens: ApiTokens
    ) -> None:
        self.store = store
        self.hash_password = hash_password
        self.tokens = tokens  # bootstrap's admin gets one

    def organization(self, name: str) -> Organization:
        org = self.store.find_organization(name)
        if org is None:
            names = ", ".join(sorted(self.store.organization_names()))
            there = f"the organizations: {names}" if names else "there are no organizations"
            raise NotFound(f"no organization named {name!r}; {there}")
        return org

    def user(self, email: str) -> User:
        user = self.store.find_user(email)
        if user is None:
            raise self._no_user(email)
        return user

    def _no_user(self, email: str) -> NotFound:
        """No such user in any organization: the users of the organization that the address's
        domain belongs to, else the organizations (the operator sees everything)."""
        org_id = self.store.domain_organization(email.rpartition("@")[2].lower())
        if org_id is None:
            names = ", ".join(sorted(self.store.organization_names()))
            return NotFound(f"no user {email!r} in any organization (the organizations: {names})")
        org = self.store.get_organization(org_id)
        users = [u.email for u in self.store.list_users(org_id)]
        return not_found("user", email, f"organization {org.name}", users, "users")

    def member(self, actor: User, ref: str) -> User:
        """A user of the actor's organization, by login email or id; NotFound for anyone
        else (never saying whether they exist)."""
        found: User | None
        if "@" in ref:
            found = self.store.find_user(ref)
        else:
            try:
                found = self.store.get_user(ref)
            except NotFound:
                found = None
        if found is None or found.organization_id != actor.organization_id:
            org = self.store.get_organization(actor.organization_id)
            if not actor.is_admin:  # a member is not shown the organization's users
                raise NotFound(f"no user {ref!r} in organization {org.name}")
            users = [u.email for u in self.store.list_users(actor.organization_id)]
            raise not_found("user", ref, f"organization {org.name}", users, "users")
        return found

    def members(self, actor: User) -> list[Member]:
        """Every user of the actor's organization with their team and identities."""
        teams = {t.id: t.name for t in self.teams(actor)}
        return [
            Member(u, teams.get(u.team_id, ""), self.store.identities(u.id))
            for u in self.store.list_users(actor.organization_id)
        ]

    def organization_of(self, actor: User) -> Organization:
        return self.store.get_organization(actor.organization_id)

    def teams(self, actor: User) -> list[Team]:
        """The teams of the actor's organization."""
        return self.store.list_teams(actor.organization_id)

    def operator(
        self, org_name: str | None, *, user_email: str | None = None, channel: str | None = None
    ) -> User:
        """Who the CLI acts as: an admin of the organization meant (`meant`; in its team
        `default`, when it has one). Raises NotFound for an unknown organization or user,
        InvalidInput when the organization must be named."""
        org = self.meant(org_name, user_email=user_email, channel=channel)
        team = self.store.find_team(org.id, "default")
        return User("operator", org.id, team.id if team else "", "operator", Role.ADMIN)

    def meant(
        self, name: str | None, *, user_email: str | None = None, channel: str | None = None
    ) -> Organization:
        """The organization a command means when `--org` may be left out: the named one; else
        the user's (a user belongs to one); else the only one with a channel of that name;
        else the only one with a sending domain; else the only one; else `default`. Raises
        NotFound (no such organization or user), InvalidInput when several fit."""
        if name is not None:
            return self.organization(name)
        if user_email is not None:
            return self.store.get_organization(self.user(user_email).organization_id)
        orgs = [self.organization(n) for n in sorted(self.store.organization_names())]
        if channel is not None:
            having = [o for o in orgs if channel_in(self.store, o.id, channel) is not None]
            if len(having) == 1:
                return having[0]
            if having:
                names = ", ".join(o.name for o in having)
                raise InvalidInput(f"channel {channel!r} is in organizations {names}: give --org")
        sending = [o for o in orgs if self.store.list_domains(o.id)]
        if channel is not None and len(sending) > 1:
            every = [f"{c.name} ({o.name})" for o in orgs for c in self.store.list_channels(o.id)]
            raise not_found("channel", channel, "any organization", every, "channels")
        if len(sending) > 1:
            names = ", ".join(o.name for o in sending)
            raise InvalidInput(f"several organizations ({names}): give --org")
        if sending:
            return sending[0]
        return orgs[0] if len(orgs) == 1 else self.organization("default")

    def ready(self) -> None:
        """Read the store once (the health check): raises StoreUnavailable when it cannot."""
        self.store.count_users()

    def create_org(self, name: str, now: Instant) -> Organization:
        _check_name(name, "an organization")
        return self.store.create_organization(make_id("org", now, os.urandom(10)), name, now)

    def rename(self, actor: User, name: str) -> Organization:
        """Give the actor's organization another name (admins). Raises Forbidden,
        InvalidInput (empty, several lines, or a platform name starting with `_`), Conflict
        (another organization has it)."""
        require_admin(actor, "rename the organization")
        name = " ".join(name.split())
        _check_name(name, "an organization")
        if reserved_organization(name):
            raise InvalidInput("an organization's name may not start with _")
        return self.store.rename_organization(actor.organization_id, name)

    def tenants(self) -> int:
        """How many organizations the install serves (not the platform's own)."""
        return sum(not reserved_organization(n) for n in self.store.organization_names())

    def domains(self, actor: User) -> list[str]:
        """The sending domains of the actor's organization."""
        return self.store.list_domains(actor.organization_id)

    def may_add_domains(self, actor: User) -> bool:
        """Whether the actor may assign sending domains from the pages (domain/tenancy.py)."""
        return may_add_domains(actor, self.tenants())

    def add_domain_as(self, actor: User, domain: str, now: Instant) -> str:
        """Assign a sending domain to the actor's organization from the pages. Raises
        Forbidden (see `may_add_domains`), InvalidAddress, Conflict (another organization's
        domain)."""
        require_admin(actor, "add sending domains")
        if not self.may_add_domains(actor):
            raise Forbidden(
                "only the operator assigns sending domains once the install has several "
                "organizations (mailvia admin add-domain ORG DOMAIN)"
            )
        org = self.organization_of(actor)
        return self.add_domain(org.name, domain, now)

    def update_organization(
        self,
        organization_id: str,
        *,
        default_channel: DefaultChoice = UNCHANGED,
        fallback: Fallback | None = None,
    ) -> Organization:
        """Set the organization's default channel (one of its channels by name or id; None
        clears it) and its fallback policy; what is not given stays. The one place that says
        which channel may be the default. Raises NotFound (no such channel in the
        organization), InvalidInput (an address-scoped channel: it carries only its owner's
        mail)."""
        org = self.store.get_organization(organization_id)
        default_id = org.default_channel_id
        if default_channel is not UNCHANGED:
            default_id = None if default_channel is None else self._default(org, default_channel)
        return self.store.update_organization(
            org.id, default_channel_id=default_id, fallback=fallback or org.fallback
        )

    def _default(self, org: Organization, ref: str) -> str:
        channel = channel_in(self.store, org.id, ref)
        if channel is None:
            names = [c.name for c in self.store.list_channels(org.id)]
            raise not_found("channel", ref, f"organization {org.name}", names, "channels")
        refusal = shared_refusal(channel)
        if refusal is not None:
            raise InvalidInput(refusal)
        return channel.id

    def create_team(self, name: str, org_name: str, now: Instant) -> Team:
        org = self.organization(org_name)
        _check_name(name, "a team")
        return self.store.create_team(make_id("team", now, os.urandom(10)), org.id, name, now)

    def add_team(self, actor: User, name: str, now: Instant) -> Team:
        """A new team in the actor's organization (admins). Raises Forbidden, InvalidInput,
        Conflict (the organization has a team of that name)."""
        require_admin(actor, "add teams")
        return self.create_team(" ".join(name.split()), self.organization_of(actor).name, now)

    def team(self, org_id: str, name: str) -> Team:
        team = self.store.find_team(org_id, name)
        if team is None:
            org = self.store.get_organization(org_id)
            teams = [t.name for t in self.store.list_teams(org_id)]
            raise not_found("team", name, f"organization {org.name}", teams, "teams")
        return team

    def create_user(
        self, email: str, *, org_name: str, team_name: str, admin: bool, now: Instant
    ) -> tuple[User, str]:
        """Create a user with a one-time password (returned once). The login email becomes
        their first identity when its domain belongs to the organization."""
        email = check_login(email)
        org = self.organization(org_name)
        team = self.team(org.id, team_name)
        password = new_password()
        user = User(
            make_id("usr", now, os.urandom(10)),
            org.id,
            team.id,
            email,
            Role.ADMIN if admin else Role.MEMBER,
            must_change_password=True,
        )
        user = self.store.create_user(user, password_hash=self.hash_password(password), now=now)
        if domain_is_theirs(self.store.domain_organization(domain_of(email)), org.id):
            self.store.grant_identity(user.id, email, now)
        return user, password

    def add_domain(self, org_name: str, domain: str, now: Instant) -> str:
        """Assign a sending domain to one organization (the operator's act); returns it as
        stored (`check_domain`'s form: lower case, without `@`, A-labels decoded)."""
        domain = check_domain(domain)
        org = self.organization(org_name)
        owner = self.store.domain_organization(domain)
        if owner is not None and owner != org.id:
            raise Conflict(f"{domain} is assigned to another organization")
        self.store.add_domain(org.id, domain, now)
        return domain

    def bootstrap(self, now: Instant) -> Bootstrap | None:
        """On an empty database: organization and team `default`, admin `admin@localhost`."""
        if self.store.count_users() > 0:
            return None
        org = self.store.find_organization("default") or self.create_org("default", now)
        if self.store.find_team(org.id, "default") is None:
            self.store.create_team(make_id("team", now, os.urandom(10)), org.id, "default", now)
        admin, password = self.create_user(
            "admin@localhost", org_name="default", team_name="default", admin=True, now=now
        )
        token = self.tokens.create(admin.email, "bootstrap", now)
        return Bootstrap(org, admin, password, token)


def _check_name(name: str, what: str) -> None:
    if not name.strip() or any(c in name for c in "\r\n\0") or len(name) > 100:
        raise InvalidInput(f"{what} needs a name on one line, at most 100 characters")
