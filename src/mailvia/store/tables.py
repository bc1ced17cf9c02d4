"""The schema as SQLAlchemy Core tables; it must match migrations/versions (the real schema).

Times are float epoch seconds; ids are strings made by the caller, except the integer `seq`
keys that order messages and events. JSON-ish values are stored as JSON text.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# INTEGER PRIMARY KEY is SQLite's rowid (autoincrementing); BIGINT elsewhere.
Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.Double

organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("default_channel_id", sa.Text),
    sa.Column("fallback", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
)

teams = sa.Table(
    "teams",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("organization_id", sa.Text, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.UniqueConstraint("organization_id", "name"),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("organization_id", sa.Text, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("team_id", sa.Text, sa.ForeignKey("teams.id"), nullable=False),
    sa.Column("email", sa.Text, nullable=False, unique=True),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("password_hash", sa.Text),
    sa.Column("must_change_password", sa.Boolean, nullable=False),
    sa.Column("created_at", Time, nullable=False),
)

domains = sa.Table(
    "domains",
    metadata,
    sa.Column("domain", sa.Text, primary_key=True),
    sa.Column("organization_id", sa.Text, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("created_at", Time, nullable=False),
)

identities = sa.Table(
    "identities",
    metadata,
    sa.Column("user_id", sa.Text, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("identity", sa.Text, primary_key=True),
    sa.Column("created_at", Time, nullable=False),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("token_hash", sa.Text, nullable=False, unique=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("revoked_at", Time),
)

channels = sa.Table(
    "channels",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("organization_id", sa.Text, sa.ForeignKey("organizations.id"), nullable=False),
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
    sa.Column("budget_wait_until", Time),  # 0002: the budgets allow nothing until then
    sa.Column("transport", sa.Text, nullable=False, server_default="smtp"),  # 0004
    sa.Column("oauth_provider", sa.Text),  # 0004: google | microsoft for an OAuth mailbox
    # 0015: one more at every change of state or settings (a disconnect's condition)
    sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
    # 0017: the kind of OAuth refusal (domain/oauth.Refusal) it was disconnected for
    sa.Column("refusal", sa.Text),
    sa.UniqueConstraint("organization_id", "name"),
)

# channel_id and user_id carry no foreign key: delivered mail outlives a removed channel.
messages = sa.Table(
    "messages",
    metadata,
    sa.Column("seq", Seq, primary_key=True, autoincrement=True),
    sa.Column("id", sa.Text, nullable=False, unique=True),
    sa.Column("organization_id", sa.Text, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("channel_id", sa.Text, nullable=False),
    sa.Column("mail_from", sa.Text, nullable=False),
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
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),  # 0006
    # 0009: when the lease holder began a transaction for it (SMTP MAIL or the API call);
    # cleared when the attempt is recorded or the lease is taken over.
    sa.Column("started_at", Time),
    sa.Column("subject", sa.Text),  # 0010: as mail programs show it (NULL: stored before)
    # 0014: the claim that leased it, on PostgreSQL (a number its worker picked): the messages
    # of a claim whose answer was lost are given back by it (store/claims_pg.py).
    sa.Column("lease_id", sa.BigInteger),
    sa.UniqueConstraint("user_id", "idempotency_key"),  # a key names one user's request
    # 0009: with seq, a claim in submission order reads only the rows it takes.
    sa.Index(None, "channel_id", "state", "next_attempt_at", "seq"),
    sa.Index(None, "state", "expires_at"),
    sa.Index(None, "state", "lease_expires_at"),
    sa.Index(None, "organization_id", "seq"),
    # 0012: a worker's own claims (its restart takes them back): only `sending` rows, so the
    # planner uses it however few of them SQLite's statistics say there are.
    sa.Index(
        "ix_messages_sending_lease_owner",
        "lease_owner",
        sqlite_where=sa.text("state = 'sending'"),
        postgresql_where=sa.text("state = 'sending'"),
    ),
)

# 0013: each message's bytes (its `content`, in messages until 0012), written once with the
# message and read by the claim that sends it. Kept apart from the message's row, which its
# lease, started mark and settlement each update: SQLite rewrites a whole record on UPDATE,
# kilobytes of content included. A message's content goes when the message goes.
message_contents = sa.Table(
    "message_contents",
    metadata,
    sa.Column(
        "message_seq",
        Seq,
        sa.ForeignKey("messages.seq", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("content", sa.LargeBinary, nullable=False),
)

recipients = sa.Table(
    "recipients",
    metadata,
    sa.Column("message_seq", Seq, sa.ForeignKey("messages.seq"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("address", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("last_code", sa.Integer),
    sa.Column("last_enhanced", sa.Text),
    sa.Column("last_text", sa.Text),
    sa.Column("updated_at", Time, nullable=False),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", Seq, primary_key=True, autoincrement=True),
    sa.Column("message_seq", Seq, sa.ForeignKey("messages.seq"), nullable=False, index=True),
    sa.Column("channel_id", sa.Text, nullable=False),
    sa.Column("recipient", sa.Text, nullable=False),
    sa.Column("at", Time, nullable=False),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Column("code", sa.Integer, nullable=False),
    sa.Column("enhanced", sa.Text),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("worker", sa.Text, nullable=False),
    sa.Index(None, "channel_id", "at"),  # 0010: a channel's recent attempts, by the hour
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", Seq, primary_key=True, autoincrement=True),
    sa.Column("id", sa.Text, nullable=False, unique=True),
    sa.Column("organization_id", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Index(None, "organization_id", "seq"),
)

# 0002: one row per transaction on a channel with budgets (the shaping ledger): when it
# started, and when it ended (NULL while it is in flight). 0009: `budget_end`, the end a
# budget counts it to (its end; in flight, its start plus STALE_AFTER, see store/budgets.py).
channel_usage = sa.Table(
    "channel_usage",
    metadata,
    sa.Column("seq", Seq, primary_key=True, autoincrement=True),
    sa.Column("channel_id", sa.Text, nullable=False),
    sa.Column("at", Time, nullable=False),
    sa.Column("ended_at", Time),
    sa.Column("messages", sa.Integer, nullable=False),
    sa.Column("recipients", sa.Integer, nullable=False),
    sa.Column("budget_end", Time, nullable=False),
    sa.Index("ix_channel_usage_channel_id_at", "channel_id", "at"),
    sa.Index("ix_channel_usage_channel_id_budget_end", "channel_id", "budget_end"),
)

# 0009: per channel and budget window (per_seconds, unit): what the ledger's rows with
# budget_end > cursor add up to, moved forward at each check by what left the window since.
budget_windows = sa.Table(
    "budget_windows",
    metadata,
    sa.Column("channel_id", sa.Text, primary_key=True),
    sa.Column("per_seconds", Time, primary_key=True),
    sa.Column("unit", sa.Text, primary_key=True),
    sa.Column("cursor", Time, nullable=False),
    sa.Column("held", sa.BigInteger, nullable=False),
)

# 0009: one row per dispatcher (its worker id), beaten every few seconds while it runs.
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("beat_at", Time, nullable=False),
)

# 0011: connection caps shared by every worker: one row per connection a worker may hold
# open to a channel, and a row with a negative slot number per worker asking for one
# (store/slots.py).
connection_slots = sa.Table(
    "connection_slots",
    metadata,
    sa.Column("channel_id", sa.Text, primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True),
    sa.Column("worker", sa.Text, nullable=False, index=True),
    sa.Column("taken_at", Time, nullable=False),
)

# 0003: webhooks. `last_event_seq` is how far in the events table the webhook has been
# queued; the signing secret is sealed by the vault, never stored in clear.
webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("organization_id", sa.Text, sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event_types", sa.Text),  # a JSON list; NULL: every type
    sa.Column("secret", sa.LargeBinary, nullable=False),
    sa.Column("last_event_seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Index(None, "organization_id"),
)

# One row per (webhook, event): pending until delivered or given up (failed). A claimed
# delivery's next_attempt_at is its lease's end, so a crashed dispatcher's claim comes back.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("webhook_id", sa.Text, sa.ForeignKey("webhooks.id"), nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("event_seq", sa.BigInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("next_attempt_at", Time),
    sa.Column("last_status", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("last_duration", Time),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.UniqueConstraint("webhook_id", "event_id"),
    sa.Index(None, "webhook_id", "state", "next_attempt_at"),
    sa.Index(None, "state", "next_attempt_at"),
)

# Every attempt, for `GET /v1/webhooks/{id}/deliveries`.
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("seq", Seq, primary_key=True, autoincrement=True),
    sa.Column("webhook_id", sa.Text, sa.ForeignKey("webhooks.id"), nullable=False),
    sa.Column("delivery_id", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", Time, nullable=False),
    sa.Column("status", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("duration", Time, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("next_attempt_at", Time),
    sa.Index(None, "webhook_id", "seq"),
)

# 0005: the pages' sign-in sessions, checked on every request; `key` is the SHA-256 of the
# secret the browser's cookie carries. A removed user's sessions go with it.
web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("seen_at", Time, nullable=False),
    sa.Index(None, "user_id"),
    sa.Index(None, "seen_at"),
)

# 0008: OAuth mailboxes. An organization's own OAuth app per provider (the client secret sealed).
oauth_apps = sa.Table(
    "oauth_apps",
    metadata,
    sa.Column("organization_id", sa.Text, sa.ForeignKey("organizations.id"), primary_key=True),
    sa.Column("provider", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("secret", sa.LargeBinary),
    sa.Column("tenant", sa.Text),
    sa.Column("updated_at", Time, nullable=False),
)

# A connection under way, from "Connect" to the provider's callback: any process can finish it,
# once. The state is kept only as a hash; the PKCE verifier sealed; `session` is a hash of the
# web session that sent the browser to the provider (the callback must come back in it).
oauth_flows = sa.Table(
    "oauth_flows",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("state_hash", sa.Text, unique=True),
    sa.Column("organization_id", sa.Text, nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("transport", sa.Text, nullable=False),
    sa.Column("channel_id", sa.Text),
    sa.Column("session", sa.Text),
    sa.Column("verifier", sa.LargeBinary),
    sa.Column("nonce", sa.Text),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Index(None, "expires_at"),
)

# An OAuth mailbox's tokens (sealed), one row per channel. `version` grows with each write;
# `lease_owner`/`lease_until` let one process at a time refresh; `failure` keeps the reply of a
# refused consent, so no process asks the provider again until the mailbox is reconnected.
oauth_tokens = sa.Table(
    "oauth_tokens",
    metadata,
    sa.Column(
        "channel_id",
        sa.Text,
        sa.ForeignKey("channels.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("address", sa.Text, nullable=False),
    sa.Column("access", sa.LargeBinary, nullable=False),
    sa.Column("refresh", sa.LargeBinary),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("obtained_at", Time, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_until", Time),
    sa.Column("failure", sa.Text),
    sa.Column("refusal", sa.Text),  # 0017: the failure's kind (domain/oauth.Refusal)
    sa.Column("refused_app", sa.Text),  # 0017: the refused app's fingerprint
)
