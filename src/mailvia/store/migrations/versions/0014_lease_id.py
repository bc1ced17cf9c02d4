"""Which claim leased a message: `messages.lease_id`, a number the worker picks for each
claim on PostgreSQL before sending it. The claim is one statement in autocommit; should the
connection drop after the server committed it but before the worker read the answer (or while
the server still ran it), the worker gives back the messages still leased to it under that
number and not marked started, rather than leave them leased to it until the lease runs out
(store/claims_pg.py). NULL for a message never leased so (SQLite's claims, every message
stored before, and one a claim took over from a lease whose transaction had started: it may
be in a worker's hands, and is never given back so).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("lease_id", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("lease_id")
