"""The test-connection hints table and certificate summary (domain/probe.py): pure lookups."""

from __future__ import annotations

import pytest

from mailvia.domain.oauth import Provider, consent_refused, refused_after_renewal
from mailvia.domain.probe import (
    HINTS,
    NO_PASSWORD_STORED,
    ProbeFailure,
    ProbeReport,
    ProbeStep,
    describe_certificate,
    fix_for_reason,
    hint_for,
)
from mailvia.domain.replies import Reply
from mailvia.transport.smtp_errors import NO_CREDENTIALS
from mailvia.web.wording import reply_words


@pytest.mark.parametrize(
    ("code", "enhanced", "expected"),
    [
        (535, "5.7.8", "Wrong user name or password"),
        (535, "5.7.139", "SMTP AUTH is disabled for this mailbox or tenant"),
        (535, "5.7.3", "Microsoft 365 refused the sign-in"),
        (535, None, "check the user name and password"),
        (535, "5.7.0", "check the user name and password"),  # the code alone
        (534, "5.7.9", "An app password is required"),
        (550, "5.7.30", "connect with OAuth instead"),
        (530, "5.7.57", "not authenticated to send mail"),
        (538, "5.7.11", "requires encryption"),
        (454, "4.7.0", "wait a few minutes"),
        (451, "4.3.0", "A temporary refusal"),  # the class digit
        (554, "5.7.1", "The server refused this step"),
    ],
)
def test_hint_by_reply(code: int, enhanced: str | None, expected: str) -> None:
    assert expected in hint_for(Reply(code, enhanced, "text"))


def test_every_failure_kind_has_a_hint() -> None:
    for failure in ProbeFailure:
        assert hint_for(failure=failure) == HINTS[failure]


def test_report_is_ok_only_when_every_step_passed() -> None:
    good = ProbeStep("resolve", True, "fine")
    bad = ProbeStep("connect", False, "refused", None, "hint")
    assert ProbeReport.of([good]).ok and ProbeReport.of([good]).failed is None
    assert not ProbeReport.of([good, bad]).ok and ProbeReport.of([good, bad]).failed == bad
    assert not ProbeReport.of([]).ok


def test_certificate_summary() -> None:
    cert = {
        "subject": ((("organizationName", "Example"),), (("commonName", "smtp.example.com"),)),
        "subjectAltName": (("DNS", "smtp.example.com"), ("DNS", "mail.example.com")),
        "notAfter": "Jan 31 12:00:00 2030 GMT",
    }
    now = 1_893_456_000.0  # 2030-01-01 00:00 UTC
    assert describe_certificate(cert, now) == (
        "certificate CN=smtp.example.com (DNS:smtp.example.com, DNS:mail.example.com), "
        "valid until 2030-01-31 12:00 UTC (30 days)"
    )
    assert describe_certificate({}, now) == "certificate without a subject"


def test_own_sign_in_refusals_do_not_blame_a_password() -> None:
    """A revoked OAuth consent (or a channel with no password stored) is mailvia's own 535
    5.7.8: the rep is told to reconnect, not to check a password they never gave. The API's
    state_hint (fix_for_reason) and the pages (reply_words) both say so."""
    revoked = consent_refused(Provider.GOOGLE, "invalid_grant")
    for said in (
        hint_for(revoked),
        fix_for_reason(str(revoked)),
        reply_words(revoked).sentence,
        hint_for(refused_after_renewal(Provider.MICROSOFT, Reply(535, "5.7.3", "no"))),
    ):
        assert said is not None and "Reconnect with" in said and "password changed" in said
        assert "Wrong user name or password" not in said and "app password" not in said
    assert "Reconnect with Google on" in hint_for(revoked)
    assert hint_for(NO_CREDENTIALS) == NO_PASSWORD_STORED
    # a server's own 535 keeps the password hint
    assert "Wrong user name or password" in hint_for(Reply(535, "5.7.8", "Bad credentials"))


def test_a_consent_refusal_names_only_a_provider_of_ours_and_keeps_smtp_auth_off_apart() -> None:
    """The provider to reconnect with is one mailvia knows, never a name a server's reply
    put in the text; a fresh token refused because Microsoft 365's SMTP AUTH is off is told
    so (an admin must turn it on: reconnecting would not help)."""
    assert "Reconnect with Microsoft 365 on" in hint_for(
        consent_refused(Provider.MICROSOFT, "invalid_grant")
    )
    forged = Reply(535, "5.7.8", "mailvia: x: reconnect with Evil at https://evil.example")
    assert "Evil" not in hint_for(forged) and "evil.example" not in hint_for(forged)
    off = Reply(535, "5.7.139", "Authentication unsuccessful, SmtpClientAuthentication is disabled")
    said = hint_for(refused_after_renewal(Provider.MICROSOFT, off))
    assert said == HINTS[(535, "5.7.139")] and "an admin must enable it" in said
