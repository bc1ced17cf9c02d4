"""OAuth mailboxes: the organization's own OAuth apps, connections under way, and tokens.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Time = sa.Double


def upgrade() -> None:
    op.create_table(
        "oauth_apps",
        sa.Column("organization_id", sa.Text, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("secret", sa.LargeBinary, nullable=True),
        sa.Column("tenant", sa.Text, nullable=True),
        sa.Column("updated_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "provider", name="pk_oauth_apps"),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_oauth_apps_organization_id_organizations",
        ),
    )
    op.create_table(
        "oauth_flows",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("state_hash", sa.Text, nullable=True),
        sa.Column("organization_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("transport", sa.Text, nullable=False),
        sa.Column("channel_id", sa.Text, nullable=True),
        sa.Column("session", sa.Text, nullable=True),
        sa.Column("verifier", sa.LargeBinary, nullable=True),
        sa.Column("nonce", sa.Text, nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_oauth_flows"),
        sa.UniqueConstraint("state_hash", name="uq_oauth_flows_state_hash"),
    )
    op.create_index("ix_oauth_flows_expires_at", "oauth_flows", ["expires_at"])
    op.create_table(
        "oauth_tokens",
        sa.Column("channel_id", sa.Text, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("access", sa.LargeBinary, nullable=False),
        sa.Column("refresh", sa.LargeBinary, nullable=True),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.Column("obtained_at", Time, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.Text, nullable=True),
        sa.Column("lease_until", Time, nullable=True),
        sa.Column("failure", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("channel_id", name="pk_oauth_tokens"),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name="fk_oauth_tokens_channel_id_channels",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("oauth_tokens")
    op.drop_index("ix_oauth_flows_expires_at", table_name="oauth_flows")
    op.drop_table("oauth_flows")
    op.drop_table("oauth_apps")
