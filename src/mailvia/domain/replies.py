"""Reply classification: one table maps an upstream reply (and where it came) to an outcome.

Rows are tried in order, first match wins; the class digit decides when no row matches
(RFC 3463: act on the class even when the subject or detail is unknown). Provider rows cite
their source; see ../shared/research/reliability_security.md section (e).

A mailbox provider's HTTP API (Gmail API, Microsoft Graph) answers at `Stage.API` with the
HTTP status as the code, no enhanced code, and the text `HTTP 429 Too Many Requests: <the
provider's reason and message>`; its rows match on the status and the provider's reason, and
HTTP has its own fallback (`_by_http`): the HTTP class digit is not SMTP's. A reply at
`Stage.API` that carries an enhanced code is mailvia's own (a network failure, a message the
API cannot carry) and falls back on the SMTP class digit like any other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class Stage(StrEnum):
    """Where in an SMTP session a reply came (or a failure happened)."""

    CONNECT = "connect"
    GREETING = "greeting"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    DATA_END = "data-end"
    API = "api"  # a mailbox provider's HTTP API call (Gmail API, Microsoft Graph)


SESSION_STAGES = frozenset({Stage.CONNECT, Stage.GREETING, Stage.EHLO, Stage.STARTTLS, Stage.AUTH})


class Outcome(StrEnum):
    """What an attempt's reply means for a recipient and for its channel."""

    DELIVERED = "delivered"
    RETRY = "retry"
    BOUNCE = "bounce"
    THROTTLED = "throttled"
    CHANNEL_BROKEN = "channel_broken"


_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")


@dataclass(frozen=True)
class Reply:
    """An SMTP reply: code, enhanced status code (RFC 3463) if given, and text. An HTTP API's
    answer is one too (the status as the code); `retry_after` is the provider's own wait in
    seconds (HTTP Retry-After), when it gave one: not stored, not compared."""

    code: int
    enhanced: str | None
    text: str
    retry_after: float | None = field(default=None, compare=False)
    # mailvia's own reply for a token it could not have: why (domain/oauth.Refusal's value)
    refusal: str | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, code: int, message: str) -> Reply:
        """Split an enhanced status code off the front of a reply's text."""
        message = " ".join(message.split())
        match = _ENHANCED.match(message)
        if match is None:
            return cls(code, None, message)
        return cls(code, match.group(0).strip(), message[match.end() :])

    @classmethod
    def recorded(cls, reason: str | None, refusal: str | None = None) -> Reply | None:
        """The reply a stored reason records (a channel's `state_reason`, `530 5.7.0 ...`),
        with the OAuth refusal's kind it was given for; None when the reason is not a
        server's reply (mailvia's own words, or none)."""
        coded = _RECORDED.match((reason or "").strip())
        if coded is None:
            return None
        said = cls.parse(int(coded.group(1)), coded.group(2) or "")
        return cls(said.code, said.enhanced, said.text, refusal=refusal)

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    def __str__(self) -> str:
        if self.enhanced is None and self.text.startswith(f"HTTP {self.code}"):
            return self.text  # an HTTP API's answer names its status itself
        return " ".join(str(part) for part in (self.code, self.enhanced, self.text) if part)


_RECORDED = re.compile(r"^([2-5]\d\d)(?:[ -](.*))?$", re.DOTALL)


# Synthetic replies for failures that are not replies (RFC 5321 §4.5.4.1 / RFC 2821: a closed
# or reset connection is treated as if a 451 had been received).
def network_failure(what: str) -> Reply:
    """A connection refused, reset or timed out before the final dot."""
    return Reply(451, "4.4.2", f"mailvia: {what}")


def timeout_after_dot(what: str) -> Reply:
    """No reply after the final dot: the server may have accepted the message."""
    return Reply(451, "4.4.2", f"mailvia: {what} after the end of data; may have been delivered")


def credentials_rejected(reply: Reply | None, stage: Stage) -> bool:
    """Whether the server refused the channel's sign-in itself (SMTP AUTH 535/534, or an HTTP
    API's 401): for an OAuth mailbox, a fresh access token may cure it once (RFC 4954 §6;
    RFC 6750 §3.1 invalid_token)."""
    if reply is None:
        return False
    if stage is Stage.AUTH:
        return reply.code in (534, 535)
    return stage is Stage.API and reply.code == 401


def tls_refused(what: str) -> Reply:
    """TLS could not be established as the channel demands: fail closed, never send in clear."""
    return Reply(530, "5.7.10", f"mailvia: {what}")


