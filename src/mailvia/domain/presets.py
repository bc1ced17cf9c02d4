"""Provider presets: host, port, security, auth, limits and credential scope, with sources.

A preset fills every field it knows; an admin may override any of them. Figures come from
../shared/research/peers_and_providers.md (b) unless a row cites otherwise. A mailbox preset
(Gmail, Microsoft 365) has other limits when it sends through the provider's HTTP API than
over SMTP: `Preset.limits(transport)` gives them (providers_2026-12.md [N5], [N19]).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailvia.domain.channel import Auth, Budget, Scope, Security, TransportKind, Unit


@dataclass(frozen=True)
class TransportLimits:
    """What a channel of a preset may do over one transport: budgets, recipients per
    message (an API cannot split a message: over it the message is refused at intake) and
    concurrent connections or requests."""

    budgets: tuple[Budget, ...]
    max_recipients_per_message: int
    max_connections: int
    note: str = ""
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    hosts: tuple[str, ...]  # the provider's own hosts; the first is the default
    port: int
    security: Security
    auth: Auth
    scope: Scope
    username: str | None = None  # a fixed login (SparkPost, SendGrid)
    budgets: tuple[Budget, ...] = ()
    max_recipients_per_message: int = 1000
    max_connections: int = 10
    mailbox: bool = False  # a person's mailbox: not for bulk mail
    advice: str = ""
    sources: tuple[str, ...] = ()
    apis: dict[TransportKind, TransportLimits] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.hosts[0]

    def limits(self, transport: TransportKind = TransportKind.SMTP) -> TransportLimits:
        """The limits over `transport`: the provider's API's own, else the SMTP ones."""
        found = self.apis.get(transport)
        if found is not None:
            return found
        return TransportLimits(self.budgets, self.max_recipients_per_message, self.max_connections)

    def host_warning(self, host: str) -> str | None:
        """A warning when a channel made from this preset points elsewhere."""
        if host.lower() in self.hosts or (self.name == "ses" and _is_ses_host(host)):
            return None
        return f"{host} is not one of {self.title}'s hosts ({', '.join(self.hosts)})"


def _is_ses_host(host: str) -> bool:
    host = host.lower()
    return host.startswith("email-smtp.") and host.endswith(".amazonaws.com")


_M365 = (
    "https://learn.microsoft.com/office365/servicedescriptions/exchange-online-service-"
    "description/exchange-online-limits#sending-limits-1",
    "https://learn.microsoft.com/en-us/exchange/troubleshoot/send-emails/"
    "smtp-submission-improvements",
    "https://learn.microsoft.com/en-us/exchange/mail-flow-best-practices/how-to-set-up-a-"
    "multifunction-device-or-application-to-send-email-using-microsoft-365-or-office-365",
)
_GOOGLE = ("https://support.google.com/a/answer/166852",)
_GMAIL_QUOTA = "https://developers.google.com/gmail/api/reference/quota"
_GRAPH_LIMITS = (
    "https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits",
    "https://learn.microsoft.com/graph/throttling",
)

# Gmail API: Google Workspace's 2,000 messages a day (a consumer account gets 500, and 500
# recipients a day: lower the budget for one) [P7][N20]; 100 recipients a message over the
# API [P7]; 15,000 quota units a user a minute at 100 a send, so 150 sends a minute [N19].
GMAIL_API = TransportLimits(
    budgets=(
        Budget(150, 60, Unit.MESSAGES),
        Budget(2_000, 86_400, Unit.MESSAGES),
        Budget(10_000, 86_400, Unit.RECIPIENTS),
    ),
    max_recipients_per_message=100,
    max_connections=3,
    note="Workspace limits (2,000 messages a day); a consumer Gmail account allows 500 a "
    "day: lower the budget for one.",
    sources=(*_GOOGLE, _GMAIL_QUOTA),
)
# Graph sendMail: at most 4 concurrent requests per app and mailbox [N5]; Exchange Online's
# 30 messages a minute and 10,000 recipients a day, 500 recipients a message, still apply
# to what Graph submits [N4][P1].
GRAPH = TransportLimits(
    budgets=(Budget(30, 60, Unit.MESSAGES), Budget(10_000, 86_400, Unit.RECIPIENTS)),
    max_recipients_per_message=500,
    max_connections=4,
    note="At most 4 requests at once per mailbox; Exchange Online's sending limits apply.",
    sources=(*_GRAPH_LIMITS, _M365[0]),
)
_SES_REGIONS = (
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-2",
    "ap-northeast-1",
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "microsoft365",
            "Microsoft 365",
            ("smtp.office365.com",),
            587,
            Security.STARTTLS,
            Auth.LOGIN,
            Scope.ADDRESS,
            budgets=(Budget(30, 60, Unit.MESSAGES), Budget(10_000, 86_400, Unit.RECIPIENTS)),
            max_recipients_per_message=500,
            max_connections=3,
            mailbox=True,
            advice="Each rep connects their own mailbox. Limited to 30 messages a minute and "
            "10,000 recipients a day; not for bulk mail; changing the password breaks the "
            "connection. SMTP AUTH must be enabled for the mailbox.",
            sources=_M365,
            apis={TransportKind.GRAPH: GRAPH},
        ),
        Preset(
            "gmail",
            "Gmail",
            ("smtp.gmail.com",),
            587,
            Security.STARTTLS,
            Auth.PLAIN,
            Scope.ADDRESS,
            budgets=(Budget(2_000, 86_400, Unit.MESSAGES), Budget(10_000, 86_400, Unit.RECIPIENTS)),
            max_recipients_per_message=100,
            max_connections=3,
            mailbox=True,
            advice="Each rep connects their own mailbox (an app password or OAuth). About "
            "2,000 messages and 10,000 recipients a day; not for bulk mail.",
            sources=_GOOGLE,
            apis={TransportKind.GMAIL_API: GMAIL_API},
        ),
        Preset(
            "google_relay",
            "Google Workspace SMTP relay",
            ("smtp-relay.gmail.com",),
            587,
            Security.STARTTLS,
            Auth.PLAIN,
            Scope.DOMAIN,
            budgets=(Budget(10_000, 86_400, Unit.RECIPIENTS),),
            max_recipients_per_message=100,
            advice="The Workspace relay carries mail for the organization's domains; 10,000 "
            "recipients per user a day.",
            sources=("https://support.google.com/a/answer/2956491",),
        ),
        Preset(
            "sparkpost",
            "SparkPost",
            ("smtp.sparkpostmail.com",),
            587,
            Security.STARTTLS,
            Auth.LOGIN,
            Scope.DOMAIN,
            username="SMTP_Injection",
            advice="An API key with the 'Send via SMTP' permission; account-scoped, so it "
            "may be shared with the team. Port 2525 works where 587 is blocked.",
            sources=("https://developers.sparkpost.com/api/smtp/",),
        ),
        Preset(
            "sparkpost_eu",
            "SparkPost EU",
            ("smtp.eu.sparkpostmail.com",),
            587,
            Security.STARTTLS,
            Auth.LOGIN,
            Scope.DOMAIN,
            username="SMTP_Injection",
            advice="SparkPost's EU region; an API key with 'Send via SMTP'.",
            sources=("https://developers.sparkpost.com/api/smtp/",),
        ),
        Preset(
            "sendgrid",
            "SendGrid",
            ("smtp.sendgrid.net",),
            587,
            Security.STARTTLS,
            Auth.LOGIN,
            Scope.DOMAIN,
            username="apikey",
            advice="The username is the word 'apikey'; the password is an API key.",
            sources=(
                "https://www.twilio.com/docs/sendgrid/for-developers/sending-email/"
                "integrating-with-the-smtp-api",
            ),
        ),
        Preset(
            "mailgun",
            "Mailgun",
            ("smtp.mailgun.org",),
            587,
            Security.STARTTLS,
            Auth.LOGIN,
            Scope.DOMAIN,
            advice="SMTP credentials are per sending domain: the login is a full address "
            "at that domain.",
            sources=(
                "https://documentation.mailgun.com/docs/mailgun/api-reference/send/"
                "mailgun/credentials/post-v3-domains--domain-name--credentials",
            ),
        ),
        Preset(
            "mailgun_eu",
            "Mailgun EU",
            ("smtp.eu.mailgun.org",),
            587,
            Security.STARTTLS,
            Auth.LOGIN,
            Scope.DOMAIN,
            advice="Mailgun's EU region (a separate account space); per-domain credentials.",
            sources=("https://documentation.mailgun.com/docs/mailgun/user-manual/get-started/",),
        ),
        Preset(
            "ses",
            "Amazon SES",
            tuple(f"email-smtp.{region}.amazonaws.com" for region in _SES_REGIONS),
            587,
            Security.STARTTLS,
            Auth.LOGIN,
            Scope.DOMAIN,
            advice="SMTP credentials derived from IAM, unique per region: pick your region's "
            "host (email-smtp.REGION.amazonaws.com).",
            sources=("https://docs.aws.amazon.com/ses/latest/dg/smtp-connect.html",),
        ),
        Preset(
            "postmark",
            "Postmark",
            ("smtp.postmarkapp.com", "smtp-broadcasts.postmarkapp.com"),
            587,
            Security.STARTTLS,
            Auth.LOGIN,
            Scope.DOMAIN,
            advice="The Server API Token is both the username and the password; use "
            "smtp-broadcasts.postmarkapp.com for broadcast streams. Ports 25, 587, 2525.",
            sources=(
                "https://postmarkapp.com/support/article/"
                "811-what-are-the-smtp-details-api-tokens-i-should-be-using",
            ),
        ),
    )
}
