"""Tenancy use cases: organizations, teams, users, domains, identities, API tokens, bootstrap.

Tokens and one-time passwords are shown once; the store keeps only their hashes.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from mailvia.domain.channel import Channel, shared_refusal
from mailvia.domain.clock import Instant
from mailvia.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
)
from mailvia.domain.ids import make_id
from mailvia.domain.tenancy import Fallback, Organization, Role, Team, User, domain_of
from mailvia.outbox.compose import check_address, check_login
from mailvia.outbox.ports import Store

TOKEN_PREFIX = "mv_"


class _Unchanged(Enum):
    UNCHANGED = "unchanged"


UNCHANGED = _Unchanged.UNCHANGED  # leave the organization's default channel as it is
# A new default channel: a channel's name or id, None (no default) or UNCHANGED.
DefaultChoice = str | None | Literal[_Unchanged.UNCHANGED]


def hash_token(token: str) -> str:
    """Tokens carry 256 bits of randomness, so a plain SHA-256 is the right hash."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_password() -> str:
    return secrets.token_urlsafe(12)


@dataclass(frozen=True)
class Bootstrap:
    """What an empty database gets on first start; the secrets are shown once."""

    organization: Organization
    admin: User
    password: str
    token: str


class Tenancy:
    """Operator and admin actions on tenants."""

    def __init__(self, store: Store, *, hash_password: Callable[[str], str]) -> None:
        self.store = store
        self.hash_password = hash_password

    def organization(self, name: str) -> Organization:
        org = self.store.find_organization(name)
        if org is None:
            raise NotFound(f"no organization named {name!r}")
        return org

    def user(self, email: str) -> User:
        user = self.store.find_user(email)
        if user is None:
            raise NotFound(f"no user {email}")
        return user

    def create_org(self, name: str, now: Instant) -> Organization:
        if not name.strip() or any(c in name for c in "\r\n\0"):
            raise InvalidInput("an organization needs a name on one line")
        return self.store.create_organization(make_id("org", now, os.urandom(10)), name, now)

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
        channel: Channel | None = self.store.find_channel(org.id, ref)
        if channel is None:
            try:
                channel = self.store.get_channel(ref)
            except NotFound:
                channel = None
        if channel is None or channel.organization_id != org.id:
            raise NotFound(f"no channel {ref!r} in {org.name}")
        refusal = shared_refusal(channel)
        if refusal is not None:
            raise InvalidInput(refusal)
        return channel.id

    def create_team(self, name: str, org_name: str, now: Instant) -> Team:
        org = self.organization(org_name)
        return self.store.create_team(make_id("team", now, os.urandom(10)), org.id, name, now)

    def team(self, org_id: str, name: str) -> Team:
        team = self.store.find_team(org_id, name)
        if team is None:
            raise NotFound(f"no team named {name!r} in this organization")
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
        if self.store.domain_organization(domain_of(email)) == org.id:
            self.store.grant_identity(user.id, email, now)
        return user, password

    def add_domain(self, org_name: str, domain: str, now: Instant) -> None:
        """Assign a sending domain to one organization (the operator's act)."""
        domain = domain.strip().lower().lstrip("@")
        check_address(f"postmaster@{domain}", "domain")
        org = self.organization(org_name)
        owner = self.store.domain_organization(domain)
        if owner is not None and owner != org.id:
            raise Conflict(f"{domain} is assigned to another organization")
        self.store.add_domain(org.id, domain, now)

    def grant(self, email: str, identity: str, now: Instant) -> str:
        """Let a user send From an address, or from a whole domain (`@domain`)."""
        user = self.user(email)
        identity = identity.strip().lower()
        domain = identity[1:] if identity.startswith("@") else domain_of(identity)
        check_address(f"postmaster@{domain}" if identity.startswith("@") else identity)
        if self.store.domain_organization(domain) != user.organization_id:
            raise InvalidInput(
                f"{domain} is not assigned to the user's organization "
                "(the operator assigns it with: mailvia admin add-domain ORG DOMAIN)"
            )
        self.store.grant_identity(user.id, identity, now)
        return identity

    def create_token(self, email: str, name: str, now: Instant) -> str:
        user = self.user(email)
        token = new_token()
        self.store.add_token(
            make_id("tok", now, os.urandom(10)), user.id, hash_token(token), name, now
        )
        return token

    def authenticate(self, token: str) -> User:
        user = self.store.user_for_token(hash_token(token)) if token else None
        if user is None:
            raise Unauthenticated("unknown or revoked API token")
        return user

    def sender_for(self, organization_id: str, address: str) -> User:
        """The user of this organization who may send as `address` (one holding the address
        itself before one holding its domain), for mail that comes without a login (trusted
        networks). Raises Forbidden when no user of the organization has such an identity,
        InvalidAddress for something that is not an address."""
        if self.store.domain_organization(domain_of(address)) == organization_id:
            senders = self.store.senders_for(organization_id, address)
            if senders:
                return senders[0]
        raise Forbidden(f"{address} is not a sender identity of this network's organization")

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
        token = self.create_token(admin.email, "bootstrap", now)
        return Bootstrap(org, admin, password, token)
