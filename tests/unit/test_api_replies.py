"""The classification rows of mailbox providers' HTTP APIs (Stage.API), row by row, and the
HTTP fallback: an HTTP status is not an SMTP code."""

from __future__ import annotations

# ruff: noqa: E501  (a table of provider replies reads best one row a line)
import pytest

from mailvia.domain.delivery import ChannelEffect, TransactionResult, settle
from mailvia.domain.message import State
from mailvia.domain.replies import Outcome, Reply, Stage, classify, network_failure
from mailvia.domain.retry import RetryPolicy

OUT = Outcome


def api(status: int, text: str, retry_after: float | None = None) -> Reply:
    return Reply(status, None, text, retry_after=retry_after)


@pytest.mark.parametrize(
    ("reply", "outcome", "daily"),
    [
        (api(202, "HTTP 202 Accepted"), OUT.DELIVERED, False),
        (api(200, "HTTP 200 OK"), OUT.DELIVERED, False),
        # Gmail rate limits (403 or 429), with or without a wait
        (api(403, "HTTP 403 Forbidden: rateLimitExceeded: Rate Limit Exceeded"), OUT.THROTTLED, False),
        (
            api(429, "HTTP 429 Too Many Requests: userRateLimitExceeded: User-rate limit exceeded.", 30),
            OUT.THROTTLED,
            False,
        ),
        (api(403, "HTTP 403 Forbidden: userRateLimitExceeded: User Rate Limit Exceeded"), OUT.THROTTLED, False),
        (api(403, "HTTP 403 Forbidden: dailyLimitExceeded: Daily Limit Exceeded"), OUT.THROTTLED, True),
        # Graph throttling and quotas
        (api(429, "HTTP 429 Too Many Requests: ApplicationThrottled: over its limit", 5), OUT.THROTTLED, False),
        (api(429, "HTTP 429 Too Many Requests"), OUT.THROTTLED, False),
        (api(503, "HTTP 503 Service Unavailable: ServiceUnavailable: overloaded", 5), OUT.THROTTLED, False),
        (api(503, "HTTP 503 Service Unavailable: ServiceUnavailable: overloaded"), OUT.RETRY, False),
        (
            api(403, "HTTP 403 Forbidden: ErrorSubmissionQuotaExceeded: quota exceeded"),
            OUT.THROTTLED,
            True,
        ),
        (
            api(403, "HTTP 403 Forbidden: ErrorMessageSubmissionBlocked: blocked"),
            OUT.THROTTLED,
            True,
        ),
        (
            api(403, "HTTP 403 Forbidden: ErrorQuotaExceeded: Mailbox has exceeded maximum mailbox size."),
            OUT.CHANNEL_BROKEN,
            False,
        ),
        (
            api(404, "HTTP 404 Not Found: MailboxNotEnabledForRESTAPI: The mailbox is either inactive"),
            OUT.CHANNEL_BROKEN,
            False,
        ),
        # credentials and scopes
        (api(401, "HTTP 401 Unauthorized: authError: Invalid Credentials"), OUT.CHANNEL_BROKEN, False),
        (
            api(403, "HTTP 403 Forbidden: insufficientPermissions: Insufficient Permission"),
            OUT.CHANNEL_BROKEN,
            False,
        ),
        (api(403, "HTTP 403 Forbidden: ErrorAccessDenied: Access is denied."), OUT.CHANNEL_BROKEN, False),
        (
            api(400, "HTTP 400 Bad Request: failedPrecondition: Mail service not enabled"),
            OUT.CHANNEL_BROKEN,
            False,
        ),
        # the message's own fault: it bounces with the provider's words
        (api(400, "HTTP 400 Bad Request: invalidArgument: Invalid To header"), OUT.BOUNCE, False),
        (
            api(400, "HTTP 400 Bad Request: ErrorInvalidRecipients: At least one recipient isn't valid."),
            OUT.BOUNCE,
            False,
        ),
        (api(413, "HTTP 413 Payload Too Large: RequestEntityTooLarge"), OUT.BOUNCE, False),
        # the HTTP fallback
        (api(500, "HTTP 500 Internal Server Error: backendError: Backend Error"), OUT.RETRY, False),
        (api(502, "HTTP 502 Bad Gateway"), OUT.RETRY, False),
        (api(504, "HTTP 504 Gateway Timeout"), OUT.RETRY, False),
        (api(408, "HTTP 408 Request Timeout"), OUT.RETRY, False),
        (api(404, "HTTP 404 Not Found"), OUT.CHANNEL_BROKEN, False),
        (api(301, "HTTP 301 Moved Permanently"), OUT.CHANNEL_BROKEN, False),
        (api(422, "HTTP 422 Unprocessable Entity"), OUT.BOUNCE, False),
        # mailvia's own replies at the API stage keep SMTP's class digit
        (network_failure("could not connect to the API"), OUT.RETRY, False),
        (Reply(554, "5.6.0", "mailvia: the API cannot carry this message"), OUT.BOUNCE, False),
    ],
)  # fmt: skip
def test_api_classification(reply: Reply, outcome: Outcome, daily: bool) -> None:
    verdict = classify(reply, Stage.API)
    assert (verdict.outcome, verdict.daily) == (outcome, daily), verdict
    assert verdict.source


def test_an_http_status_is_not_read_as_an_smtp_code() -> None:
    # A 3xx is no success over HTTP (SMTP's 354 is), and 421 at the API is no SMTP 421.
    assert classify(Reply(302, None, "HTTP 302 Found"), Stage.API).outcome is OUT.CHANNEL_BROKEN
    assert classify(Reply(421, None, "HTTP 421 Misdirected Request"), Stage.API).outcome is (
        OUT.BOUNCE
    )
    # ... while SMTP stages are unchanged
    assert classify(Reply(429, None, "HTTP 429"), Stage.RCPT).outcome is OUT.RETRY


def test_the_providers_wait_rides_on_the_settlement() -> None:
    reply = api(429, "HTTP 429 Too Many Requests: ApplicationThrottled", 5)
    settled = settle(
        TransactionResult(Stage.API, reply),
        pending=("a@x.test",),
        failures=2,
        policy=RetryPolicy(),
        now=100.0,
        expires_at=10_000.0,
        rand=0.5,
    )
    assert settled.channel_effect is ChannelEffect.THROTTLE and settled.wait == 5
    assert not settled.counts_as_failure
    assert [r.state for r in settled.recipients] == [State.DEFERRED]
    bounced = settle(
        TransactionResult(Stage.API, api(400, "HTTP 400 Bad Request: invalidArgument: bad")),
        pending=("a@x.test",),
        failures=0,
        policy=RetryPolicy(),
        now=100.0,
        expires_at=10_000.0,
        rand=0.5,
    )
    assert [r.state for r in bounced.recipients] == [State.BOUNCED] and bounced.wait is None
