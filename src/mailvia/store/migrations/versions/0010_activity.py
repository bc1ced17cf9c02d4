"""Activity on the pages: each message's subject, and each channel's attempts by time.

- `messages.subject`: the Subject as mail programs show it (outbox/headers.subject_of), kept
  so that Activity lists and searches it without reading message bytes. NULL on messages
  stored before this revision: a page reads theirs from the head of the bytes, and a search
  does not find them by subject (a backfill would read every message ever kept).
- An index on `attempts (channel_id, at)`: a channel's last 24 hours, hour by hour, is one
  index range.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("subject", sa.Text, nullable=True))
    op.create_index("ix_attempts_channel_id_at", "attempts", ["channel_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_attempts_channel_id_at", table_name="attempts")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("subject")
