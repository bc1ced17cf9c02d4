"""The fake Google and Microsoft over real HTTP on 127.0.0.1: the code flow with PKCE, ID
tokens against the JWKS, refresh and rotation, revocation, userinfo, client checks, the log."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailvia.testserver.fake import ClientApp, FakeOptions, FakeProviders, fingerprint
from mailvia.testserver.fake.providers import FAKE_TENANT
from support.fake_providers import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    auth_params,
    connect,
    consent,
    endpoint,
    exchange,
    pkce,
    redirect_params,
    refresh,
    running,
)

PROVIDERS = ["google", "microsoft"]
TENANT_ID = "0a1b2c3d-0000-4000-8000-00000000000a"


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(token: str, jwks_url: str) -> dict[str, Any]:
    """The claims of an RS256 JWT whose signature checks against the key named by its kid."""
    head, body, signature = token.split(".")
    header = json.loads(b64d(head))
    assert header["alg"] == "RS256"
    keys = httpx.get(jwks_url).json()["keys"]
    [key] = [k for k in keys if k["kid"] == header["kid"]]
    numbers = rsa.RSAPublicNumbers(
        int.from_bytes(b64d(key["e"]), "big"), int.from_bytes(b64d(key["n"]), "big")
    )
    numbers.public_key().verify(
        b64d(signature), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    claims: dict[str, Any] = json.loads(b64d(body))
    return claims


def gmail_send(fake: FakeProviders, token: str) -> httpx.Response:
    raw = base64.urlsafe_b64encode(b"From: rep@acme.test\r\nTo: a@x.test\r\n\r\nhi\r\n").decode()
    url = fake.settings["MAILVIA_GMAIL_API_URL"] + "/gmail/v1/users/me/messages/send"
    return httpx.post(url, json={"raw": raw}, headers={"Authorization": f"Bearer {token}"})


def graph_send(fake: FakeProviders, token: str) -> httpx.Response:
    mime = base64.b64encode(b"From: ms@acme.test\r\nTo: a@x.test\r\n\r\nhi\r\n")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
    return httpx.post(
        fake.settings["MAILVIA_GRAPH_API_URL"] + "/me/sendMail", content=mime, headers=headers
    )


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[FakeProviders]:
    """A fake that knows its clients (so it checks ids and secrets)."""
    clients = (
        ClientApp("google", CLIENT_ID, CLIENT_SECRET),
        ClientApp("microsoft", CLIENT_ID, CLIENT_SECRET),
    )
    yield from running(tmp_path / "mail", options=FakeOptions(clients=clients))


# -- the code flow ---------------------------------------------------------------------------


def test_google_code_flow_gives_tokens_and_an_id_token_signed_by_the_jwks(
    fake_providers: FakeProviders,
) -> None:
    pair = pkce()
    page = httpx.get(
        endpoint(fake_providers, "google", "authorize"),
        params=auth_params("google", pair, login_hint="rep@acme.test"),
    )
    assert page.status_code == 200 and 'value="rep@acme.test"' in page.text
    assert "https://www.googleapis.com/auth/gmail.send" in page.text and "Allow" in page.text
    params = auth_params("google", pair)
    answer = redirect_params(consent(fake_providers, "google", params, account="rep@acme.test"))
    assert answer["state"] == "st-1" and "gmail.send" in answer["scope"]
    tokens = exchange(fake_providers, "google", answer["code"], pair.verifier).json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    assert tokens["access_token"].startswith("ya29.") and tokens["refresh_token"]
    assert tokens["scope"].split() == [
        "openid",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/gmail.send",
    ]
    claims = verify(tokens["id_token"], fake_providers.settings["MAILVIA_OAUTH_GOOGLE_JWKS_URL"])
    assert claims["iss"] == fake_providers.origin
    assert claims["aud"] == CLIENT_ID and claims["nonce"] == params["nonce"]
    assert claims["email"] == "rep@acme.test" and claims["email_verified"] is True
    assert claims["sub"].isdigit() and claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize(("tenant", "tid"), [("common", FAKE_TENANT), (TENANT_ID, TENANT_ID)])
def test_microsoft_code_flow_gives_a_v2_id_token_for_the_tenant(
    fake_providers: FakeProviders, tenant: str, tid: str
) -> None:
    tokens = connect(fake_providers, "microsoft", "ms@acme.test", tenant=tenant)
    assert tokens["scope"].split() == ["openid", "email", "profile", "Mail.Send"]
    assert tokens["ext_expires_in"] == tokens["expires_in"] == 3600 and tokens["refresh_token"]
    jwks = endpoint(fake_providers, "microsoft", "jwks", tenant)
    claims = verify(tokens["id_token"], jwks)
    assert claims["iss"] == f"{fake_providers.origin}/{tid}/v2.0" and claims["tid"] == tid
    assert claims["ver"] == "2.0" and claims["aud"] == CLIENT_ID
    assert claims["email"] == claims["preferred_username"] == "ms@acme.test"
    assert claims["oid"] and claims["sub"] and claims["nonce"] == "n-0S6_WzA2Mj"
    google = fake_providers.settings["MAILVIA_OAUTH_GOOGLE_JWKS_URL"]
    with pytest.raises((InvalidSignature, ValueError)):
        verify(tokens["id_token"], google)  # another provider's key does not fit


def test_id_token_claims_follow_the_scopes(fake_providers: FakeProviders) -> None:
    ms = connect(fake_providers, "microsoft", "ms@acme.test", scope="openid Mail.Send")
    claims = json.loads(b64d(ms["id_token"].split(".")[1]))
    assert "email" not in claims and "preferred_username" not in claims
    assert "refresh_token" not in ms  # no offline_access
    google = connect(
        fake_providers,
        "google",
        "rep@acme.test",
        scope="https://www.googleapis.com/auth/gmail.send",
    )
    assert "id_token" not in google  # no openid


@pytest.mark.parametrize("provider", PROVIDERS)
def test_deny_redirects_with_access_denied_and_the_state(
    fake_providers: FakeProviders, provider: str
) -> None:
    params = auth_params(provider, pkce(), state="keep-me")
    answer = redirect_params(
        consent(fake_providers, provider, params, account="a@b.test", decision="deny")
    )
    assert answer["error"] == "access_denied" and answer["state"] == "keep-me"
    assert "code" not in answer


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": ""}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"scope": ""}, "invalid_request"),
        ({"redirect_uri": ""}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ],
)
def test_bad_authorization_requests_get_an_error_page(
    fake_providers: FakeProviders, provider: str, change: dict[str, str], error: str
) -> None:
    params = {**auth_params(provider, pkce()), **change}
    page = httpx.get(endpoint(fake_providers, provider, "authorize"), params=params)
    assert page.status_code == 400 and error in page.text
    posted = consent(fake_providers, provider, params, account="a@b.test")
    assert posted.status_code == 400 and "location" not in posted.headers
    assert fake_providers.consents() == []


def test_microsoft_refuses_an_unknown_tenant_and_scopes_of_two_resources(
    fake_providers: FakeProviders,
) -> None:
    params = auth_params("microsoft", pkce())
    page = httpx.get(endpoint(fake_providers, "microsoft", "authorize", "no-such"), params=params)
    assert page.status_code == 400 and "AADSTS90002" in page.text
    params["scope"] = "Mail.Send https://outlook.office.com/SMTP.Send offline_access"
    page = httpx.get(endpoint(fake_providers, "microsoft", "authorize"), params=params)
    assert page.status_code == 400 and "AADSTS28000" in page.text


# -- the token endpoint ----------------------------------------------------------------------


def code_for(fake: FakeProviders, provider: str) -> tuple[str, str]:
    pair = pkce()
    answer = redirect_params(
        consent(fake, provider, auth_params(provider, pair), account="r@a.test")
    )
    return answer["code"], pair.verifier


@pytest.mark.parametrize(
    ("provider", "error", "detail"),
    [("google", "invalid_grant", "Invalid code verifier."), ("microsoft", "invalid_grant", 501481)],
)
def test_a_wrong_verifier_is_refused(
    fake_providers: FakeProviders, provider: str, error: str, detail: str | int
) -> None:
    code, verifier = code_for(fake_providers, provider)
    refused = exchange(fake_providers, provider, code, pkce().verifier)
    body = refused.json()
    assert refused.status_code == 400 and body["error"] == error
    if provider == "google":
        assert body["error_description"] == detail
    else:
        assert body["error_codes"] == [detail] and body["error_description"].startswith("AADSTS")
        assert {"trace_id", "correlation_id", "timestamp", "error_uri"} <= body.keys()
    assert exchange(fake_providers, provider, code, verifier).status_code == 200


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_reused_code_is_refused_and_revokes_the_tokens_it_gave(
    fake_providers: FakeProviders, provider: str
) -> None:
    code, verifier = code_for(fake_providers, provider)
    tokens = exchange(fake_providers, provider, code, verifier).json()
    again = exchange(fake_providers, provider, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    send = gmail_send if provider == "google" else graph_send
    assert send(fake_providers, tokens["access_token"]).status_code == 401
    renewed = refresh(fake_providers, provider, tokens["refresh_token"])
    assert renewed.status_code == 400 and renewed.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("provider", "error"), [("google", "redirect_uri_mismatch"), ("microsoft", "invalid_grant")]
)
def test_a_different_redirect_uri_is_refused(
    fake_providers: FakeProviders, provider: str, error: str
) -> None:
    code, verifier = code_for(fake_providers, provider)
    other = REDIRECT_URI + "/other"
    refused = exchange(fake_providers, provider, code, verifier, redirect_uri=other)
    assert refused.status_code == 400 and refused.json()["error"] == error


def test_a_missing_verifier_is_refused(fake_providers: FakeProviders) -> None:
    code, _ = code_for(fake_providers, "google")
    refused = exchange(fake_providers, "google", code, "")
    assert refused.json() == {
        "error": "invalid_grant",
        "error_description": "Missing code verifier.",
    }


class SteppedClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_codes_expire_after_ten_minutes_and_tokens_after_their_lifetime(tmp_path: Path) -> None:
    clock = SteppedClock()
    options = FakeOptions(token_lifetime=120)
    for fake in running(tmp_path / "mail", options=options, clock=clock):
        code, verifier = code_for(fake, "microsoft")
        clock.now += 601
        refused = exchange(fake, "microsoft", code, verifier).json()
        assert refused["error_codes"] == [70008]
        tokens = connect(fake, "microsoft", "ms@acme.test")
        assert tokens["expires_in"] == 120
        clock.now += 119
        assert graph_send(fake, tokens["access_token"]).status_code == 202
        clock.now += 1
        expired = graph_send(fake, tokens["access_token"])
        assert expired.status_code == 401
        assert (
            expired.json()["error"]["message"]
            == "Lifetime validation failed, the token is expired."
        )


# -- refresh ---------------------------------------------------------------------------------


def test_google_refresh_keeps_the_refresh_token_microsoft_rotates_it(
    fake_providers: FakeProviders,
) -> None:
    google = connect(fake_providers, "google", "rep@acme.test")
    renewed = refresh(fake_providers, "google", google["refresh_token"]).json()
    assert "refresh_token" not in renewed and renewed["access_token"] != google["access_token"]
    assert "nonce" not in json.loads(b64d(renewed["id_token"].split(".")[1]))
    assert refresh(fake_providers, "google", google["refresh_token"]).status_code == 200
    ms = connect(fake_providers, "microsoft", "ms@acme.test")
    rotated = refresh(fake_providers, "microsoft", ms["refresh_token"]).json()
    assert rotated["refresh_token"] not in ("", ms["refresh_token"])
    assert refresh(fake_providers, "microsoft", rotated["refresh_token"]).status_code == 200
    assert refresh(fake_providers, "microsoft", ms["refresh_token"]).status_code == 200  # kept
    assert gmail_send(fake_providers, renewed["access_token"]).status_code == 200
    assert fake_providers.refresh_counts() == {"rep@acme.test": 2, "ms@acme.test": 3}


def test_rotation_is_switched_per_provider_and_old_tokens_can_be_retired(tmp_path: Path) -> None:
    options = FakeOptions(
        rotate_refresh_tokens={"google": True, "microsoft": False},
        retire_rotated_refresh_tokens=True,
    )
    for fake in running(tmp_path / "mail", options=options):
        google = connect(fake, "google", "rep@acme.test")
        rotated = refresh(fake, "google", google["refresh_token"]).json()["refresh_token"]
        old = refresh(fake, "google", google["refresh_token"])
        assert old.json() == {
            "error": "invalid_grant",
            "error_description": "Token has been expired or revoked.",
        }
        assert refresh(fake, "google", rotated).status_code == 200
        ms = connect(fake, "microsoft", "ms@acme.test")
        assert "refresh_token" not in refresh(fake, "microsoft", ms["refresh_token"]).json()


def test_google_gives_a_refresh_token_only_offline_and_at_the_first_consent(
    fake_providers: FakeProviders,
) -> None:
    online = connect(fake_providers, "google", "rep@acme.test", access_type="online")
    assert "refresh_token" not in online
    first = connect(fake_providers, "google", "rep@acme.test")
    assert first["refresh_token"]
    assert "refresh_token" not in connect(fake_providers, "google", "rep@acme.test")
    again = connect(fake_providers, "google", "rep@acme.test", prompt="consent")
    assert again["refresh_token"]


# -- revocation and userinfo -----------------------------------------------------------------


def test_google_revoke_kills_the_whole_grant(fake_providers: FakeProviders) -> None:
    tokens = connect(fake_providers, "google", "rep@acme.test")
    revoke_url = fake_providers.settings["MAILVIA_OAUTH_GOOGLE_REVOKE_URL"]
    assert httpx.post(revoke_url, data={"token": tokens["refresh_token"]}).status_code == 200
    refused = refresh(fake_providers, "google", tokens["refresh_token"])
    assert refused.json()["error_description"] == "Token has been expired or revoked."
    sent = gmail_send(fake_providers, tokens["access_token"])
    assert sent.status_code == 401 and sent.json()["error"]["status"] == "UNAUTHENTICATED"
    again = httpx.post(revoke_url, data={"token": tokens["access_token"]})
    assert again.status_code == 400 and again.json()["error"] == "invalid_token"


def test_the_control_surface_revokes_and_expires_an_account(fake_providers: FakeProviders) -> None:
    ms = connect(fake_providers, "microsoft", "ms@acme.test")
    google = connect(fake_providers, "google", "rep@acme.test")
    origin = fake_providers.origin
    expired = httpx.post(origin + "/_fake/expire", json={"account": "MS@acme.test"}).json()
    assert expired == {"expired": 1}
    answer = graph_send(fake_providers, ms["access_token"])
    assert answer.status_code == 401 and "WWW-Authenticate" in answer.headers
    assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"
    renewed = refresh(fake_providers, "microsoft", ms["refresh_token"]).json()
    assert graph_send(fake_providers, renewed["access_token"]).status_code == 202
    revoked = httpx.post(origin + "/_fake/revoke", json={"account": "ms@acme.test"}).json()
    assert revoked == {"revoked": 1}
    refused = refresh(fake_providers, "microsoft", renewed["refresh_token"]).json()
    assert refused["error"] == "invalid_grant" and refused["error_codes"] == [50173]
    assert "TokensRevoked" in graph_send(fake_providers, renewed["access_token"]).text
    assert gmail_send(fake_providers, google["access_token"]).status_code == 200  # another account
    fake_providers.expire("rep@acme.test")
    expired = gmail_send(fake_providers, google["access_token"])
    assert (
        expired.status_code == 401 and expired.json()["error"]["errors"][0]["reason"] == "authError"
    )
    bad = httpx.post(origin + "/_fake/revoke", json={"account": "x", "provider": "yahoo"})
    assert bad.status_code == 400


def test_userinfo_answers_with_the_google_account(fake_providers: FakeProviders) -> None:
    url = fake_providers.settings["MAILVIA_OAUTH_GOOGLE_USERINFO_URL"]
    tokens = connect(fake_providers, "google", "rep@acme.test")
    info = httpx.get(url, headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    claims = json.loads(b64d(tokens["id_token"].split(".")[1]))
    assert info == {"sub": claims["sub"], "email": "rep@acme.test", "email_verified": True}
    ms = connect(fake_providers, "microsoft", "ms@acme.test")
    for token in (ms["access_token"], "ya29.unknown"):
        refused = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_request"


# -- clients ---------------------------------------------------------------------------------


def test_known_clients_are_checked(strict: FakeProviders) -> None:
    params = auth_params("google", pkce(), client_id="someone-else")
    page = httpx.get(endpoint(strict, "google", "authorize"), params=params)
    assert page.status_code == 401 and "invalid_client" in page.text
    code, verifier = code_for(strict, "google")
    wrong = exchange(strict, "google", code, verifier, client_secret="nope")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    basic = httpx.post(
        endpoint(strict, "google", "token"),
        auth=(CLIENT_ID, CLIENT_SECRET),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": REDIRECT_URI,
        },
    )
    assert basic.status_code == 200
    code, verifier = code_for(strict, "microsoft")
    wrong = exchange(strict, "microsoft", code, verifier, client_secret="nope").json()
    assert wrong["error"] == "invalid_client" and wrong["error_codes"] == [7000215]


def test_any_client_is_accepted_when_none_is_configured(fake_providers: FakeProviders) -> None:
    code, verifier = code_for(fake_providers, "google")
    response = exchange(fake_providers, "google", code, verifier, client_secret="")
    assert response.status_code == 200


# -- the request log -------------------------------------------------------------------------


def test_the_request_log_names_the_grant_and_a_fingerprint_of_the_token(
    fake_providers: FakeProviders,
) -> None:
    tokens = connect(fake_providers, "google", "rep@acme.test")
    gmail_send(fake_providers, tokens["access_token"])
    logged = httpx.get(fake_providers.origin + "/_fake/requests").json()
    assert [(r["method"], r["path"], r["status"], r["stage"]) for r in logged] == [
        ("POST", "/o/oauth2/v2/auth", 302, "authorize"),
        ("POST", "/token", 200, "token"),
        ("POST", "/gmail/v1/users/me/messages/send", 200, "gmail_send"),
    ]
    assert {r["consent"] for r in logged} == {"c1"} and {r["provider"] for r in logged} == {
        "google"
    }
    assert logged[2]["token"] == logged[1]["token"] == fingerprint(tokens["access_token"])
    assert all(tokens["access_token"] not in json.dumps(r) for r in logged)
    assert logged[0]["at"] <= logged[1]["at"] <= logged[2]["at"]


def test_the_control_surface_lists_settings_consents_refreshes_and_mail(
    fake_providers: FakeProviders,
) -> None:
    origin = fake_providers.origin + "/_fake/"
    tokens = connect(fake_providers, "google", "rep@acme.test")
    refresh(fake_providers, "google", tokens["refresh_token"])
    gmail_send(fake_providers, tokens["access_token"])
    index = httpx.get(origin).json()
    assert index["settings"] == fake_providers.settings and origin + "faults" in [
        fake_providers.origin + path for path in index["control"]
    ]
    [listed] = httpx.get(origin + "consents").json()
    assert listed["id"] == "c1" and listed["account"] == "rep@acme.test"
    assert listed["offline"] is True and listed["revoked"] is False
    assert httpx.get(origin + "refreshes").json() == {"rep@acme.test": 1}
    [record] = httpx.get(origin + "received").json()
    assert record["via"] == "gmail_api" and "content" not in record
    assert all(not r["path"].startswith("/_fake/") for r in fake_providers.requests)
