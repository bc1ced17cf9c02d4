"""Organizations, teams, users, sending domains, sender identities and API tokens in SQL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from mailvia.domain.clock import Instant
from mailvia.domain.errors import Conflict, NotFound
from mailvia.domain.tenancy import Fallback, Organization, Role, Team, User
from mailvia.outbox.addresses import login_key
from mailvia.outbox.records import TokenView
from mailvia.store.engine import Database
from mailvia.store.tables import api_tokens, domains, identities, organizations, teams, users

# The intake's reads, built once: each API request runs them (building a statement costs
# about as much as running it on SQLite); `sa.bindparam` takes the value at execution.
_ORGANIZATION = organizations.select().where(organizations.c.id == sa.bindparam("org_id"))
# The organization a domain is assigned to (`domain_organization`; from_reads.py's From
# reads take it as a scalar subquery).
DOMAIN_OWNER = sa.select(domains.c.organization_id).where(
    domains.c.domain == sa.bindparam("domain")
)
_IDENTITIES = (
    sa.select(identities.c.identity)
    .where(identities.c.user_id == sa.bindparam("user_id"))
    .order_by(identities.c.created_at, identities.c.identity)
)
_TOKEN_USER = (
    sa.select(users)
    .join(api_tokens, api_tokens.c.user_id == users.c.id)
    .where(api_tokens.c.token_hash == sa.bindparam("token_hash"), api_tokens.c.revoked_at.is_(None))
)


def organization_of(row: Any) -> Organization:
    return Organization(row.id, row.name, row.default_channel_id, Fallback(row.fallback))


def user_of(row: Any) -> User:
    return User(
        id=row.id,
        organization_id=row.organization_id,
        team_id=row.team_id,
        email=row.email,
        role=Role(row.role),
        must_change_password=bool(row.must_change_password),
    )


def holders_of(org_id: Any, address: Any, at_domain: Any) -> sa.Select[Any]:
    """The organization's users with an identity `address` or `at_domain` (lower-cased
    values or bind parameters): those holding the address itself first, then by email (the
    order of the sender rule, `senders_for` and `trusted_from`)."""
    return (
        sa.select(users)
        .join(identities, identities.c.user_id == users.c.id)
        .where(users.c.organization_id == org_id, identities.c.identity.in_([address, at_domain]))
        .order_by(sa.case((identities.c.identity == address, 0), else_=1), users.c.email)
    )


class TenancyStore:
    """Tenancy methods of the Store port. Names and addresses compare lower-cased."""

    _db: Database

    def create_organization(self, org_id: str, name: str, now: Instant) -> Organization:
        """Insert an organization (fallback `hold`). Raises Conflict if the name or id is taken."""
        with self._db.write(conflict=f"an organization named {name!r} already exists") as conn:
            conn.execute(
                organizations.insert().values(
                    id=org_id, name=name, fallback=Fallback.HOLD.value, created_at=now
                )
            )
        return Organization(org_id, name)

    def get_organization(self, org_id: str) -> Organization:
        """The organization. Raises NotFound."""
        with self._db.read() as conn:
            row = conn.execute(_ORGANIZATION, {"org_id": org_id}).first()
        if row is None:
            raise NotFound(f"no organization {org_id!r}")
        return organization_of(row)

    def find_organization(self, name: str) -> Organization | None:
        """The organization with this name, or None."""
        with self._db.read() as conn:
            row = conn.execute(organizations.select().where(organizations.c.name == name)).first()
        return None if row is None else organization_of(row)

    def organization_names(self) -> list[str]:
        """Every organization's name (the platform's `_platform` too), by name."""
        with self._db.read() as conn:
            rows = conn.execute(sa.select(organizations.c.name).order_by(organizations.c.name))
            return [str(name) for name in rows.scalars()]

    def rename_organization(self, org_id: str, name: str) -> Organization:
        """Give the organization another name. Raises Conflict if another has it, NotFound."""
        with self._db.write(conflict=f"an organization named {name!r} already exists") as conn:
            result = conn.execute(
                organizations.update().where(organizations.c.id == org_id).values(name=name)
            )
            if result.rowcount == 0:
                raise NotFound(f"no organization {org_id!r}")
            row = conn.execute(organizations.select().where(organizations.c.id == org_id)).one()
        return organization_of(row)

    def update_organization(
        self, org_id: str, *, default_channel_id: str | None, fallback: Fallback
    ) -> Organization:
        """Set the default channel and the fallback policy. Raises NotFound."""
        with self._db.write() as conn:
            result = conn.execute(
                organizations.update()
                .where(organizations.c.id == org_id)
                .values(default_channel_id=default_channel_id, fallback=Fallback(fallback).value)
            )
            if result.rowcount == 0:
                raise NotFound(f"no organization {org_id!r}")
            row = conn.execute(organizations.select().where(organizations.c.id == org_id)).one()
        return organization_of(row)

    def create_team(self, team_id: str, org_id: str, name: str, now: Instant) -> Team:
        """Insert a team. Raises Conflict if the organization has a team of that name, NotFound
        if the organization does not exist."""
        with self._db.write(
            conflict=f"a team named {name!r} already exists in this organization",
            missing=f"no organization {org_id!r}",
        ) as conn:
            conn.execute(
                teams.insert().values(id=team_id, organization_id=org_id, name=name, created_at=now)
            )
        return Team(team_id, org_id, name)

    def find_team(self, org_id: str, name: str) -> Team | None:
        """The organization's team with this name, or None."""
        with self._db.read() as conn:
            row = conn.execute(
                teams.select().where(teams.c.organization_id == org_id, teams.c.name == name)
            ).first()
        return None if row is None else Team(row.id, row.organization_id, row.name)

    def create_user(self, user: User, *, password_hash: str | None, now: Instant) -> User:
        """Insert a user (email lower-cased). Raises Conflict if the email is taken, NotFound if
        the organization or team does not exist."""
        email = user.email.lower()
        with self._db.write(
            conflict=f"a user with email {email!r} already exists",
            missing="no such organization or team",
        ) as conn:
            conn.execute(
                users.insert().values(
                    id=user.id,
                    organization_id=user.organization_id,
                    team_id=user.team_id,
                    email=email,
                    role=Role(user.role).value,
                    password_hash=password_hash,
                    must_change_password=user.must_change_password,
                    created_at=now,
                )
            )
        return User(
            user.id, user.organization_id, user.team_id, email, user.role, user.must_change_password
        )

    def find_user(self, email: str) -> User | None:
        """The user signing in with this email (any case, a domain in either spelling:
        `login_key`), or None."""
        with self._db.read() as conn:
            row = conn.execute(users.select().where(users.c.email == login_key(email))).first()
        return None if row is None else user_of(row)

    def list_users(self, org_id: str) -> list[User]:
        """The organization's users, by email."""
        query = users.select().where(users.c.organization_id == org_id).order_by(users.c.email)
        with self._db.read() as conn:
            return [user_of(row) for row in conn.execute(query)]

    def get_user(self, user_id: str) -> User:
        """The user. Raises NotFound."""
        with self._db.read() as conn:
            row = conn.execute(users.select().where(users.c.id == user_id)).first()
        if row is None:
            raise NotFound(f"no user {user_id!r}")
        return user_of(row)

    def change_email(self, user_id: str, email: str) -> User:
        """Give the user another login email (lower-cased). Raises Conflict if another user
        signs in with it, NotFound."""
        email = email.lower()
        with self._db.write(conflict=f"a user with email {email!r} already exists") as conn:
            result = conn.execute(users.update().where(users.c.id == user_id).values(email=email))
            if result.rowcount == 0:
                raise NotFound(f"no user {user_id!r}")
            row = conn.execute(users.select().where(users.c.id == user_id)).one()
        return user_of(row)

    def count_users(self) -> int:
        """How many users exist (zero on a fresh database)."""
        with self._db.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one())

    def password_hash(self, user_id: str) -> str | None:
        """The user's password hash (None when they have none). Raises NotFound."""
        with self._db.read() as conn:
            row = conn.execute(
                sa.select(users.c.password_hash).where(users.c.id == user_id)
            ).first()
        if row is None:
            raise NotFound(f"no user {user_id!r}")
        return row.password_hash  # type: ignore[no-any-return]

    def set_password(
        self, user_id: str, password_hash: str | None, *, must_change_password: bool
    ) -> None:
        """Replace the user's password hash and the must-change flag. Raises NotFound."""
        with self._db.write() as conn:
            result = conn.execute(
                users.update()
                .where(users.c.id == user_id)
                .values(password_hash=password_hash, must_change_password=must_change_password)
            )
            if result.rowcount == 0:
                raise NotFound(f"no user {user_id!r}")

    def add_domain(self, org_id: str, domain: str, now: Instant) -> None:
        """Assign a sending domain (lower-cased) to an organization; a no-op if it already is.
        Raises Conflict if another organization has it, NotFound for an unknown organization."""
        domain = domain.lower()
        with self._db.write(
            conflict=f"domain {domain!r} belongs to another organization",
            missing=f"no organization {org_id!r}",
        ) as conn:
            owner = conn.execute(
                sa.select(domains.c.organization_id).where(domains.c.domain == domain)
            ).scalar_one_or_none()
            if owner == org_id:
                return
            if owner is not None:
                raise Conflict(f"domain {domain!r} belongs to another organization")
            conn.execute(
                domains.insert().values(domain=domain, organization_id=org_id, created_at=now)
            )

    def list_domains(self, org_id: str) -> list[str]:
        """The organization's sending domains, by name."""
        query = (
            sa.select(domains.c.domain)
            .where(domains.c.organization_id == org_id)
            .order_by(domains.c.domain)
        )
        with self._db.read() as conn:
            return [str(domain) for domain in conn.execute(query).scalars()]

    def domain_organization(self, domain: str) -> str | None:
        """The id of the organization the domain (any case) is assigned to, or None."""
        with self._db.read() as conn:
            owner = conn.execute(DOMAIN_OWNER, {"domain": domain.lower()}).scalar_one_or_none()
        return None if owner is None else str(owner)

    def grant_identity(self, user_id: str, identity: str, now: Instant) -> None:
        """Let the user send as `identity` (an address or `@domain`, lower-cased); granting it
        again is a no-op. Raises NotFound for an unknown user."""
        identity = identity.lower()
        with self._db.write(missing=f"no user {user_id!r}") as conn:
            exists = conn.execute(
                sa.select(identities.c.user_id).where(
                    identities.c.user_id == user_id, identities.c.identity == identity
                )
            ).first()
            if exists is None:
                conn.execute(
                    identities.insert().values(user_id=user_id, identity=identity, created_at=now)
                )

    def identities(self, user_id: str) -> list[str]:
        """The user's identities, oldest grant first."""
        with self._db.read() as conn:
            rows = conn.execute(_IDENTITIES, {"user_id": user_id})
            return [str(identity) for identity in rows.scalars()]

    def add_token(
        self, token_id: str, user_id: str, token_hash: str, name: str, now: Instant
    ) -> None:
        """Store an API token's hash. Raises Conflict for a reused id or hash, NotFound for an
        unknown user."""
        with self._db.write(
            conflict="this token already exists", missing=f"no user {user_id!r}"
        ) as conn:
            conn.execute(
                api_tokens.insert().values(
                    id=token_id, user_id=user_id, token_hash=token_hash, name=name, created_at=now
                )
            )

    def revoke_token(self, token_id: str, now: Instant) -> None:
        """Mark a token revoked (it no longer signs anyone in). Raises NotFound."""
        with self._db.write() as conn:
            result = conn.execute(
                api_tokens.update()
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            if result.rowcount == 0:
                raise NotFound(f"no active token {token_id!r}")

    def user_for_token(self, token_hash: str) -> User | None:
        """The user an unrevoked token belongs to, or None."""
        with self._db.read() as conn:
            row = conn.execute(_TOKEN_USER, {"token_hash": token_hash}).first()
        return None if row is None else user_of(row)

    def senders_for(self, org_id: str, address: str) -> list[User]:
        """The organization's users with an identity covering `address` (any case): those
        holding the address itself first, then those holding its `@domain`; by email."""
        address = address.lower()
        query = holders_of(org_id, address, "@" + address.rpartition("@")[2])
        with self._db.read() as conn:
            return [user_of(row) for row in conn.execute(query)]

    def list_teams(self, org_id: str) -> list[Team]:
        """The organization's teams, by name."""
        query = teams.select().where(teams.c.organization_id == org_id).order_by(teams.c.name)
        with self._db.read() as conn:
            return [Team(row.id, row.organization_id, row.name) for row in conn.execute(query)]

    def list_tokens(self, user_id: str) -> list[TokenView]:
        """The user's API tokens (never their hashes), newest first, revoked ones included."""
        query = (
            sa.select(
                api_tokens.c.id,
                api_tokens.c.user_id,
                api_tokens.c.name,
                api_tokens.c.created_at,
                api_tokens.c.revoked_at,
            )
            .where(api_tokens.c.user_id == user_id)
            .order_by(api_tokens.c.created_at.desc(), api_tokens.c.id)
        )
        with self._db.read() as conn:
            return [
                TokenView(row.id, row.user_id, row.name, row.created_at, row.revoked_at)
                for row in conn.execute(query)
            ]
