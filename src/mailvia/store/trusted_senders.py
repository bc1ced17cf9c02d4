"""A trusted network's From in one statement (`trusted_sender`): the organization's user who
may send as the address, the organization and its channels. The submission port reads it
once per From and group; on PostgreSQL in autocommit, one round trip where the four reads it
replaces (the domain's owner, the senders, the organization, its channels) took six with
their BEGIN and COMMIT.

Side effects: reads the database.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from mailvia.domain.errors import NotFound
from mailvia.domain.tenancy import Fallback, Organization, Role, User, domain_of
from mailvia.outbox.senders import TrustedSender
from mailvia.store.channels import channel_of
from mailvia.store.engine import Database
from mailvia.store.tables import channels, domains, identities, organizations, users

_ADDRESS: Any = sa.bindparam("address")
_AT_DOMAIN: Any = sa.bindparam("at_domain")
_DOMAIN: Any = sa.bindparam("domain")
_ORG: Any = sa.bindparam("org_id")
# The user who may send as the address: the organization owns its domain, and the user
# holds the address itself (first) or its @domain; by email among equals (senders_for's order).
_SENDER = (
    sa.select(
        users.c.id.label("sender_id"),
        users.c.team_id.label("sender_team_id"),
        users.c.email.label("sender_email"),
        users.c.role.label("sender_role"),
        users.c.must_change_password.label("sender_must_change_password"),
    )
    .join(identities, identities.c.user_id == users.c.id)
    .where(
        users.c.organization_id == _ORG,
        identities.c.identity.in_([_ADDRESS, _AT_DOMAIN]),
        sa.exists().where(domains.c.domain == _DOMAIN, domains.c.organization_id == _ORG),
    )
    .order_by(sa.case((identities.c.identity == _ADDRESS, 0), else_=1), users.c.email)
    .limit(1)
    .subquery("sender")
)
_CHANNEL_COLUMNS = [c for c in channels.c if c.name != "secret"]
# One row per channel of the organization (one with the channel's columns NULL when it has
# none), each with the organization's columns and the sender's (NULL when nobody may).
_TRUSTED_SENDER = (
    sa.select(
        organizations.c.name.label("org_name"),
        organizations.c.default_channel_id.label("org_default_channel_id"),
        organizations.c.fallback.label("org_fallback"),
        *_SENDER.c,
        *_CHANNEL_COLUMNS,
    )
    .select_from(organizations)
    .outerjoin(_SENDER, sa.true())
    .outerjoin(channels, channels.c.organization_id == organizations.c.id)
    .where(organizations.c.id == _ORG)
    .order_by(channels.c.name, channels.c.id)
)


class TrustedSenderStore:
    """`trusted_sender` of the Store port."""

    _db: Database

    def trusted_sender(self, org_id: str, address: str) -> TrustedSender:
        """The user of the organization who may send as `address` (None: nobody), the
        organization and its channels, in one statement. Raises NotFound for an unknown
        organization, InvalidAddress for something that is not an address."""
        address = address.lower()
        domain = domain_of(address)
        values = {"org_id": org_id, "address": address, "at_domain": "@" + domain}
        with self._db.read_one() as conn:
            rows = conn.execute(_TRUSTED_SENDER, {**values, "domain": domain}).all()
        if not rows:
            raise NotFound(f"no organization {org_id!r}")
        first = rows[0]
        return TrustedSender(
            address=address,
            user=_sender(first, org_id),
            organization=Organization(
                org_id, first.org_name, first.org_default_channel_id, Fallback(first.org_fallback)
            ),
            channels=tuple(channel_of(row) for row in rows if row.id is not None),
        )


def _sender(row: Any, org_id: str) -> User | None:
    if row.sender_id is None:
        return None
    return User(
        id=row.sender_id,
        organization_id=org_id,
        team_id=row.sender_team_id,
        email=row.sender_email,
        role=Role(row.sender_role),
        must_change_password=bool(row.sender_must_change_password),
    )
