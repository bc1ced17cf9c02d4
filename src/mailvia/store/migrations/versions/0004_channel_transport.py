"""OAuth mailboxes: a channel's transport (smtp, gmail_api, graph) and its OAuth provider.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("transport", sa.Text, nullable=False, server_default="smtp"))
        batch.add_column(sa.Column("oauth_provider", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("oauth_provider")
        batch.drop_column("transport")
