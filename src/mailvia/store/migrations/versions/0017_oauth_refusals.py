"""Why an OAuth mailbox has no token, as data: `oauth_tokens.refusal` beside its `failure`
(`consent`, `organization_app`, `operator_app`, `not_asked`: domain/oauth.Refusal), the
refused app's fingerprint `oauth_tokens.refused_app` (so the operator's app is tried again
only once its settings changed), and `channels.refusal`, the kind a channel was disconnected
for (so a mailbox disconnected only because its app was refused comes back when the app is
mended, and one disconnected for its own reason never does).

Rows stored before are classified once, here, from the reply text mailvia itself wrote
(`535 5.7.8 mailvia: ...`: the words of domain/oauth.py `consent_refused` and
`not_connected` as they were when this revision was written, frozen below so that a later
change of wording never changes what this upgrade does). A text none of them matches stays
unclassified (NULL): such a channel is never brought back on its own. Their refused app's
fingerprint is unknown (NULL): a mailbox refused through the operator's app before this
revision is tried again at the first start with these columns.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_NAMES = "(?:Google|Microsoft 365)"
_TAIL = f": reconnect with {_NAMES}$"
_APP_ERRORS = "(?:invalid_client|unauthorized_client|deleted_client|disabled_client)"
_APP = f"mailvia: {_NAMES} refused the {{whose}} OAuth app \\({_APP_ERRORS}\\){_TAIL}"
_UNASKED = (
    "no token is stored for this mailbox",
    "the OAuth app this mailbox was connected with is no longer set up",
    "no refresh token was granted",
)
_KINDS = (  # (kind, the whole text after `535 5.7.8 ` as mailvia wrote it)
    ("organization_app", _APP.format(whose="organization's")),
    ("operator_app", _APP.format(whose="operator's")),
    ("consent", f"mailvia: {_NAMES} no longer honours the consent \\([^()]*\\){_TAIL}"),
    ("not_asked", f"mailvia: (?:{'|'.join(_UNASKED)}){_TAIL}"),
)
_PATTERNS = [(kind, re.compile(pattern)) for kind, pattern in _KINDS]


def classify(text: str | None) -> str | None:
    """The kind of a stored failure (`mailvia: ...`) or state reason (`535 5.7.8 mailvia: ...`)."""
    said = (text or "").strip().removeprefix("535 5.7.8 ")
    return next((kind for kind, pattern in _PATTERNS if pattern.fullmatch(said)), None)


def upgrade() -> None:
    op.add_column("oauth_tokens", sa.Column("refusal", sa.Text))
    op.add_column("oauth_tokens", sa.Column("refused_app", sa.Text))
    op.add_column("channels", sa.Column("refusal", sa.Text))
    conn = op.get_bind()
    tokens = sa.table(
        "oauth_tokens", sa.column("channel_id"), sa.column("failure"), sa.column("refusal")
    )
    channels = sa.table(
        "channels",
        sa.column("id"),
        sa.column("state"),
        sa.column("state_reason"),
        sa.column("oauth_provider"),
        sa.column("refusal"),
    )
    failed = conn.execute(
        sa.select(tokens.c.channel_id, tokens.c.failure).where(tokens.c.failure.is_not(None))
    ).all()
    for row in failed:
        if (kind := classify(row.failure)) is not None:
            where = tokens.c.channel_id == row.channel_id
            conn.execute(tokens.update().where(where).values(refusal=kind))
    disconnected = conn.execute(
        sa.select(channels.c.id, channels.c.state_reason).where(
            channels.c.state == "disconnected", channels.c.oauth_provider.is_not(None)
        )
    ).all()
    for row in disconnected:
        if (kind := classify(row.state_reason)) is not None:
            conn.execute(channels.update().where(channels.c.id == row.id).values(refusal=kind))


def downgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("refusal")
    with op.batch_alter_table("oauth_tokens") as batch:
        batch.drop_column("refused_app")
        batch.drop_column("refusal")
