"""A trusted network's From in one statement (`trusted_from`): the organization's user who
may send as the address, the organization and its channels. The submission port reads it
once per From and group; on PostgreSQL in autocommit, one round trip where the four reads it
replaces (the domain's owner, the senders, the organization, its channels) took six with
their BEGIN and COMMIT.

Side effects: reads the database.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from mailvia.domain.errors import NotFound
from mailvia.domain.tenancy import domain_of
from mailvia.outbox.senders import TrustedFrom
from mailvia.store.channels import CHANNEL_COLUMNS, channel_of
from mailvia.store.engine import Database
from mailvia.store.tables import channels, domains, organizations
from mailvia.store.tenancy import holders_of, organization_of, user_of

_ADDRESS: Any = sa.bindparam("address")
_ORG: Any = sa.bindparam("org_id")
# The user who may send as the address: the organization owns its domain, and the user
# holds the address itself (first) or its @domain; by email among equals (senders_for's order).
_SENDER = (
    holders_of(_ORG, _ADDRESS, sa.bindparam("at_domain"))
    .where(
        sa.exists().where(
            domains.c.domain == sa.bindparam("domain"), domains.c.organization_id == _ORG
        )
    )
    .limit(1)
    .subquery("sender")
)
# One row per channel of the organization (one with the channel's columns NULL when it has
# none), each with the organization's columns (org_...) and the sender's (sender_..., NULL
# when nobody may).
_TRUSTED_SENDER = (
    sa.select(
        *(c.label("org_" + c.name) for c in organizations.c),
        *(c.label("sender_" + c.name) for c in _SENDER.c),
        *CHANNEL_COLUMNS,
    )
    .select_from(organizations)
    .outerjoin(_SENDER, sa.true())
    .outerjoin(channels, channels.c.organization_id == organizations.c.id)
    .where(organizations.c.id == _ORG)
    .order_by(channels.c.name, channels.c.id)
)


class TrustedFromStore:
    """`trusted_from` of the Store port."""

    _db: Database

    def trusted_from(self, org_id: str, address: str) -> TrustedFrom:
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
        sender = _prefixed(rows[0], "sender_")
        return TrustedFrom(
            address=address,
            user=None if sender.id is None else user_of(sender),
            organization=organization_of(_prefixed(rows[0], "org_")),
            channels=tuple(channel_of(row) for row in rows if row.id is not None),
        )


def _prefixed(row: Any, prefix: str) -> SimpleNamespace:
    """The columns of `row` labelled `prefix`..., by their own names (for `user_of` and
    `organization_of`)."""
    items = row._mapping.items()
    return SimpleNamespace(**{k[len(prefix) :]: v for k, v in items if k.startswith(prefix)})
