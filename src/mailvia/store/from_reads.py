"""A From's rights and its route's inputs in one statement: the organization its domain is
assigned to, the organization and its channels, and either the organization's user holding
the address (`trusted_from`: a trusted network's From) or the logged-in user's sender
identities (`user_from`). The submission port reads it once per From and group; on
PostgreSQL in autocommit, one round trip where the four reads it replaces (the domain's
owner, the senders or the identities, the organization, its channels) took six with their
BEGIN and COMMIT. The rules that judge it are outbox/senders.py's, not SQL's.

Side effects: reads the database.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from mailvia.domain.errors import NotFound
from mailvia.domain.tenancy import domain_of
from mailvia.outbox.senders import FromRead
from mailvia.store.channels import CHANNEL_COLUMNS, channel_of
from mailvia.store.engine import Database
from mailvia.store.tables import channels, identities, organizations
from mailvia.store.tenancy import DOMAIN_OWNER, holders_of, organization_of, user_of

_ORG: Any = sa.bindparam("org_id")
# The organization the address's domain is assigned to (NULL: nobody's).
_OWNER = DOMAIN_OWNER.scalar_subquery().label("from_owner")
# The organization's first user holding the address itself, else its @domain; by email
# among equals (senders_for's order). Whether the domain is theirs is judged after.
_HOLDER = (
    holders_of(_ORG, sa.bindparam("address"), sa.bindparam("at_domain")).limit(1).subquery("holder")
)
# The logged-in user's identities, in one column (an identity is an address or @domain: no
# line break in it).
_SEPARATOR = "\n"
_IDENTITIES = (
    sa.select(sa.func.aggregate_strings(identities.c.identity, _SEPARATOR))
    .where(identities.c.user_id == sa.bindparam("user_id"))
    .scalar_subquery()
    .label("from_identities")
)


def _with_route(*columns: Any) -> sa.Select[Any]:
    """One row per channel of the organization (one with the channel's columns NULL when it
    has none), each with the organization's columns (org_...), the domain's owner and
    `columns`."""
    return (
        sa.select(
            *(c.label("org_" + c.name) for c in organizations.c),
            _OWNER,
            *columns,
            *CHANNEL_COLUMNS,
        )
        .select_from(organizations)
        .outerjoin(channels, channels.c.organization_id == organizations.c.id)
        .where(organizations.c.id == _ORG)
        .order_by(channels.c.name, channels.c.id)
    )


_TRUSTED_FROM = _with_route(*(c.label("holder_" + c.name) for c in _HOLDER.c)).outerjoin(
    _HOLDER, sa.true()
)
_USER_FROM = _with_route(_IDENTITIES)


class FromReadStore:
    """`trusted_from` and `user_from` of the Store port: a From read (`FromRead`)."""

    _db: Database

    def trusted_from(self, org_id: str, address: str) -> FromRead:
        """A trusted network's From: its domain's owner, the organization's first user
        holding it, the organization and its channels, in one statement. Raises NotFound for
        an unknown organization, InvalidAddress for something that is not an address."""
        rows, address = self._read(_TRUSTED_FROM, org_id, address, {})
        holder = _prefixed(rows[0], "holder_")
        return _read_of(rows, address, holder=None if holder.id is None else user_of(holder))

    def user_from(self, org_id: str, user_id: str, address: str) -> FromRead:
        """A logged-in user's From: its domain's owner, the user's identities, the user's
        organization (`org_id`) and its channels, in one statement. Raises as
        `trusted_from`."""
        rows, address = self._read(_USER_FROM, org_id, address, {"user_id": user_id})
        held = rows[0].from_identities
        return _read_of(rows, address, identities=tuple(held.split(_SEPARATOR)) if held else ())

    def _read(
        self, statement: sa.Select[Any], org_id: str, address: str, values: dict[str, str]
    ) -> tuple[list[Any], str]:
        address = address.lower()
        domain = domain_of(address)
        values = {**values, "org_id": org_id, "address": address, "at_domain": "@" + domain}
        with self._db.read_one() as conn:
            rows = list(conn.execute(statement, {**values, "domain": domain}).all())
        if not rows:
            raise NotFound(f"no organization {org_id!r}")
        return rows, address


def _read_of(rows: list[Any], address: str, **read: Any) -> FromRead:
    owner = rows[0].from_owner
    return FromRead(
        address=address,
        owner=None if owner is None else str(owner),
        organization=organization_of(_prefixed(rows[0], "org_")),
        channels=tuple(channel_of(row) for row in rows if row.id is not None),
        **read,
    )


def _prefixed(row: Any, prefix: str) -> SimpleNamespace:
    """The columns of `row` labelled `prefix`..., by their own names (for `user_of` and
    `organization_of`)."""
    items = row._mapping.items()
    return SimpleNamespace(**{k[len(prefix) :]: v for k, v in items if k.startswith(prefix)})
