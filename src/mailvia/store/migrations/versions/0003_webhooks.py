"""Webhooks: subscriptions (secrets sealed), one delivery per (webhook, event), every attempt.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.Double


def _webhook_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["webhook_id"], ["webhooks.id"], name=f"fk_{table}_webhook_id_webhooks"
    )


def upgrade() -> None:
    _webhooks()
    _deliveries()
    _attempts()


def _webhooks() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("organization_id", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event_types", sa.Text, nullable=True),
        sa.Column("secret", sa.LargeBinary, nullable=False),
        sa.Column("last_event_seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhooks"),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_webhooks_organization_id_organizations",
        ),
    )
    op.create_index("ix_webhooks_organization_id", "webhooks", ["organization_id"])


def _deliveries() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("webhook_id", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("event_seq", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("next_attempt_at", Time, nullable=True),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_duration", Time, nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        _webhook_fk("webhook_deliveries"),
        sa.UniqueConstraint(
            "webhook_id", "event_id", name="uq_webhook_deliveries_webhook_id_event_id"
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_webhook_id_state_next_attempt_at",
        "webhook_deliveries",
        ["webhook_id", "state", "next_attempt_at"],
    )
    op.create_index(
        "ix_webhook_deliveries_state_next_attempt_at",
        "webhook_deliveries",
        ["state", "next_attempt_at"],
    )


def _attempts() -> None:
    op.create_table(
        "webhook_attempts",
        sa.Column("seq", Seq, nullable=False, autoincrement=True),
        sa.Column("webhook_id", sa.Text, nullable=False),
        sa.Column("delivery_id", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", Time, nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("duration", Time, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("next_attempt_at", Time, nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_webhook_attempts"),
        _webhook_fk("webhook_attempts"),
    )
    op.create_index("ix_webhook_attempts_webhook_id_seq", "webhook_attempts", ["webhook_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_webhook_attempts_webhook_id_seq", "webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_deliveries_state_next_attempt_at", "webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_webhook_id_state_next_attempt_at", "webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhooks_organization_id", "webhooks")
    op.drop_table("webhooks")