@dataclass(frozen=True)
class Rule:
    """One row of the table. Unset fields match anything; `text` is a case-insensitive regex."""

    outcome: Outcome
    source: str
    code: int | None = None
    enhanced: str | None = None
    text: str | None = None
    stages: frozenset[Stage] | None = None
    daily: bool = False  # a daily quota: wait for the rolling 24 h window, not a short pause
    waits: bool | None = None  # True: only a reply that says how long to wait (Retry-After)

    def matches(self, reply: Reply, stage: Stage) -> bool:
        if self.code is not None and reply.code != self.code:
            return False
        if self.waits is not None and (reply.retry_after is not None) != self.waits:
            return False
        if self.enhanced is not None and reply.enhanced != self.enhanced:
            return False
        if self.stages is not None and stage not in self.stages:
            return False
        return self.text is None or re.search(self.text, reply.text, re.IGNORECASE) is not None


_GMAIL_LIMITS = "https://support.google.com/a/answer/3726730"
_O365_SUBMISSION = (
    "https://learn.microsoft.com/en-us/exchange/troubleshoot/send-emails/"
    "smtp-submission-improvements"
)
_RFC4954 = "RFC 4954 §6"
_O = Outcome

_API = frozenset({Stage.API})
_GMAIL_ERRORS = "https://developers.google.com/gmail/api/guides/handle-errors"
_GMAIL_QUOTA = "https://developers.google.com/gmail/api/reference/quota"
_GRAPH_THROTTLING = "https://learn.microsoft.com/graph/throttling"
_GRAPH_ERRORS = "https://learn.microsoft.com/graph/errors"
_GRAPH_SENDMAIL = "https://learn.microsoft.com/graph/api/user-sendmail"
# Graph passes Exchange's own error codes on for mail (microsoftgraph/
# microsoft-graph-docs-contrib#7483: "ErrorQuotaExceeded" from sendMail).
_EWS_CODES = (
    "https://learn.microsoft.com/exchange/client-developer/web-service-reference/responsecode"
)


def _api(outcome: Outcome, source: str, code: int | None, text: str | None, **kw: bool) -> Rule:
    return Rule(outcome, source, code, None, text, stages=_API, **kw)


# Mailbox providers' HTTP APIs, before the SMTP rows (an HTTP status is no SMTP code).
API_RULES: tuple[Rule, ...] = (
    # Gmail: the project's or user's daily quota; wait for the window, nothing bounces.
    _api(Outcome.THROTTLED, _GMAIL_ERRORS, None, r"\bdailyLimitExceeded\b", daily=True),
    # Gmail: per-user / per-project rate limits (403 or 429) [N19].
    _api(Outcome.THROTTLED, _GMAIL_QUOTA, None, r"\b(user)?rateLimitExceeded\b"),
    # Exchange's sending quota reached through Graph: the rolling 24 h recipient limit [P1].
    _api(
        Outcome.THROTTLED,
        _EWS_CODES,
        None,
        r"\bError(SubmissionQuotaExceeded|MessageSubmissionBlocked)\b",
        daily=True,
    ),
    # Graph: the mailbox's own storage is full (it cannot keep Sent Items): the owner must act.
    _api(Outcome.CHANNEL_BROKEN, _EWS_CODES, None, r"\bErrorQuotaExceeded\b"),
    # Graph: a mailbox on premises, inactive or soft-deleted cannot use the API.
    _api(Outcome.CHANNEL_BROKEN, _GRAPH_ERRORS, None, r"\bMailboxNotEnabledForRESTAPI\b"),
    # Too many requests: Graph gives Retry-After [N6]; RFC 6585 §4.
    _api(Outcome.THROTTLED, _GRAPH_THROTTLING, 429, None),
    # Graph's 503 with Retry-After is a throttle too [N6]; without it, a 5xx is retried.
    _api(Outcome.THROTTLED, _GRAPH_THROTTLING, 503, None, waits=True),
    # A refused token (RFC 6750 §3.1 invalid_token): the run renews it once before this holds.
    _api(Outcome.CHANNEL_BROKEN, "RFC 6750 §3.1", 401, None),
    # Missing scope, app blocked by the domain, mailbox not enabled: the channel must be fixed.
    _api(Outcome.CHANNEL_BROKEN, _GMAIL_ERRORS, 403, None),
    # Gmail "Mail service not enabled" (failedPrecondition) for the account.
    _api(Outcome.CHANNEL_BROKEN, _GMAIL_ERRORS, 400, r"\bfailedPrecondition\b"),
    # The message itself is refused (too large, bad recipient, invalid MIME): it bounces with
    # the provider's words [N4]; RFC 9110 §15.5.1, §15.5.14.
    _api(Outcome.BOUNCE, _GRAPH_SENDMAIL, 413, None),
    _api(Outcome.BOUNCE, _GMAIL_ERRORS, 400, None),
)

