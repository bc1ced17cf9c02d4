"""OAuth mailboxes in the pure core: which transports and scopes fit which provider, and the
fields an OAuth channel must have."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailvia.domain.channel import (
    Auth,
    Channel,
    ChannelState,
    Kind,
    Owner,
    Provider,
    Scope,
    Security,
    TransportKind,
    check_channel,
)
from mailvia.domain.errors import InvalidChannel, InvalidInput
from mailvia.domain.oauth import (
    AppSource,
    Refusal,
    TokenSet,
    basic_auth_off,
    basic_auth_refused,
    consent_refused,
    expected_issuer,
    not_connected,
    oauth_offer,
    refused_after_renewal,
    refused_app,
    scopes_for,
    token_unavailable,
)

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


def test_a_short_lived_token_is_due_at_half_its_life_not_at_once() -> None:
    short = TokenSet("t", expires_at=1060.0, obtained_at=1000.0)  # a minute's life
    assert not short.due(1029.0) and short.due(1030.0)
    long = TokenSet("t", expires_at=4600.0, obtained_at=1000.0)  # an hour: five minutes ahead
    assert not long.due(4299.0) and long.due(4300.0)


@pytest.mark.parametrize(
    ("provider", "authorize", "tid", "issuer"),
    [
        (
            Provider.GOOGLE,
            "https://accounts.google.com/o/oauth2/v2/auth",
            None,
            "https://accounts.google.com",
        ),
        (Provider.GOOGLE, "http://127.0.0.1:9000/o/oauth2/v2/auth", None, "http://127.0.0.1:9000"),
        (
            Provider.MICROSOFT,
            "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
            "9188040d-6c67-4c5b-b112-36a304b66dad",
            "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
        ),
        (
            Provider.MICROSOFT,
            "http://127.0.0.1:9000/{tenant}/oauth2/v2.0/authorize",
            "tid-1",
            "http://127.0.0.1:9000/tid-1/v2.0",
        ),
    ],
)
def test_the_id_tokens_issuer_follows_the_authorize_url(
    provider: Provider, authorize: str, tid: str | None, issuer: str
) -> None:
    assert expected_issuer(provider, authorize, tid) == issuer


@pytest.mark.parametrize(
    ("reason", "off"),
    [
        ("535 5.7.139 Authentication unsuccessful, basic authentication is disabled.", True),
        ("535 5.7.3 Authentication unsuccessful", True),
        ("550 5.7.30 Basic authentication is not supported for Client Submission", True),
        ("535 5.7.8 Username and Password not accepted", False),
        ("451 4.4.2 mailvia: connection refused", False),
        ("", False),
    ],
)
def test_which_replies_mean_password_sign_in_is_off(reason: str, off: bool) -> None:
    assert basic_auth_refused(reason) is off
    password = replace(
        MAILBOX,
        oauth=None,
        transport=TransportKind.SMTP,
        auth=Auth.LOGIN,
        preset="microsoft365",
        state=ChannelState.DISCONNECTED,
        state_reason=reason,
    )
    assert basic_auth_off(password) is off
    assert oauth_offer(password) is Provider.MICROSOFT
    assert basic_auth_off(replace(password, state=ChannelState.ACTIVE)) is False


def test_only_a_password_mailbox_of_a_provider_is_offered_oauth() -> None:
    assert oauth_offer(MAILBOX) is None  # already an OAuth mailbox
    gmail = replace(MAILBOX, oauth=None, transport=TransportKind.SMTP, auth=Auth.PLAIN)
    assert oauth_offer(replace(gmail, preset="gmail")) is Provider.GOOGLE
    assert oauth_offer(replace(gmail, preset="sparkpost")) is None
    # Added by hand (no preset): its host says whose mailbox it is.
    assert oauth_offer(replace(gmail, preset=None)) is Provider.GOOGLE
    by_hand = replace(gmail, preset=None, host="SMTP.Office365.com.")
    assert oauth_offer(by_hand) is Provider.MICROSOFT
    assert oauth_offer(replace(gmail, preset=None, host="smtp-relay.gmail.com")) is None


def test_replies_when_no_token_can_be_had_say_what_to_do() -> None:
    refused = consent_refused(Provider.GOOGLE, "invalid_grant")
    assert (refused.code, refused.enhanced) == (535, "5.7.8")
    assert refused.text.endswith("(invalid_grant): reconnect with Google")
    again = refused_after_renewal(Provider.MICROSOFT, refused)
    assert again.code == 535 and again.text.endswith("reconnect with Microsoft 365")
    assert not_connected(Provider.GOOGLE).code == 535
    later = token_unavailable("Google answered HTTP 503")
    assert (later.code, later.enhanced) == (451, "4.4.2")


def test_a_microsoft_tenant_refusal_names_every_kind_accepted() -> None:
    from mailvia.outbox.oauth.apps import _check_tenant

    for tenant in ("common", "organizations", "contoso.onmicrosoft.com"):
        assert _check_tenant(Provider.MICROSOFT, tenant) == tenant
    with pytest.raises(InvalidInput) as refused:
        _check_tenant(Provider.MICROSOFT, "not a tenant")
    assert "organizations or common" in str(refused.value)  # `common` was left unsaid


def test_only_mailvias_own_app_refusal_is_read_as_one_and_it_names_whose_app() -> None:
    """The decision is exact: the reply `consent_refused` builds (or the state reason it
    becomes), never a server's text that quotes or mimics it, nor a refused consent."""
    org = consent_refused(Provider.MICROSOFT, "invalid_client")
    operator = consent_refused(Provider.GOOGLE, "deleted_client", AppSource.OPERATOR)
    assert refused_app(org) is AppSource.ORGANIZATION
    assert refused_app(str(operator)) is AppSource.OPERATOR
    assert refused_app(f"  {operator}\n") is AppSource.OPERATOR
    assert refused_app(consent_refused(Provider.GOOGLE, "invalid_grant")) is None
    quoted = f"535 5.7.8 the server said: {operator.text}"
    assert refused_app(quoted) is None and refused_app(f"{operator} (and more)") is None
    assert refused_app(None) is None and refused_app("") is None


def test_mailvias_replies_carry_the_refusals_kind_as_data() -> None:
    """The kind rides with the reply (and is stored with it), so nothing reads it back from
    the words: whether the provider was asked, and whose app it refused."""
    kinds = {
        consent_refused(Provider.GOOGLE, "invalid_grant"): Refusal.CONSENT,
        consent_refused(Provider.MICROSOFT, "invalid_client"): Refusal.ORGANIZATION_APP,
        consent_refused(Provider.GOOGLE, "deleted_client", AppSource.OPERATOR): (
            Refusal.OPERATOR_APP
        ),
        not_connected(Provider.GOOGLE, "no refresh token was granted"): Refusal.NOT_ASKED,
        not_connected(Provider.MICROSOFT): Refusal.NOT_ASKED,
    }
    for reply, kind in kinds.items():
        assert reply.refusal is kind
    assert [k.asked for k in Refusal] == [True, True, True, False]
    assert [k.app for k in Refusal] == [None, AppSource.ORGANIZATION, AppSource.OPERATOR, None]
