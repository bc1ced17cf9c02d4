"""Shaping: each channel's transactions (the budget ledger) and its budget wait.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "channel_usage",
        sa.Column("seq", Seq, nullable=False, autoincrement=True),
        sa.Column("channel_id", sa.Text, nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("ended_at", sa.Double, nullable=True),
        sa.Column("messages", sa.Integer, nullable=False),
        sa.Column("recipients", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_channel_usage"),
    )
    op.create_index("ix_channel_usage_channel_id_at", "channel_usage", ["channel_id", "at"])
    op.create_index(
        "ix_channel_usage_channel_id_ended_at", "channel_usage", ["channel_id", "ended_at"]
    )
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("budget_wait_until", sa.Double, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("budget_wait_until")
    op.drop_index("ix_channel_usage_channel_id_ended_at", "channel_usage")
    op.drop_index("ix_channel_usage_channel_id_at", "channel_usage")
    op.drop_table("channel_usage")