RULES: tuple[Rule, ...] = (
    *API_RULES,
    # Gmail reuses 421 4.7.0 for several conditions; the text tells them apart.
    Rule(_O.CHANNEL_BROKEN, _GMAIL_LIMITS, 421, "4.7.0", r"TLS required"),
    Rule(_O.THROTTLED, _GMAIL_LIMITS, 421, "4.7.0", r"try again later|unusual rate"),
    Rule(
        _O.CHANNEL_BROKEN,
        "https://learn.microsoft.com/en-us/exchange/clients-and-mobile-in-exchange-online/"
        "opt-in-exchange-online-endpoint-for-legacy-tls-using-smtp-auth",
        421,
        "4.7.66",
    ),
    Rule(_O.THROTTLED, _O365_SUBMISSION, 432, "4.3.2"),  # concurrent connections limit
    Rule(_O.CHANNEL_BROKEN, "RFC 4954 §6 (password transition needed)", 432, "4.7.12"),
    Rule(_O.THROTTLED, _O365_SUBMISSION, 451, "4.7.500"),  # server busy
    Rule(_O.THROTTLED, _GMAIL_LIMITS, 450, "4.2.1", r"too quickly|relay limit|rate"),
    Rule(_O.THROTTLED, _GMAIL_LIMITS, 454, "4.7.0", r"too many login attempts"),
    Rule(_O.RETRY, _RFC4954, 454, "4.7.0"),
    Rule(_O.CHANNEL_BROKEN, _RFC4954, 530),  # authentication required (incl. O365 5.7.57)
    Rule(_O.CHANNEL_BROKEN, _GMAIL_LIMITS, 534),  # mechanism too weak / app password required
    Rule(_O.CHANNEL_BROKEN, _RFC4954, 535),  # credentials invalid; O365 5.7.139, 5.7.3
    Rule(_O.CHANNEL_BROKEN, _RFC4954, 538),  # encryption required for this mechanism
    Rule(
        _O.CHANNEL_BROKEN,
        "https://techcommunity.microsoft.com/t5/exchange-team-blog/"
        "exchange-online-to-retire-basic-auth-for-client-submission-smtp/ba-p/4114750",
        550,
        "5.7.30",
    ),
    Rule(_O.THROTTLED, _O365_SUBMISSION, 554, "5.2.0", r"SubmissionQuotaExceeded", daily=True),
    Rule(
        _O.THROTTLED,
        "https://learn.microsoft.com/en-us/answers/questions/5835651/",
        550,
        "5.7.233",
        daily=True,
    ),
    Rule(_O.CHANNEL_BROKEN, _O365_SUBMISSION, 554, "5.2.2", r"QuotaExceeded"),  # own mailbox
    Rule(_O.THROTTLED, _GMAIL_LIMITS, 550, "5.4.5", daily=True),  # daily sending quota
    Rule(_O.THROTTLED, _GMAIL_LIMITS, 550, "5.7.1", r"daily .*relay limit", daily=True),
    # The message is too big: no retry and no fault of the channel.
    Rule(_O.BOUNCE, "RFC 5321 §4.5.3.1.10", 552, stages=frozenset({Stage.MAIL})),
)


@dataclass(frozen=True)
class Verdict:
    """The classification of one reply."""

    outcome: Outcome
    source: str
    daily: bool = False


def is_http(reply: Reply, stage: Stage) -> bool:
    """Whether the reply is an HTTP API's status (not one mailvia made up in SMTP's terms)."""
    return stage is Stage.API and reply.enhanced is None


def classify(reply: Reply, stage: Stage) -> Verdict:
    """Map a reply received at `stage` to its outcome (pure; never raises)."""
    http = is_http(reply, stage)
    if (200 <= reply.code < 300) if http else reply.positive:
        return Verdict(Outcome.DELIVERED, "2xx" if http else "2xx/3xx")
    for rule in RULES:
        if rule.matches(reply, stage):
            return Verdict(rule.outcome, rule.source, rule.daily)
    if http:
        return Verdict(_by_http(reply.code), "RFC 9110 §15 status class")
    return Verdict(_by_class(reply.code, stage), "RFC 3463 class digit")


def _by_http(code: int) -> Outcome:
    """An HTTP status no row knows: a refusal of the caller (401, 403, 404, a redirect we
    never follow) is the channel's; a timeout or conflict is retried; any other 4xx is the
    message's; 5xx is retried."""
    if code in (401, 403, 404, 407) or 300 <= code < 400:
        return Outcome.CHANNEL_BROKEN
    if code in (408, 409, 425, 429):
        return Outcome.RETRY
    if 400 <= code < 500:
        return Outcome.BOUNCE
    return Outcome.RETRY


def _by_class(code: int, stage: Stage) -> Outcome:
    if code < 500:
        return Outcome.RETRY
    if stage in SESSION_STAGES or stage is Stage.MAIL:
        # The server refuses us, not a recipient: a configuration or sender problem.
        return Outcome.CHANNEL_BROKEN
    return Outcome.BOUNCE
