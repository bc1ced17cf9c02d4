"""The fake providers' pure parts: HTTP fault specs, PKCE, consents and tokens on a stepped
clock, the MIME edits, XOAUTH2 responses, Microsoft tenants and resources."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailvia.testserver.fake import mime, providers
from mailvia.testserver.fake.tokens import Consent, Issued, Refusal, TokenStore, s256
from mailvia.testserver.faults import Drop, FaultRule, HttpFault, Stall, parse_fault
from mailvia.testserver.xoauth2 import client_response, decode_initial, parse_response


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        ("graph_send*1=429 retry-after=5", FaultRule("graph_send", HttpFault(429, None, 5), 1)),
        (
            "gmail_send=403 rateLimitExceeded",
            FaultRule("gmail_send", HttpFault(403, "rateLimitExceeded")),
        ),
        (
            "gmail_send=429 userRateLimitExceeded retry-after=30",
            FaultRule("gmail_send", HttpFault(429, "userRateLimitExceeded", 30)),
        ),
        ("token=invalid_grant", FaultRule("token", HttpFault(None, "invalid_grant"))),
        ("refresh*2=invalid_grant", FaultRule("refresh", HttpFault(None, "invalid_grant"), 2)),
        ("graph_send=503", FaultRule("graph_send", HttpFault(503))),
        ("userinfo=stall", FaultRule("userinfo", Stall())),
        ("revoke=stall:1.5", FaultRule("revoke", Stall(1.5))),
        ("authorize=drop", FaultRule("authorize", Drop())),
        ('authorize="access_denied"', FaultRule("authorize", HttpFault(None, "access_denied"))),
    ],
)
def test_parse_http_fault(spec: str, rule: FaultRule) -> None:
    assert parse_fault(spec) == rule


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("token=noreply", "take stall"),
        ("token=200", "bad fault action"),
        ("gmail_send=retry-after=5", "bad fault action"),
        ("gmail_send=", "bad fault action"),
        ("gmail_sent=503", "unknown stage"),
    ],
)
def test_parse_http_fault_rejects(spec: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_fault(spec)


def test_s256_matches_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CONSENT = Consent(
    id="",
    provider="microsoft",
    client_id="app",
    account="Rep@Acme.test",
    scopes=("openid", "offline_access", "Mail.Send"),
    offline=True,
)


def open_code(store: TokenStore, consent: Consent = CONSENT) -> str:
    _, code = store.open_consent(consent, redirect_uri="http://cb.test/", challenge=s256(VERIFIER))
    return code


def redeem(store: TokenStore, code: str, **changes: str) -> Issued | Refusal:
    args = {
        "provider": "microsoft",
        "code": code,
        "client_id": "app",
        "redirect_uri": "http://cb.test/",
        "verifier": VERIFIER,
        **changes,
    }
    return store.redeem(**args)


def issued(result: Issued | Refusal) -> Issued:
    assert isinstance(result, Issued), result
    return result


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"verifier": ""}, "verifier_missing"),
        ({"verifier": "x" * 43}, "verifier_mismatch"),
        ({"redirect_uri": "http://cb.test/other"}, "redirect_mismatch"),
        ({"client_id": "other"}, "client_mismatch"),
        ({"code": "nope"}, "code_unknown"),
        ({"provider": "google"}, "code_unknown"),
    ],
)
def test_a_code_is_checked(changes: dict[str, str], reason: str) -> None:
    store = TokenStore(clock=Clock())
    code = open_code(store)
    result = redeem(store, changes.pop("code", code), **changes)
    assert isinstance(result, Refusal) and result.reason == reason


def test_a_code_expires_after_ten_minutes() -> None:
    clock = Clock()
    store = TokenStore(clock=clock)
    late, in_time = open_code(store), open_code(store)
    clock.now += 599
    issued(redeem(store, in_time))
    clock.now += 1
    assert redeem(store, late) == Refusal("code_expired", store.consents()[0])


def test_a_reused_code_revokes_what_it_gave() -> None:
    store = TokenStore(clock=Clock())
    code = open_code(store)
    first = issued(redeem(store, code))
    again = redeem(store, code)
    assert isinstance(again, Refusal) and again.reason == "code_used"
    assert isinstance(store.check_access(first.access_token), Refusal)
    assert first.refresh_token is not None
    refused = store.refresh(
        provider="microsoft", refresh_token=first.refresh_token, client_id="app"
    )
    assert isinstance(refused, Refusal) and refused.reason == "consent_revoked"


@pytest.mark.parametrize("retire", [False, True])
def test_rotation_keeps_or_retires_the_old_refresh_token(retire: bool) -> None:
    store = TokenStore(clock=Clock(), retire_rotated=retire)
    old = issued(redeem(store, open_code(store))).refresh_token
    assert old is not None
    new = issued(store.refresh(provider="microsoft", refresh_token=old, client_id="app"))
    assert new.refresh_token not in (None, old)
    again = store.refresh(provider="microsoft", refresh_token=old, client_id="app")
    assert isinstance(again, Refusal) == retire
    assert store.refresh_counts() == {"rep@acme.test": 1 if retire else 2}


def test_without_rotation_the_refresh_answer_has_no_refresh_token() -> None:
    store = TokenStore(clock=Clock(), rotate={"microsoft": False})
    old = issued(redeem(store, open_code(store))).refresh_token
    assert old is not None
    assert (
        issued(
            store.refresh(provider="microsoft", refresh_token=old, client_id="app")
        ).refresh_token
        is None
    )


def test_expire_and_revoke_an_account() -> None:
    clock = Clock()
    store = TokenStore(clock=clock, token_lifetime=3600)
    tokens = issued(redeem(store, open_code(store)))
    other = issued(redeem(store, open_code(store, replace(CONSENT, account="x@y.test"))))
    assert store.expire_account("REP@acme.test") == 1
    assert store.check_access(tokens.access_token) == Refusal("token_expired", tokens.consent)
    assert store.revoke_account("rep@acme.test", "google") == 0
    assert store.revoke_account("rep@acme.test") == 1
    refused = store.check_access(tokens.access_token)
    assert isinstance(refused, Refusal) and refused.reason == "consent_revoked"
    clock.now += 3599
    assert not isinstance(store.check_access(other.access_token), Refusal)
    clock.now += 1
    assert store.check_access(other.access_token) == Refusal("token_expired", other.consent)


CRLF = (
    b'From: Rep <rep@acme.test>\r\nTo: a@x.test, "B, Jr" <b@x.test>\r\n'
    b"Bcc: hidden@x.test,\r\n secret@x.test\r\nCc: a@x.test\r\nSubject: hi\r\n\r\n"
    b"Bcc: not-a-header@x.test\r\n"
)


def test_recipients_come_from_to_cc_and_bcc_without_repeats() -> None:
    parsed = mime.parse(CRLF)
    assert parsed.from_addresses == ("rep@acme.test",)
    assert parsed.recipients == ("a@x.test", "b@x.test", "hidden@x.test", "secret@x.test")


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
def test_bcc_is_removed_with_its_folded_lines_and_nothing_else_changes(eol: bytes) -> None:
    raw = CRLF.replace(b"\r\n", eol)
    copy = mime.without_bcc(raw)
    assert copy == raw.replace(b"Bcc: hidden@x.test," + eol + b" secret@x.test" + eol, b"")
    assert copy.endswith(b"Bcc: not-a-header@x.test" + eol)


def test_with_from_replaces_only_the_from_field() -> None:
    copy = mime.with_from(CRLF, "rep@gmail.test")
    assert copy == CRLF.replace(b"From: Rep <rep@acme.test>", b"From: rep@gmail.test")
    assert (
        mime.with_from(b"To: a@x.test\n\nhi\n", "r@g.test")
        == b"From: r@g.test\nTo: a@x.test\n\nhi\n"
    )


def test_xoauth2_client_response_round_trips() -> None:
    response = decode_initial(client_response("rep@acme.test", "ya29.token"))
    assert response is not None
    assert (response.user, response.token) == ("rep@acme.test", "ya29.token")


@pytest.mark.parametrize(
    "blob",
    [b"user=a@b\x01auth=Basic x\x01\x01", b"auth=Bearer x\x01\x01", b"user=a@b\x01\x01", b"\xff"],
)
def test_malformed_xoauth2_responses(blob: bytes) -> None:
    assert parse_response(blob) is None
    assert decode_initial("not base64!") is None


@pytest.mark.parametrize(
    ("tenant", "tid"),
    [
        ("common", providers.FAKE_TENANT),
        ("organizations", providers.FAKE_TENANT),
        ("contoso.onmicrosoft.com", providers.FAKE_TENANT),
        ("consumers", providers.CONSUMER_TENANT),
        ("0A1B2C3D-0000-4000-8000-00000000000A", "0a1b2c3d-0000-4000-8000-00000000000a"),
        ("nonsense", None),
    ],
)
def test_tenants(tenant: str, tid: str | None) -> None:
    assert providers.tenant_id(tenant) == tid


def test_microsoft_resources_of_scopes() -> None:
    graph = ("openid", "offline_access", "Mail.Send", "https://graph.microsoft.com/User.Read")
    assert providers.microsoft_resources(graph) == {"https://graph.microsoft.com"}
    both = ("Mail.Send", "https://outlook.office.com/SMTP.Send")
    assert len(providers.microsoft_resources(both)) == 2
