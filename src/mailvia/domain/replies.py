"""Reply classification: one table maps an upstream reply (and where it came) to an outcome.

Rows are tried in order, first match wins; the class digit decides when no row matches
(RFC 3463: act on the class even when the subject or detail is unknown). Provider rows cite
their source; see ../shared/research/reliability_security.md section (e).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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
    """An SMTP reply: code, enhanced status code (RFC 3463) if given, and text."""

    code: int
    enhanced: str | None
    text: str

    @classmethod
    def parse(cls, code: int, message: str) -> Reply:
        """Split an enhanced status code off the front of a reply's text."""
        message = " ".join(message.split())
        match = _ENHANCED.match(message)
        if match is None:
            return cls(code, None, message)
        return cls(code, match.group(0).strip(), message[match.end() :])

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    def __str__(self) -> str:
        return " ".join(str(part) for part in (self.code, self.enhanced, self.text) if part)


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

    def matches(self, reply: Reply, stage: Stage) -> bool:
        if self.code is not None and reply.code != self.code:
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

RULES: tuple[Rule, ...] = (
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


def classify(reply: Reply, stage: Stage) -> Verdict:
    """Map a reply received at `stage` to its outcome (pure; never raises)."""
    if reply.positive:
        return Verdict(Outcome.DELIVERED, "2xx/3xx")
    for rule in RULES:
        if rule.matches(reply, stage):
            return Verdict(rule.outcome, rule.source, rule.daily)
    return Verdict(_by_class(reply.code, stage), "RFC 3463 class digit")


def _by_class(code: int, stage: Stage) -> Outcome:
    if code < 500:
        return Outcome.RETRY
    if stage in SESSION_STAGES or stage is Stage.MAIL:
        # The server refuses us, not a recipient: a configuration or sender problem.
        return Outcome.CHANNEL_BROKEN
    return Outcome.BOUNCE
