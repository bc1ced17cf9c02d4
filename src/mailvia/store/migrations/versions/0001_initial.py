"""The initial schema: tenancy, channels, the outbox (messages, recipients, attempts), events.

Revision ID: 0001
Revises:
Create Date: 2026-05-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.Double


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["organization_id"], ["organizations.id"], name=f"fk_{table}_organization_id_organizations"
    )


def _tenancy() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("default_channel_id", sa.Text),
        sa.Column("fallback", sa.Text, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_organizations"),
        sa.UniqueConstraint("name", name="uq_organizations_name"),
    )
    op.create_table(
        "teams",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("organization_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_teams"),
        _org_fk("teams"),
        sa.UniqueConstraint("organization_id", "name", name="uq_teams_organization_id_name"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("organization_id", sa.Text, nullable=False),
        sa.Column("team_id", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text),
        sa.Column("must_change_password", sa.Boolean, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        _org_fk("users"),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name="fk_users_team_id_teams"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )


def _access() -> None:
    op.create_table(
        "domains",
        sa.Column("domain", sa.Text, nullable=False),
        sa.Column("organization_id", sa.Text, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("domain", name="pk_domains"),
        _org_fk("domains"),
    )
    op.create_table(
        "identities",
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("identity", sa.Text, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "identity", name="pk_identities"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_identities_user_id_users"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("token_hash", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("revoked_at", Time),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_api_tokens_user_id_users"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )


def _channels() -> None:
    op.create_table(
        "channels",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("organization_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("preset", sa.Text),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("security", sa.Text, nullable=False),
        sa.Column("auth", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("owner_user_id", sa.Text),
        sa.Column("owner_team_id", sa.Text),
        sa.Column("username", sa.Text),
        sa.Column("has_password", sa.Boolean, nullable=False),
        sa.Column("ca_pem", sa.Text),
        sa.Column("address", sa.Text),
        sa.Column("domains", sa.Text, nullable=False),
        sa.Column("budgets", sa.Text, nullable=False),
        sa.Column("max_recipients_per_message", sa.Integer, nullable=False),
        sa.Column("max_connections", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("state_reason", sa.Text),
        sa.Column("state_changed_at", Time),
        sa.Column("throttled_until", Time),
        sa.Column("throttle_level", sa.Integer, nullable=False),
        sa.Column("retry", sa.Text, nullable=False),
        sa.Column("timeouts", sa.Text, nullable=False),
        sa.Column("secret", sa.LargeBinary),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_channels"),
        _org_fk("channels"),
        sa.UniqueConstraint("organization_id", "name", name="uq_channels_organization_id_name"),
    )


def _messages() -> None:
    op.create_table(
        "messages",
        sa.Column("seq", Seq, nullable=False, autoincrement=True),
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("organization_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("channel_id", sa.Text, nullable=False),
        sa.Column("mail_from", sa.Text, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.Column("next_attempt_at", Time),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("possible_duplicate", sa.Boolean, nullable=False),
        sa.Column("lease_owner", sa.Text),
        sa.Column("lease_expires_at", Time),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("request_hash", sa.Text),
        sa.PrimaryKeyConstraint("seq", name="pk_messages"),
        _org_fk("messages"),
        sa.UniqueConstraint("id", name="uq_messages_id"),
        sa.UniqueConstraint(
            "organization_id", "idempotency_key", name="uq_messages_organization_id_idempotency_key"
        ),
    )
    op.create_index(
        "ix_messages_channel_id_state_next_attempt_at",
        "messages",
        ["channel_id", "state", "next_attempt_at"],
    )
    op.create_index("ix_messages_state_expires_at", "messages", ["state", "expires_at"])
    op.create_index("ix_messages_state_lease_expires_at", "messages", ["state", "lease_expires_at"])
    op.create_index("ix_messages_organization_id_seq", "messages", ["organization_id", "seq"])


def _deliveries() -> None:
    op.create_table(
        "recipients",
        sa.Column("message_seq", Seq, nullable=False),
        sa.Column("position", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("last_code", sa.Integer),
        sa.Column("last_enhanced", sa.Text),
        sa.Column("last_text", sa.Text),
        sa.Column("updated_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("message_seq", "position", name="pk_recipients"),
        sa.ForeignKeyConstraint(
            ["message_seq"], ["messages.seq"], name="fk_recipients_message_seq_messages"
        ),
    )
    op.create_table(
        "attempts",
        sa.Column("id", Seq, nullable=False, autoincrement=True),
        sa.Column("message_seq", Seq, nullable=False),
        sa.Column("channel_id", sa.Text, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("at", Time, nullable=False),
        sa.Column("stage", sa.Text, nullable=False),
        sa.Column("code", sa.Integer, nullable=False),
        sa.Column("enhanced", sa.Text),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("worker", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_attempts"),
        sa.ForeignKeyConstraint(
            ["message_seq"], ["messages.seq"], name="fk_attempts_message_seq_messages"
        ),
    )
    op.create_index("ix_attempts_message_seq", "attempts", ["message_seq"])


def _events() -> None:
    op.create_table(
        "events",
        sa.Column("seq", Seq, nullable=False, autoincrement=True),
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("organization_id", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_events"),
        sa.UniqueConstraint("id", name="uq_events_id"),
    )
    op.create_index("ix_events_organization_id_seq", "events", ["organization_id", "seq"])


def upgrade() -> None:
    _tenancy()
    _access()
    _channels()
    _messages()
    _deliveries()
    _events()


def downgrade() -> None:
    for table in (
        "events",
        "attempts",
        "recipients",
        "messages",
        "channels",
        "api_tokens",
        "identities",
        "domains",
        "users",
        "teams",
        "organizations",
    ):
        op.drop_table(table)
