"""Domains in the one form addresses hold them: every domain stored in `domains`,
`identities` (`@domain` and addresses) and `channels.domains` is rewritten in the form the
code now stores and compares it in (`check_domain` and `check_identity`, outbox/addresses.py:
email-validator's normal form, lower case, A-labels decoded). Until now `admin add-domain`,
`admin grant` and a team channel's domains kept what was typed once email-validator accepted
it, so one name could be stored in several spellings (`xn--bcher-kva.test`, `bücher.test` in
NFC or NFD), and only the normal form matches a message's From.

The rule is the code's own, imported, not a copy: a second rule here could disagree with the
one the rows are read by afterwards (the review of this migration found one that knew only
`xn--` rows). A row the rule refuses (`xn--zz.test`) is kept as written.

Where several spellings of one domain were stored, one row is kept: within one organization,
one row in normal form. Between organizations (add-domain checked the spelling typed, not the
name): the organization whose row was already in normal form, else the one whose row is the
earliest created (then the lower organization id), keeps the domain, and a warning names the
domain and both organizations; the other's row is dropped. Nothing to undo going back: every
version reads the normal form.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from mailvia.domain.errors import InvalidInput
from mailvia.outbox.addresses import check_domain, check_identity

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

log = logging.getLogger("mailvia.store.migrations")


def upgrade() -> None:
    conn = op.get_bind()
    _domains(conn)
    _identities(conn)
    _channels(conn)


def downgrade() -> None:
    pass


def normal(check: Callable[[str], str], written: str) -> str:
    """`written` in the code's form; as written when the code refuses it, for any reason (a
    team channel's domains were stored unchecked: one may be longer than a header line)."""
    try:
        return check(written)
    except InvalidInput:
        return written


def _domains(conn: sa.Connection) -> None:
    rows = conn.execute(sa.text("SELECT domain, organization_id, created_at FROM domains")).all()
    claims: dict[str, list[sa.Row[Any]]] = {}
    for row in rows:
        claims.setdefault(normal(check_domain, row.domain), []).append(row)
    for domain, spellings in claims.items():
        kept = _kept(domain, spellings)
        for row in spellings:
            if row is kept:
                continue
            if row.organization_id != kept.organization_id:
                log.warning(
                    "domain %s was stored for two organizations (%r for %s, %r for %s): "
                    "%s keeps it",
                    domain, kept.domain, kept.organization_id, row.domain,
                    row.organization_id, kept.organization_id,
                )  # fmt: skip
            conn.execute(sa.text("DELETE FROM domains WHERE domain = :w"), {"w": row.domain})
        if kept.domain != domain:
            conn.execute(
                sa.text("UPDATE domains SET domain = :d WHERE domain = :w"),
                {"d": domain, "w": kept.domain},
            )


def _kept(domain: str, spellings: Sequence[sa.Row[Any]]) -> sa.Row[Any]:
    """The row that keeps the domain: one already in normal form, else the earliest."""
    return min(spellings, key=lambda r: (r.domain != domain, r.created_at, r.organization_id))


def _identities(conn: sa.Connection) -> None:
    rows = conn.execute(sa.text("SELECT user_id, identity FROM identities")).all()
    held = {(user_id, identity) for user_id, identity in rows}
    for user_id, written in rows:
        identity = normal(check_identity, written)
        if identity == written:
            continue
        key = {"u": user_id, "i": identity, "w": written}
        if (user_id, identity) not in held:
            conn.execute(
                sa.text("UPDATE identities SET identity = :i WHERE user_id = :u AND identity = :w"),
                key,
            )
            held.add((user_id, identity))
        else:
            conn.execute(
                sa.text("DELETE FROM identities WHERE user_id = :u AND identity = :w"), key
            )
        held.discard((user_id, written))


def _channels(conn: sa.Connection) -> None:
    rows = conn.execute(sa.text("SELECT id, domains FROM channels")).all()
    for channel_id, written in rows:
        domains = sorted({normal(check_domain, domain) for domain in json.loads(written)})
        if domains != json.loads(written):
            conn.execute(
                sa.text("UPDATE channels SET domains = :d WHERE id = :c"),
                {"d": json.dumps(domains), "c": channel_id},
            )
