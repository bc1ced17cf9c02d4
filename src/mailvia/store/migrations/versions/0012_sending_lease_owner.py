"""A worker's own claims found without reading the table: a partial index on
`messages.lease_owner` over the `sending` rows. A restarted worker takes back its previous
run's claims with `state = 'sending' AND lease_owner = ?`; where SQLite's statistics (after an
ANALYZE) say a state value matches most rows, the (state, lease_expires_at) index was passed
over and the UPDATE read every message: 2.5 s with 1,000,000 queued (bench/backlog.py).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SENDING = sa.text("state = 'sending'")


def upgrade() -> None:
    op.create_index(
        "ix_messages_sending_lease_owner",
        "messages",
        ["lease_owner"],
        sqlite_where=SENDING,
        postgresql_where=SENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_sending_lease_owner", table_name="messages")
