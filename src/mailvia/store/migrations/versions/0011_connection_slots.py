"""Connection caps shared by every worker: `connection_slots`, one row per connection a
worker may hold open to a channel (at most `max_connections` rows per channel). A slot
belongs to a live worker: one whose worker row stopped beating loses its slots with its
claims (see store/slots.py).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connection_slots",
        sa.Column("channel_id", sa.Text, nullable=False),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("worker", sa.Text, nullable=False),
        sa.Column("taken_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("channel_id", "slot", name="pk_connection_slots"),
    )
    op.create_index("ix_connection_slots_worker", "connection_slots", ["worker"])


def downgrade() -> None:
    op.drop_index("ix_connection_slots_worker", table_name="connection_slots")
    op.drop_table("connection_slots")
