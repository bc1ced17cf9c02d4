"""Domains in the one form addresses hold them: a domain stored as IDNA A-labels
(`xn--bcher-kva.test`, as `admin add-domain`, `admin grant` and a team channel's domains kept
what was typed until now) is stored as its U-labels (`bücher.test`), the form a message's
From and every address are read in (email-validator's normal form), so that it matches them.
In `domains`, `identities` (`@domain` and addresses) and `channels.domains`. Where both
spellings were stored, the A-label row is dropped: the U-label one is the one mail matched
(in `domains` it may belong to another organization than the A-label row did: that
organization is the one whose mail was sent from the domain). A label that is not the
canonical A-label of a name that is not ASCII is kept as written (domain/idn.py's rule,
copied here: a migration does not follow later code). Nothing to undo going back: every
version reads the U-label form.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_ACE = "xn--"


def upgrade() -> None:
    conn = op.get_bind()
    _domains(conn)
    _identities(conn)
    _channels(conn)


def downgrade() -> None:
    pass


def _domains(conn: sa.Connection) -> None:
    rows = conn.execute(sa.text("SELECT domain FROM domains WHERE domain LIKE '%xn--%'")).all()
    for (written,) in rows:
        domain = _unicode(written)
        if domain == written:
            continue
        taken = conn.execute(
            sa.text("SELECT 1 FROM domains WHERE domain = :d"), {"d": domain}
        ).first()
        if taken is not None:
            conn.execute(sa.text("DELETE FROM domains WHERE domain = :d"), {"d": written})
        else:
            conn.execute(
                sa.text("UPDATE domains SET domain = :d WHERE domain = :w"),
                {"d": domain, "w": written},
            )


def _identities(conn: sa.Connection) -> None:
    rows = conn.execute(
        sa.text("SELECT user_id, identity FROM identities WHERE identity LIKE '%xn--%'")
    ).all()
    for user_id, written in rows:
        local, at, domain = written.rpartition("@")
        identity = local + at + _unicode(domain)
        if identity == written:
            continue
        key = {"u": user_id, "i": identity, "w": written}
        taken = conn.execute(
            sa.text("SELECT 1 FROM identities WHERE user_id = :u AND identity = :i"), key
        ).first()
        if taken is not None:
            conn.execute(
                sa.text("DELETE FROM identities WHERE user_id = :u AND identity = :w"), key
            )
        else:
            conn.execute(
                sa.text("UPDATE identities SET identity = :i WHERE user_id = :u AND identity = :w"),
                key,
            )


def _channels(conn: sa.Connection) -> None:
    rows = conn.execute(
        sa.text("SELECT id, domains FROM channels WHERE domains LIKE '%xn--%'")
    ).all()
    for channel_id, written in rows:
        domains = sorted({_unicode(domain) for domain in json.loads(written)})
        conn.execute(
            sa.text("UPDATE channels SET domains = :d WHERE id = :c"),
            {"d": json.dumps(domains), "c": channel_id},
        )


def _unicode(domain: str) -> str:
    return ".".join(_decoded(label) for label in domain.split("."))


def _decoded(label: str) -> str:
    """An A-label's U-label; the label as written unless it is the canonical encoding of a
    name that is not ASCII (domain/idn.py)."""
    code = label.lower().removeprefix(_ACE)
    if code == label.lower():
        return label
    try:
        decoded = code.encode("ascii").decode("punycode")
    except (UnicodeError, ValueError):
        return label
    if decoded.isascii() or decoded.encode("punycode").decode("ascii") != code:
        return label
    return decoded
