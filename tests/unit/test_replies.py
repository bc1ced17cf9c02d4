"""The reply classification table, row by row."""

from __future__ import annotations

import pytest

from mailvia.domain.replies import Outcome, Reply, Stage, classify

OUT = Outcome
S = Stage


@pytest.mark.parametrize(
    ("code", "message", "stage", "outcome", "daily"),
    [
        (250, "2.0.0 OK", S.DATA_END, OUT.DELIVERED, False),
        (451, "4.4.2 mailvia: connection reset", S.DATA, OUT.RETRY, False),
        (421, "4.7.0 Try again later, closing connection.", S.MAIL, OUT.THROTTLED, False),
        (
            421,
            "4.7.0 Our system has detected an unusual rate of unsolicited mail",
            S.RCPT,
            OUT.THROTTLED,
            False,
        ),
        (421, "4.7.0 TLS required for RCPT domain", S.RCPT, OUT.CHANNEL_BROKEN, False),
        (421, "4.7.66 TLS 1.0 and 1.1 are not supported", S.EHLO, OUT.CHANNEL_BROKEN, False),
        (421, "4.3.0 Service shutting down", S.MAIL, OUT.RETRY, False),
        (432, "4.3.2 Concurrent connections limit exceeded", S.MAIL, OUT.THROTTLED, False),
        (432, "4.7.12 A password transition is needed", S.AUTH, OUT.CHANNEL_BROKEN, False),
        (451, "4.7.500 Server busy. Please try again later", S.RCPT, OUT.THROTTLED, False),
        (
            450,
            "4.2.1 The user you are trying to contact is receiving mail too quickly",
            S.RCPT,
            OUT.THROTTLED,
            False,
        ),
        (450, "4.2.1 Peak SMTP relay limit exceeded for customer", S.MAIL, OUT.THROTTLED, False),
        (450, "4.2.1 Mailbox busy", S.RCPT, OUT.RETRY, False),
        (452, "4.2.2 Mailbox full", S.RCPT, OUT.RETRY, False),
        (
            454,
            "4.7.0 Too many login attempts, please try again later",
            S.AUTH,
            OUT.THROTTLED,
            False,
        ),
        (454, "4.7.0 Temporary authentication failure", S.AUTH, OUT.RETRY, False),
        (530, "5.7.0 Authentication required", S.MAIL, OUT.CHANNEL_BROKEN, False),
        (530, "5.7.57 Client not authenticated to send mail", S.MAIL, OUT.CHANNEL_BROKEN, False),
        (534, "5.7.9 Application-specific password required", S.AUTH, OUT.CHANNEL_BROKEN, False),
        (535, "5.7.8 Username and Password not accepted", S.AUTH, OUT.CHANNEL_BROKEN, False),
        (
            535,
            "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled",
            S.AUTH,
            OUT.CHANNEL_BROKEN,
            False,
        ),
        (535, "5.7.3 Authentication unsuccessful", S.AUTH, OUT.CHANNEL_BROKEN, False),
        (
            538,
            "5.7.11 Encryption required for requested authentication mechanism",
            S.AUTH,
            OUT.CHANNEL_BROKEN,
            False,
        ),
        (
            550,
            "5.7.30 Basic authentication is not supported for Client Submission",
            S.AUTH,
            OUT.CHANNEL_BROKEN,
            False,
        ),
        (
            554,
            "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
            S.DATA_END,
            OUT.THROTTLED,
            True,
        ),
        (
            550,
            "5.7.233 Your message can't be sent because your tenant exceeded its limit",
            S.RCPT,
            OUT.THROTTLED,
            True,
        ),
        (
            554,
            "5.2.2 STOREDRV.Submission.Exception:QuotaExceededException",
            S.DATA_END,
            OUT.CHANNEL_BROKEN,
            False,
        ),
        (550, "5.4.5 Daily user sending limit exceeded", S.MAIL, OUT.THROTTLED, True),
        (550, "5.7.1 Daily SMTP relay limit exceeded for customer", S.MAIL, OUT.THROTTLED, True),
        (550, "5.7.1 Sender not permitted", S.MAIL, OUT.CHANNEL_BROKEN, False),
        (552, "5.3.4 Message size exceeds fixed limit", S.MAIL, OUT.BOUNCE, False),
        (550, "5.1.1 No such user", S.RCPT, OUT.BOUNCE, False),
        (553, "5.1.3 Bad recipient address syntax", S.RCPT, OUT.BOUNCE, False),
        (554, "5.6.0 Message content rejected", S.DATA_END, OUT.BOUNCE, False),
        (554, "Transaction failed", S.DATA_END, OUT.BOUNCE, False),
        (554, "5.7.1 no service for you", S.GREETING, OUT.CHANNEL_BROKEN, False),
        (499, "weird", S.RCPT, OUT.RETRY, False),
        (
            530,
            "5.7.10 mailvia: server did not offer STARTTLS",
            S.STARTTLS,
            OUT.CHANNEL_BROKEN,
            False,
        ),
    ],
)
def test_classification(
    code: int, message: str, stage: Stage, outcome: Outcome, daily: bool
) -> None:
    verdict = classify(Reply.parse(code, message), stage)
    assert verdict.outcome is outcome
    assert verdict.daily is daily
    assert verdict.source


def test_reply_parse_splits_enhanced_code() -> None:
    reply = Reply.parse(550, "5.1.1   No such\r\n user")
    assert (reply.code, reply.enhanced, reply.text) == (550, "5.1.1", "No such user")
    assert Reply.parse(250, "OK").enhanced is None
    assert str(reply) == "550 5.1.1 No such user"
