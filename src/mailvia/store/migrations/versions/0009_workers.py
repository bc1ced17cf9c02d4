"""Crash recovery and a large backlog: workers' heartbeats, the mark of a started
transaction, claims in submission order on the index, and running budget sums.

- `workers`: one row per dispatcher, beaten every few seconds (`beat_at`).
- `messages.started_at`: when the lease holder began a transaction for the message (SMTP
  MAIL, or the API call); a taken-over lease flags `possible_duplicate` only then.
- The claim index gains `seq`, so a claim in submission order reads only what it takes.
- `channel_usage.budget_end` (its end, or in flight: its start plus an hour) and
  `budget_windows` (per channel and window: what the window held at its cursor), so that a
  budget check adds up only what entered or left the window since the last one.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

STALE_AFTER = 3600.0  # store/budgets.py: an unfinished transaction ends an hour after it began


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("beat_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
    )
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("started_at", sa.Double, nullable=True))
        batch.drop_index("ix_messages_channel_id_state_next_attempt_at")
        batch.create_index(
            "ix_messages_channel_id_state_next_attempt_at_seq",
            ["channel_id", "state", "next_attempt_at", "seq"],
        )
    with op.batch_alter_table("channel_usage") as batch:
        batch.add_column(sa.Column("budget_end", sa.Double, nullable=True))
    usage = sa.table(
        "channel_usage",
        sa.column("at", sa.Double),
        sa.column("ended_at", sa.Double),
        sa.column("budget_end", sa.Double),
    )
    op.execute(
        usage.update().values(
            budget_end=sa.func.coalesce(usage.c.ended_at, usage.c.at + STALE_AFTER)
        )
    )
    with op.batch_alter_table("channel_usage") as batch:
        batch.alter_column("budget_end", existing_type=sa.Double, nullable=False)
        batch.drop_index("ix_channel_usage_channel_id_ended_at")
        batch.create_index("ix_channel_usage_channel_id_budget_end", ["channel_id", "budget_end"])
    op.create_table(
        "budget_windows",
        sa.Column("channel_id", sa.Text, nullable=False),
        sa.Column("per_seconds", sa.Double, nullable=False),
        sa.Column("unit", sa.Text, nullable=False),
        sa.Column("cursor", sa.Double, nullable=False),
        sa.Column("held", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("channel_id", "per_seconds", "unit", name="pk_budget_windows"),
    )


def downgrade() -> None:
    op.drop_table("budget_windows")
    with op.batch_alter_table("channel_usage") as batch:
        batch.drop_index("ix_channel_usage_channel_id_budget_end")
        batch.create_index("ix_channel_usage_channel_id_ended_at", ["channel_id", "ended_at"])
        batch.drop_column("budget_end")
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_channel_id_state_next_attempt_at_seq")
        batch.create_index(
            "ix_messages_channel_id_state_next_attempt_at",
            ["channel_id", "state", "next_attempt_at"],
        )
        batch.drop_column("started_at")
    op.drop_table("workers")
