"""The reply classification table, row by row."""

from __future__ import annotations

import pytest

from mailvia.domain.replies import Outcome, Reply, Stage, classify

O = Outcome
S = Stage


@pytest.mark.parametrize(
    ("code", "message", "stage", "outcome", "daily"),
    [
        (250, "2.0.0 OK", S.DATA_END, O.DELIVERED, False),
        (451, "4.4.2 mailvia: connection reset", S.DATA, O.RETRY, False),
        (421, "4.7.0 Try again later, closing connection.", S.MAIL, O.THROTTLED, False),
        (421, "4.7.0 Our system has detected an unusual rate of unsolicited mail", S.RCPT,
         O.THROTTLED, False),
        (421, "4.7.0 TLS required for RCPT domain", S.RCPT, O.CHANNEL_BROKEN, False),
        (421, "4.7.66 TLS 1.0 and 1.1 are not supported", S.EHLO, O.CHANNEL_BROKEN, False),
        (421, "4.3.0 Service shutting down", S.MAIL, O.RETRY, False),
        (432, "4.3.2 Concurrent connections limit exceeded", S.MAIL, O.THROTTLED, False),
        (432, "4.7.12 A password transition is needed", S.AUTH, O.CHANNEL_BROKEN, False),
        (451, "4.7.500 Server busy. Please try again later", S.RCPT, O.THROTTLED, False),
        (450, "4.2.1 The user you are trying to contact is receiving mail too quickly", S.RCPT,
         O.THROTTLED, False),
        (450, "4.2.1 Peak SMTP relay limit exceeded for customer", S.MAIL, O.THROTTLED, False),
        (450, "4.2.1 Mailbox busy", S.RCPT, O.RETRY, False),
        (452, "4.2.2 Mailbox full", S.RCPT, O.RETRY, False),
        (454, "4.7.0 Too many login attempts, please try again later", S.AUTH, O.THROTTLED,
         False),
        (454, "4.7.0 Temporary authentication failure", S.AUTH, O.RETRY, False),
        (530, "5.7.0 Authentication required", S.MAIL, O.CHANNEL_BROKEN, False),
        (530, "5.7.57 Client not authenticated to send mail", S.MAIL, O.CHANNEL_BROKEN, False),
        (534, "5.7.9 Application-specific password required", S.AUTH, O.CHANNEL_BROKEN, False),
        (535, "5.7.8 Username and Password not accepted", S.AUTH, O.CHANNEL_BROKEN, False),
        (535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled",
         S.AUTH, O.CHANNEL_BROKEN, False),
        (535, "5.7.3 Authentication unsuccessful", S.AUTH, O.CHANNEL_BROKEN, False),
        (538, "5.7.11 Encryption required for requested authentication mechanism", S.AUTH,
         O.CHANNEL_BROKEN, False),
        (550, "5.7.30 Basic authentication is not supported for Client Submission", S.AUTH,
         O.CHANNEL_BROKEN, False),
        (554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException", S.DATA_END,
         O.THROTTLED, True),
        (550, "5.7.233 Your message can't be sent because your tenant exceeded its limit",
         S.RCPT, O.THROTTLED, True),
        (554, "5.2.2 STOREDRV.Submission.Exception:QuotaExceededException", S.DATA_END,
         O.CHANNEL_BROKEN, False),
        (550, "5.4.5 Daily user sending limit exceeded", S.MAIL, O.THROTTLED, True),
        (550, "5.7.1 Daily SMTP relay limit exceeded for customer", S.MAIL, O.THROTTLED, True),
        (550, "5.7.1 Sender not permitted", S.MAIL, O.CHANNEL_BROKEN, False),
        (552, "5.3.4 Message size exceeds fixed limit", S.MAIL, O.BOUNCE, False),
        (550, "5.1.1 No such user", S.RCPT, O.BOUNCE, False),
        (553, "5.1.3 Bad recipient address syntax", S.RCPT, O.BOUNCE, False),
        (554, "5.6.0 Message content rejected", S.DATA_END, O.BOUNCE, False),
        (554, "Transaction failed", S.DATA_END, O.BOUNCE, False),
        (554, "5.7.1 no service for you", S.GREETING, O.CHANNEL_BROKEN, False),
        (499, "weird", S.RCPT, O.RETRY, False),
        (530, "5.7.10 mailvia: server did not offer STARTTLS", S.STARTTLS, O.CHANNEL_BROKEN,
         False),
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
