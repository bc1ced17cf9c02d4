"""Idempotency keys are kept per user, not per organization: one member's key neither blocks
another's nor shows that it was used.

Going back, keys that two users of one organization share are forgotten (set to NULL) rather
than refused: a key only guards retries for 24 hours.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_PER_ORGANIZATION = "uq_messages_organization_id_idempotency_key"
_PER_USER = "uq_messages_user_id_idempotency_key"


def upgrade() -> None:
    # SQLite cannot drop a table's UNIQUE constraint: batch mode rebuilds the table (migrate()
    # turns SQLite's foreign keys off meanwhile and checks them before it commits).
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(_PER_ORGANIZATION, type_="unique")
        batch.create_unique_constraint(_PER_USER, ["user_id", "idempotency_key"])


def downgrade() -> None:
    messages = sa.table(
        "messages",
        sa.column("organization_id"),
        sa.column("user_id"),
        sa.column("idempotency_key"),
        sa.column("request_hash"),
    )
    org, key = messages.c.organization_id, messages.c.idempotency_key
    shared = (
        sa.select(org, key)
        .where(key.is_not(None))
        .group_by(org, key)
        .having(sa.func.count(sa.distinct(messages.c.user_id)) > 1)
    )
    for organization_id, idempotency_key in op.get_bind().execute(shared).all():
        op.execute(
            messages.update()
            .where(org == organization_id, key == idempotency_key)
            .values(idempotency_key=None, request_hash=None)
        )
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(_PER_USER, type_="unique")
        batch.create_unique_constraint(_PER_ORGANIZATION, ["organization_id", "idempotency_key"])
