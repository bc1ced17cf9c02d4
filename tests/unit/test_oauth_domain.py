"""OAuth mailboxes in the pure core: which transports and scopes fit which provider, and the
fields an OAuth channel must have."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailvia.domain.channel import (
    Auth,
    Channel,
    Kind,
    Owner,
    Provider,
    Scope,
    Security,
    TransportKind,
    check_channel,
)
from mailvia.domain.errors import InvalidChannel, InvalidInput
from mailvia.domain.oauth import TokenSet, scopes_for

MAILBOX = Channel(
    id="ch_1",
    organization_id="org_1",
    name="jane-gmail",
    kind=Kind.SMTP,
    host="smtp.gmail.com",
    port=587,
    security=Security.STARTTLS,
    auth=Auth.XOAUTH2,
    scope=Scope.ADDRESS,
    owner=Owner(user_id="usr_1"),
    address="jane@acme.test",
    oauth=Provider.GOOGLE,
    transport=TransportKind.GMAIL_API,
)


@pytest.mark.parametrize(
    ("provider", "transport", "needed"),
    [
        (Provider.GOOGLE, TransportKind.GMAIL_API, "https://www.googleapis.com/auth/gmail.send"),
        (Provider.GOOGLE, TransportKind.SMTP, "https://mail.google.com/"),
        (Provider.MICROSOFT, TransportKind.GRAPH, "https://graph.microsoft.com/Mail.Send"),
        (Provider.MICROSOFT, TransportKind.SMTP, "https://outlook.office.com/SMTP.Send"),
    ],
)
def test_each_transport_asks_for_its_own_scope(
    provider: Provider, transport: TransportKind, needed: str
) -> None:
    scopes = scopes_for(provider, transport)
    assert needed in scopes and "openid" in scopes and "email" in scopes
    assert ("offline_access" in scopes) is (provider is Provider.MICROSOFT)
    assert "https://mail.google.com/" not in scopes_for(Provider.GOOGLE, TransportKind.GMAIL_API)


def test_a_provider_api_the_provider_lacks_is_refused() -> None:
    with pytest.raises(InvalidInput, match="gmail_api"):
        scopes_for(Provider.GOOGLE, TransportKind.GRAPH)


def test_an_oauth_mailbox_fits_together() -> None:
    check_channel(MAILBOX)
    check_channel(replace(MAILBOX, transport=TransportKind.SMTP))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"transport": TransportKind.GRAPH}, "sends by gmail_api or smtp"),
        ({"oauth": None}, "only a mailbox connected by OAuth"),
        ({"auth": Auth.PLAIN, "username": "jane"}, "signs in with xoauth2"),
        (
            {"scope": Scope.DOMAIN, "domains": ("acme.test",), "owner": Owner(team_id="t")},
            "address-scoped",
        ),
    ],
)
def test_an_oauth_mailbox_that_does_not_fit_is_refused(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidChannel, match=message):
        check_channel(replace(MAILBOX, **changes))  # type: ignore[arg-type]


def test_a_token_is_due_five_minutes_before_it_expires() -> None:
    tokens = TokenSet("secret-access", expires_at=1000.0, refresh_token="secret-refresh")
    assert not tokens.due(699.0)
    assert tokens.due(700.0)
    assert "secret" not in repr(tokens)
