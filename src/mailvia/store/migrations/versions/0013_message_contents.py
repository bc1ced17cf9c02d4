"""Each message's bytes in a table of their own, `message_contents` (keyed by the message's seq),
out of the messages row that every lease, started mark and settlement updates: SQLite rewrites
a whole record on UPDATE, overflow pages included, so each state change of a 6 KB message wrote
6 KB, three times or more per delivery, while intakes waited for the writer.

Upgrade copies every message's content across, then drops `messages.content` (SQLite 3.35+
drops it in place, rewriting each row once; PostgreSQL only marks it dropped). Neither gives
the old bytes' space back by itself: the data needs room for the contents twice over during the
upgrade, and afterwards SQLite keeps the freed pages for new data (`VACUUM` returns them to the
file system) while on PostgreSQL rows never updated again (delivered mail) keep their old bytes
until `VACUUM FULL messages` rewrites the table (docs/cli.md, `migrate`). Downgrade copies the
contents back, makes the column NOT NULL again (on SQLite by rebuilding the table: migrate()
turns the foreign keys off meanwhile and checks them before it commits) and drops the table.
Either way every byte is written once more: minutes for millions of messages, in the one
migration transaction.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "message_contents",
        sa.Column("message_seq", Seq, autoincrement=False, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.ForeignKeyConstraint(
            ["message_seq"],
            ["messages.seq"],
            name="fk_message_contents_message_seq_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_seq", name="pk_message_contents"),
    )
    op.execute(
        "INSERT INTO message_contents (message_seq, content) SELECT seq, content FROM messages"
    )
    op.drop_column("messages", "content")


def downgrade() -> None:
    op.add_column("messages", sa.Column("content", sa.LargeBinary, nullable=True))
    op.execute(
        "UPDATE messages SET content = (SELECT c.content FROM message_contents c "
        "WHERE c.message_seq = messages.seq)"
    )
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("content", existing_type=sa.LargeBinary, nullable=False)
    op.drop_table("message_contents")
