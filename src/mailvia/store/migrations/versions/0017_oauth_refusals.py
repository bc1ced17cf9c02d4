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
unclassified (NULL): such a channel is never brought back on its own. Whose app a refusal of
the app was is read from the data, not the words (before commit 69c13e2 the operator's app
was called the organization's): the organization's app when the tokens' client id is the
organization's app's for that provider, else the operator's. Their refused app's
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
_APP_ERRORS = frozenset(
    {"invalid_client", "unauthorized_client", "deleted_client", "disabled_client"}
)
_UNASKED = (
    "no token is stored for this mailbox",
    "the OAuth app this mailbox was connected with is no longer set up",
    "no refresh token was granted",
)
# Every wording mailvia's `consent_refused` and `not_connected` ever wrote (git history of
# domain/oauth.py and outbox/oauth/), as (kind, the whole text after `535 5.7.8 `), the
# provider's error in a group where there is one:
# - 6f82779: "{name} refused the grant ({error})", whatever the error;
# - then, until ae7297a: "{name} no longer honours the consent ({error})", whatever the error
#   (an app's error among them, before ae7297a named it);
# - ae7297a..69c13e2: "{name} refused the organization's OAuth app ({error})", whoever's app
#   it was (the operator's too: consent_refused had no source yet);
# - since 69c13e2: "... the organization's ..." or "... the operator's ...".
_ERROR = "\\(([^()]*)\\)"  # the provider's error, in parentheses
_KINDS = (
    (
        "app",
        f"mailvia: {_NAMES} refused the (?:organization's|operator's) OAuth app {_ERROR}{_TAIL}",
    ),
    ("consent", f"mailvia: {_NAMES} no longer honours the consent {_ERROR}{_TAIL}"),
    ("consent", f"mailvia: {_NAMES} refused the grant {_ERROR}{_TAIL}"),
    ("not_asked", f"mailvia: (?:{'|'.join(_UNASKED)}){_TAIL}"),
)
_PATTERNS = [(kind, re.compile(pattern)) for kind, pattern in _KINDS]


def classify(text: str | None) -> str | None:
    """What a stored failure (`mailvia: ...`) or state reason (`535 5.7.8 mailvia: ...`) says:
    `app` (the provider refused the app: whose is read from the data, `_whose`), `consent`,
    `not_asked`, or None (not one of mailvia's own texts)."""
    said = (text or "").strip().removeprefix("535 5.7.8 ")
    for kind, pattern in _PATTERNS:
        if (found := pattern.fullmatch(said)) is not None:
            error = found.group(1) if pattern.groups else None
            return "app" if kind == "app" or error in _APP_ERRORS else kind
    return None


def _whose(kind: str | None, client_id: str | None, org_client_id: str | None) -> str | None:
    """An app refusal's kind from the data, never the words (written before 69c13e2, the
    operator's app was called the organization's): the organization's app when the tokens'
    client is the organization's app's for that provider, else the operator's."""
    if kind != "app":
        return kind
    mine = client_id is not None and client_id == org_client_id
    return "organization_app" if mine else "operator_app"


def upgrade() -> None:
    op.add_column("oauth_tokens", sa.Column("refusal", sa.Text))
    op.add_column("oauth_tokens", sa.Column("refused_app", sa.Text))
    op.add_column("channels", sa.Column("refusal", sa.Text))
    conn = op.get_bind()
    tokens = sa.table(
        "oauth_tokens",
        sa.column("channel_id"),
        sa.column("provider"),
        sa.column("client_id"),
        sa.column("failure"),
        sa.column("refusal"),
    )
    channels = sa.table(
        "channels",
        sa.column("id"),
        sa.column("organization_id"),
        sa.column("state"),
        sa.column("state_reason"),
        sa.column("oauth_provider"),
        sa.column("refusal"),
    )
    apps = sa.table(
        "oauth_apps", sa.column("organization_id"), sa.column("provider"), sa.column("client_id")
    )
    app_of = sa.and_(
        apps.c.organization_id == channels.c.organization_id,
        apps.c.provider == channels.c.oauth_provider,
    )
    failed = conn.execute(
        sa.select(tokens.c.channel_id, tokens.c.failure, tokens.c.client_id, apps.c.client_id)
        .select_from(
            tokens.join(channels, channels.c.id == tokens.c.channel_id).outerjoin(apps, app_of)
        )
        .where(tokens.c.failure.is_not(None))
    ).all()
    for channel_id, failure, client_id, org_client_id in failed:
        if (kind := _whose(classify(failure), client_id, org_client_id)) is not None:
            where = tokens.c.channel_id == channel_id
            conn.execute(tokens.update().where(where).values(refusal=kind))
    disconnected = conn.execute(
        sa.select(channels.c.id, channels.c.state_reason, tokens.c.client_id, apps.c.client_id)
        .select_from(
            channels.outerjoin(tokens, tokens.c.channel_id == channels.c.id).outerjoin(apps, app_of)
        )
        .where(channels.c.state == "disconnected", channels.c.oauth_provider.is_not(None))
    ).all()
    for channel_id, reason, client_id, org_client_id in disconnected:
        if (kind := _whose(classify(reason), client_id, org_client_id)) is not None:
            where = channels.c.id == channel_id
            conn.execute(channels.update().where(where).values(refusal=kind))


def downgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("refusal")
    with op.batch_alter_table("oauth_tokens") as batch:
        batch.drop_column("refused_app")
        batch.drop_column("refusal")
