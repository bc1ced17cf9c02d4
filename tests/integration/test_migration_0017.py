"""Migration 0017 on SQLite and PostgreSQL: the reply texts mailvia stored for OAuth mailboxes
that got no token (their tokens' `failure`, their channel's `state_reason`) are classified once
into the refusal's kind, as data; a text that only looks like one, or a reason that is not an
OAuth refusal, stays unclassified."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from mailvia.domain.channel import Provider
from mailvia.domain.oauth import AppSource, consent_refused, not_connected
from mailvia.store import migrate
from mailvia.store.engine import create_engine
from support.rows import rows_of

T0 = 1_700_000_000.0
G, M = Provider.GOOGLE, Provider.MICROSOFT
ORG_CLIENT, OPERATOR_CLIENT = "org-client", "operator-client"
# (channel, its failure and state reason as mailvia wrote them, its tokens' client, the kind)
STORED = [
    ("ch_org", str(consent_refused(M, "invalid_client")), ORG_CLIENT, "organization_app"),
    (
        "ch_op",
        str(consent_refused(G, "deleted_client", AppSource.OPERATOR)),
        OPERATOR_CLIENT,
        "operator_app",
    ),
    # written between ae7297a and 69c13e2, when the operator's app was called the
    # organization's: whose it was is read from the tokens' client
    ("ch_was_op", str(consent_refused(G, "invalid_client")), OPERATOR_CLIENT, "operator_app"),
    ("ch_grant", str(consent_refused(G, "invalid_grant")), ORG_CLIENT, "consent"),
    # 6f82779's words for any refusal, and the consent's words for an app's error before
    # ae7297a named the app
    (
        "ch_first",
        "535 5.7.8 mailvia: Google refused the grant (invalid_grant): reconnect with Google",
        ORG_CLIENT,
        "consent",
    ),
    (
        "ch_first_app",
        "535 5.7.8 mailvia: Google refused the grant (invalid_client): reconnect with Google",
        OPERATOR_CLIENT,
        "operator_app",
    ),
    (
        "ch_consent_app",
        "535 5.7.8 mailvia: Google no longer honours the consent (unauthorized_client): "
        "reconnect with Google",
        ORG_CLIENT,
        "organization_app",
    ),
    ("ch_unasked", str(not_connected(M, "no refresh token was granted")), ORG_CLIENT, "not_asked"),
    ("ch_gone", str(not_connected(G)), ORG_CLIENT, "not_asked"),
    # a server's words quoting ours, and a reason that is not an OAuth refusal at all
    (
        "ch_quoted",
        "535 5.7.8 the server said: " + consent_refused(G, "invalid_client").text,
        ORG_CLIENT,
        None,
    ),
    (
        "ch_after",
        "535 5.7.8 mailvia: Google refused a freshly renewed token (535 5.7.8 no)",
        ORG_CLIENT,
        None,
    ),
]


def seed(url: str) -> None:
    migrate(url, revision="0016")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO organizations (id, name, fallback, created_at) "
            f"VALUES ('org_a', 'acme', 'hold', {T0})"
        )
        conn.execute(
            sa.text(
                "INSERT INTO oauth_apps (organization_id, provider, client_id, updated_at) "
                "VALUES ('org_a', 'google', :c, :t)"
            ),
            {"c": ORG_CLIENT, "t": T0},
        )
        for channel, reason, client, _ in STORED:
            conn.execute(
                sa.text(
                    "INSERT INTO channels (id, organization_id, name, kind, host, port, "
                    "security, auth, scope, has_password, domains, budgets, "
                    "max_recipients_per_message, max_connections, state, state_reason, "
                    "throttle_level, retry, timeouts, created_at, transport, oauth_provider) "
                    "VALUES (:id, 'org_a', :id, 'smtp', 'smtp.gmail.com', 587, 'starttls', "
                    "'xoauth2', 'address', false, '[]', '[]', 100, 1, 'disconnected', :r, 0, "
                    "'{}', '{}', :t, 'gmail_api', 'google')"
                ),
                {"id": channel, "r": reason, "t": T0},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO oauth_tokens (channel_id, provider, client_id, address, access, "
                    "scope, expires_at, obtained_at, version, failure) VALUES (:id, 'google', "
                    ":client, 'jane@acme.test', :blob, '', :t, :t, 1, :f)"
                ),
                {
                    "id": channel,
                    "client": client,
                    "blob": b"sealed",
                    "t": T0,
                    "f": reason.removeprefix("535 5.7.8 "),
                },
            )
        # an active mailbox and its good tokens: nothing to classify
        conn.execute(
            sa.text(
                "INSERT INTO channels (id, organization_id, name, kind, host, port, security, "
                "auth, scope, has_password, domains, budgets, max_recipients_per_message, "
                "max_connections, state, throttle_level, retry, timeouts, created_at, "
                "transport, oauth_provider) VALUES ('ch_fine', 'org_a', 'fine', 'smtp', "
                "'smtp.gmail.com', 587, 'starttls', 'xoauth2', 'address', false, '[]', '[]', "
                "100, 1, 'active', 0, '{}', '{}', :t, 'gmail_api', 'google')"
            ),
            {"t": T0},
        )
    engine.dispose()


def test_stored_refusals_are_classified_once_from_mailvias_own_words(store_url: str) -> None:
    seed(store_url)
    migrate(store_url)
    expected = {channel: kind for channel, _, _, kind in STORED}
    tokens = dict(rows_of(store_url, "SELECT channel_id, refusal FROM oauth_tokens"))
    assert tokens == expected
    channels = dict(rows_of(store_url, "SELECT id, refusal FROM channels"))
    assert channels == expected | {"ch_fine": None}
    assert {r for (r,) in rows_of(store_url, "SELECT refused_app FROM oauth_tokens")} == {None}


def test_the_downgrade_drops_the_columns(store_url: str) -> None:
    seed(store_url)
    migrate(store_url)
    migrate(store_url, revision="0016", downgrade=True)
    with pytest.raises(sa.exc.DBAPIError):
        rows_of(store_url, "SELECT refusal FROM oauth_tokens")
