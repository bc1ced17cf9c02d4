"""A channel's generation: `channels.generation`, one more at every change of its state or
settings (credentials among them). A disconnect is one conditional UPDATE on the state and
generation the refusal was met with (store/channels.py `disconnect_channel`): of a channel
run and Test connection that meet the refusal together, one disconnects; a refusal met
before a reconnect never disconnects the channel reconnected since. 0 for every channel
stored before.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "channels", sa.Column("generation", sa.Integer, nullable=False, server_default="0")
    )


def downgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("generation")
