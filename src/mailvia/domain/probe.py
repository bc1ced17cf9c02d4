"""Test connection results: the steps of a probe and the plain-language hint for each failure.

A probe walks `resolve, connect, tls, ehlo, auth`, then `sender` (MAIL FROM the address the
channel sends from, then RSET: a server that refuses the sender refuses every message, and
disconnects the channel as a refused sign-in does; a team or domain channel, with no one
address, reports it not tried: SENDER_NOT_TRIED) or `message` (an OAuth mailbox starts with
`token`; one sending through its provider's HTTP API has only `token` and `message`) and
stops at the first failing step. Each step keeps the server's own reply (when there was
one) and, on failure, a hint from HINTS, looked up by (code, enhanced code), then (code,
None), then by failure kind. Provider rows cite their source; see
../shared/research/reliability_security.md (e).
"""

from __future__ import annotations

import datetime
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mailvia.domain.channel import Channel, Kind, Provider, Scope
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.oauth import AppSource, reconnect_words, refusal, refused_app
from mailvia.domain.presets import PRESETS
from mailvia.domain.replies import Reply


class Step(StrEnum):
    """The steps of a probe, in order."""

    TOKEN = "token"  # an OAuth mailbox: an access token from the credential source
    RESOLVE = "resolve"
    CONNECT = "connect"
    TLS = "tls"
    EHLO = "ehlo"
    AUTH = "auth"
    SENDER = "sender"  # MAIL FROM the channel's sending address, then RSET: nothing is sent
    MESSAGE = "message"


class ProbeFailure(StrEnum):
    """Failures that are not a server reply (the network, TLS, or what the server offers)."""

    NOT_RESOLVED = "not_resolved"
    REFUSED_TARGET = "refused_target"  # the outbound address guard said no
    CONNECTION_REFUSED = "connection_refused"
    TIMEOUT = "timeout"
    CONNECTION_LOST = "connection_lost"
    NAME_MISMATCH = "name_mismatch"
    UNTRUSTED_CERTIFICATE = "untrusted_certificate"
    EXPIRED_CERTIFICATE = "expired_certificate"
    TLS_FAILED = "tls_failed"
    NO_STARTTLS = "no_starttls"
    AUTH_NOT_OFFERED = "auth_not_offered"
    MECHANISM_NOT_OFFERED = "mechanism_not_offered"
    NO_CREDENTIALS = "no_credentials"
    TOKEN_REFUSED = "token_refused"  # the provider refused the grant: reconnect
    TOKEN_UNAVAILABLE = "token_unavailable"  # the token endpoint did not answer


@dataclass(frozen=True)
class ProbeStep:
    """One step: whether it passed, what happened, the server's reply, and a hint on failure.
    `skipped`: the step was not tried (`detail` says why); it counts as passed, not as a
    failure, so it never blocks a save."""

    name: str
    ok: bool
    detail: str
    reply: str | None = None
    hint: str | None = None
    skipped: bool = False


@dataclass(frozen=True)
class ProbeReport:
    """The steps a probe ran; `ok` when every one passed. `delivery`: what the test
    message's transaction returned, when one was asked for (not part of the report people
    see; a test message is recorded like any message)."""

    steps: tuple[ProbeStep, ...]
    ok: bool
    delivery: TransactionResult | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(
        cls, steps: Iterable[ProbeStep], delivery: TransactionResult | None = None
    ) -> ProbeReport:
        taken = tuple(steps)
        return cls(taken, bool(taken) and all(step.ok for step in taken), delivery)

    @property
    def failed(self) -> ProbeStep | None:
        """The step that failed, if any."""
        return next((step for step in self.steps if not step.ok), None)


_O365_SMTP_AUTH = (
    "https://learn.microsoft.com/en-us/exchange/clients-and-mobile-in-exchange-online/"
    "authenticated-client-smtp-submission"
)
_OAUTH = "or connect with OAuth"
# Where the three "password sign-in is off" replies point (domain/oauth.py BASIC_AUTH_OFF).
_M365_OAUTH = (
    'use "Reconnect with Microsoft 365 (OAuth)" on the channel\'s page: no password, it works '
    "where SMTP AUTH is disabled, and the channel keeps its held mail."
)

HintKey = tuple[int, str | None] | ProbeFailure

# One message for every reason the address guard refuses a host, so that neither the probe
# nor a held message maps private networks (research (c)): it names the setting, not why.
REFUSED_HOST = (
    "mailvia does not connect to local, private or reserved addresses. For your own relay, "
    "an operator can allow its network with MAILVIA_ALLOW_PRIVATE_HOSTS, in the environment "
    "of the process that connects: mailvia serve or mailvia worker, which deliver (restart it, "
    "then reconnect the channel), and the command that adds or tests the channel."
)
# RFC 4954 §6 "530 5.7.0 Authentication required": the channel signs in with nothing.
SIGN_IN_NEEDED = (
    "This channel needs a sign-in: the server requires one before it takes mail. Give the "
    "channel a user name and password, or connect it with OAuth (mailvia channel edit NAME, "
    "or Edit on the channel's page)."
)

HINTS: dict[HintKey, str] = {
    # RFC 4954 §6 "535 5.7.8 Authentication credentials invalid"; Gmail answers
    # "535-5.7.8 Username and Password not accepted" (https://support.google.com/mail/?p=BadCredentials).
    (535, "5.7.8"): (
        "Wrong user name or password: check both (changing the mailbox's password breaks the "
        "connection). Accounts with 2-step verification need an app password, " + _OAUTH + "."
    ),
    # Microsoft 365: SMTP AUTH (authenticated client submission) is off for the tenant or the
    # mailbox (_O365_SMTP_AUTH); reply text from third-party reports,
    # https://docs.bookyourpto.com/features/smtp-troubleshoot.
    (535, "5.7.139"): (
        "SMTP AUTH is disabled for this mailbox or tenant: an admin must enable it, or "
        + _M365_OAUTH
    ),
    # Microsoft 365 "Authentication unsuccessful": SMTP AUTH off, security defaults, or basic
    # auth blocked (research (e), _O365_SMTP_AUTH).
    (535, "5.7.3"): (
        "Microsoft 365 refused the sign-in: SMTP AUTH may be disabled, security defaults may "
        "block password sign-in, or the password is wrong. An admin can enable SMTP AUTH, or "
        + _M365_OAUTH
    ),
    (535, None): "The server refused the sign-in: check the user name and password.",
    # Gmail "534-5.7.9 Application-specific password required"
    # (https://support.google.com/mail/?p=InvalidSecondFactor); RFC 4954 §6 "mechanism too weak".
    (534, "5.7.9"): (
        "An app password is required (the account uses 2-step verification): create an app "
        "password and use it here, " + _OAUTH + "."
    ),
    (534, None): "The server wants a stronger sign-in: use an app password, " + _OAUTH + ".",
    # Microsoft retires basic auth for client submission: "550 5.7.30 Basic authentication is
    # not supported for Client Submission" (https://techcommunity.microsoft.com/t5/
    # exchange-team-blog/exchange-online-to-retire-basic-auth-for-client-submission-smtp/
    # ba-p/4114750).
    (550, "5.7.30"): (
        "Password sign-in (basic authentication) is retired for this mailbox: connect with "
        "OAuth instead: " + _M365_OAUTH
    ),
    # Microsoft 365 "530 5.7.57 Client not authenticated to send mail" (research (e);
    # https://pastebin.com/SuB30vi5, third-party): MAIL FROM before a successful AUTH.
    (530, "5.7.57"): (
        "The server says this client is not authenticated to send mail: the channel must sign "
        "in first (auth plain or login with the mailbox's user name and password)."
    ),
    # RFC 4954 §6 "530 5.7.0 Authentication required".
    (530, "5.7.0"): SIGN_IN_NEEDED,
    (530, None): SIGN_IN_NEEDED,
    # RFC 4954 §6 "538 5.7.11 Encryption required for requested authentication mechanism".
    (538, "5.7.11"): "The server requires encryption for this sign-in: use starttls or tls.",
    # RFC 4954 §6 "454 4.7.0 Temporary authentication failure"; Gmail also sends it for
    # "Too many login attempts" (https://support.google.com/a/answer/3726730).
    (454, "4.7.0"): (
        "A temporary sign-in failure (or too many login attempts): wait a few minutes and test "
        "again."
    ),
    # RFC 4954 §6 "432 4.7.12 A password transition is needed".
    (432, "4.7.12"): (
        "The mailbox must change its password before it can sign in: change it, then reconnect "
        "with the new one."
    ),
    # Microsoft 365 "432 4.3.2 Concurrent connections limit exceeded" (3 per mailbox),
    # https://learn.microsoft.com/en-us/exchange/troubleshoot/send-emails/smtp-submission-improvements.
    (432, "4.3.2"): (
        "Too many connections to this mailbox at once (Microsoft 365 allows 3): test again when "
        "other senders have finished, or lower the channel's max_connections."
    ),
    ProbeFailure.NOT_RESOLVED: (
        "The host name does not resolve: check its spelling (Microsoft 365: smtp.office365.com, "
        "Gmail: smtp.gmail.com)."
    ),
    # One message for every reason, so the probe cannot map private networks (research (c)).
    ProbeFailure.REFUSED_TARGET: REFUSED_HOST,
    # The same refusal met while delivering (transport/smtp_errors.py REFUSED_REPLY).
    (550, "5.4.4"): REFUSED_HOST,
    ProbeFailure.CONNECTION_REFUSED: (
        "Connection refused: nothing listens on this port. Check the port (587 for starttls, "
        "465 for tls) and that the server is running."
    ),
    ProbeFailure.TIMEOUT: (
        "No answer in time: check the host and port, and that a firewall lets mailvia reach the "
        "server. A server that expects tls (port 465) stays silent to a starttls connection."
    ),
    ProbeFailure.CONNECTION_LOST: (
        "The server closed the connection: it may refuse this client's address, or expect "
        "another security mode (tls on 465, starttls on 587)."
    ),
    ProbeFailure.NAME_MISMATCH: (
        "Certificate name mismatch: the server's certificate is not issued for this host name. "
        "Use the host name the provider documents, not an IP address or an alias."
    ),
    ProbeFailure.UNTRUSTED_CERTIFICATE: (
        "The certificate is not signed by a trusted authority (self-signed or a private CA): "
        "add that CA to the channel (ca_pem, --ca-file); verification is never turned off."
    ),
    ProbeFailure.EXPIRED_CERTIFICATE: (
        "The server's certificate has expired (or is not yet valid): its administrator must "
        "renew it."
    ),
    ProbeFailure.TLS_FAILED: (
        "The TLS handshake failed: the server may offer only old TLS versions (mailvia needs "
        "TLS 1.2 or later) or expect another security mode (tls on 465, starttls on 587)."
    ),
    ProbeFailure.NO_STARTTLS: (
        "The server does not offer STARTTLS, and mailvia never sends credentials or mail in "
        "clear: use security tls (usually port 465) or the provider's submission port."
    ),
    ProbeFailure.AUTH_NOT_OFFERED: (
        "The server offers no sign-in (no AUTH) on this connection: use the submission port "
        "(587) rather than 25, or auth none if the server accepts mail from this address."
    ),
    ProbeFailure.MECHANISM_NOT_OFFERED: (
        "The server does not offer this sign-in mechanism: choose one it lists in its EHLO "
        "reply (plain, login or xoauth2)."
    ),
    ProbeFailure.NO_CREDENTIALS: (
        "No password is stored for this channel: reconnect it with a password."
    ),
    # RFC 6749 §5.2 invalid_grant: the refresh token was revoked or expired.
    ProbeFailure.TOKEN_REFUSED: (
        "The provider will not give mailvia an access token: the mailbox's grant was revoked "
        "or has expired (a password change, an admin, or months unused). Connect the mailbox "
        "again."
    ),
    ProbeFailure.TOKEN_UNAVAILABLE: (
        "The provider's token endpoint did not answer: test again in a few minutes."
    ),
    # Mailbox providers' HTTP APIs (HTTP status, no enhanced code).
    # RFC 6750 §3.1 invalid_token: mailvia renews a refused token once before it gives up.
    (401, None): (
        "The provider refused the access token even after a fresh one: connect the mailbox again."
    ),
    # Gmail insufficientPermissions / domainPolicy, Graph ErrorAccessDenied
    # (https://developers.google.com/gmail/api/guides/handle-errors,
    # https://learn.microsoft.com/graph/errors).
    (403, None): (
        "The provider refused to send for this mailbox: the grant may lack the send scope "
        "(connect the mailbox again and allow sending), the domain's admin may have blocked "
        "the app, or the mailbox is not enabled for the API."
    ),
    # RFC 6585 §4; Graph throttling (https://learn.microsoft.com/graph/throttling).
    (429, None): "The provider is throttling this mailbox: test again after the wait it gave.",
    (400, None): "The provider refused the test message; its reply says why.",
}

# A refusal at MAIL FROM (the test's `sender` step, or a delivery's first command): the
# account may not send as this address (RFC 5321 §4.2.5 "550 ... mailbox unavailable or not
# allowed"; SendGrid's and SES's unverified senders, a relay's sender restrictions).
SENDER_REFUSED = (
    "The server does not take mail from this address: the account may not send as it (an "
    "unverified sender, a relay that limits who may send, send-as permission missing). "
    "Allow the address on the server or at the provider, then test again."
)

_TEMPORARY = "A temporary refusal: test again in a few minutes; the server's reply says why."
_PERMANENT = "The server refused this step; its reply says why."


# mailvia's own 535s: no server refused a password, so HINTS' password rows would mislead.
# An OAuth mailbox's consent no longer works (domain/oauth.py: "...: reconnect with Google");
# a password channel has no password stored (transport/smtp_errors.py NO_CREDENTIALS).
CONSENT_GONE = (
    "mailvia's access to this mailbox no longer works: the consent was taken back in the "
    "account, expired, or the account's password changed. Reconnect with {provider} on the "
    "channel's page (no password needed)."
)
APP_REFUSED_HINT = (
    "{provider} refused {whose} OAuth app itself, not this mailbox: its client ID or secret "
    "is wrong, the secret has expired, or the app was deleted or disabled. {fix}."
)
_ORG_APP_FIX = (
    "An admin enters the app's current client secret on the Team channels page (or mailvia "
    "admin oauth-app): this mailbox is then tried again by itself, no reconnect needed"
)
_OPERATOR_APP_FIX = (
    "It is the operator's app, from mailvia's settings (OAUTH_{setting}_CLIENT_ID and "
    "_CLIENT_SECRET): whoever runs mailvia mends it there, and once mailvia runs with it this "
    "mailbox is tried again by itself, no reconnect needed; or an admin sets up the "
    "organization's own app on the Team channels page (or mailvia admin oauth-app), and the "
    "rep reconnects through it"
)
NO_PASSWORD_STORED = (
    "mailvia has no password stored for this channel: give it one (Replace the password on "
    "the channel's page, or mailvia channel reconnect NAME)."
)


def _own_sign_in_hint(reply: Reply) -> str | None:
    """mailvia's own 535 (domain/oauth.py): a consent that no longer works names the provider
    to reconnect with (one of ours, never a name the text was given by a server); a server's
    refusal it quotes that reconnecting cannot mend (Microsoft 365's SMTP AUTH turned off)
    gets that refusal's hint."""
    if reply.code != 535 or not reply.text.startswith("mailvia:"):
        return None
    quoted = _QUOTED_REPLY.search(reply.text)
    if quoted is not None and (int(quoted[1]), quoted[2]) == _SMTP_AUTH_OFF:
        return HINTS[_SMTP_AUTH_OFF]
    provider = next((p for p in Provider if reply.text.endswith(": " + reconnect_words(p))), None)
    if provider is not None:
        kind = refusal(reply.refusal)  # carried; a stored reason's text is read exactly
        source = kind.app if kind is not None else refused_app(reply)
        if source is None:
            return CONSENT_GONE.format(provider=provider.display_name)
        return _app_refused_hint(provider, source)
    return NO_PASSWORD_STORED


def _app_refused_hint(provider: Provider, source: AppSource) -> str:
    operator = source is AppSource.OPERATOR
    return APP_REFUSED_HINT.format(
        provider=provider.display_name,
        whose="the operator's" if operator else "the organization's",
        fix=_OPERATOR_APP_FIX.format(setting=provider.name) if operator else _ORG_APP_FIX,
    )


# Microsoft 365's "SmtpClientAuthentication is disabled": OAuth sign-in needs SMTP AUTH on too.
# (Its 5.7.3 also follows a token without the right scope, which reconnecting mends.)
_SMTP_AUTH_OFF = (535, "5.7.139")
_QUOTED_REPLY = re.compile(r"\(([2-5]\d\d) ([245]\.\d{1,3}\.\d{1,3})\b")


def hint_for(
    reply: Reply | None = None,
    failure: ProbeFailure | None = None,
    *,
    channel: Channel | None = None,
) -> str:
    """The hint for a failed step: by failure kind, else mailvia's own sign-in refusals, else
    by reply (exact row, then the code alone, then the class digit). With `channel`, a
    refused password on a channel that is not a person's mailbox (a team relay, a provider
    such as SendGrid) says what that channel signs in with, not a mailbox's password. Pure."""
    if failure is not None:
        return HINTS[failure]
    if reply is None:
        return _PERMANENT
    own = _own_sign_in_hint(reply)
    if own is not None:
        return own
    if channel is not None and reply.code in (534, 535) and not _is_mailbox(channel):
        return account_sign_in_hint(channel)
    found = HINTS.get((reply.code, reply.enhanced)) or HINTS.get((reply.code, None))
    if found is not None:
        return found
    return _TEMPORARY if reply.code < 500 else _PERMANENT


def sender_hint(reply: Reply) -> str:
    """The hint for a refused MAIL FROM: a row of its own (530 5.7.57: not signed in), else
    SENDER_REFUSED for a permanent refusal. Pure."""
    found = hint_for(reply)
    return SENDER_REFUSED if found == _PERMANENT else found


# What a provider's SMTP sign-in takes (each preset's `sources` in presets.py).
_PROVIDER_LOGIN = {
    "sparkpost": "the user name is SMTP_Injection and the password an API key with the "
    "'Send via SMTP' permission",
    "sendgrid": "the user name is the word apikey and the password an API key allowed to send mail",
    "mailgun": "the login is the full address of one of the sending domain's SMTP "
    "credentials, with that credential's password",
    "ses": "the user name and password are SES SMTP credentials made for this region (not an "
    "IAM access key itself)",
    "postmark": "the Server API Token is both the user name and the password",
    "google_relay": "it takes a Google Workspace user of the organization with that user's "
    "password (an app password under 2-step verification), or no sign-in when the relay "
    "allows this server's IP address",
}
_PROVIDER_LOGIN |= {
    "sparkpost_eu": _PROVIDER_LOGIN["sparkpost"],
    "mailgun_eu": _PROVIDER_LOGIN["mailgun"],
}
RELAY_SIGN_IN = (
    "The relay refused the sign-in: check the user name and password with whoever runs the "
    "server (a password changed or expired there breaks the connection), then give the new "
    "one here (Replace the password on the channel's page, or mailvia channel reconnect NAME)."
)
PROVIDER_SIGN_IN = (
    "{title} refused the sign-in: {login}. Check both; a key or credential deleted, rotated "
    "or without the sending permission at {title} must be replaced here (Replace the password "
    "on the channel's page, or mailvia channel reconnect NAME)."
)


def _is_mailbox(channel: Channel) -> bool:
    """A person's mailbox (its password, 2-step verification and OAuth apply), not a relay's
    or a provider's account."""
    preset = PRESETS.get(channel.preset or "")
    if preset is not None:
        return preset.mailbox
    return channel.oauth is not None or channel.scope is Scope.ADDRESS


def account_sign_in_hint(channel: Channel) -> str:
    """The hint for a refused sign-in on a channel that is not a mailbox: what its provider's
    SMTP login is, or (a team relay) whom to ask. Pure."""
    preset = PRESETS.get(channel.preset or "")
    if preset is None:
        return RELAY_SIGN_IN
    login = _PROVIDER_LOGIN.get(preset.name, "use the SMTP credentials the provider made")
    return PROVIDER_SIGN_IN.format(title=preset.title, login=login)


# Replies that no retry mends: someone must change a setting or the channel (the others'
# hints are about one recipient or a passing problem).
_NEEDS_A_FIX = frozenset({530, 534, 535, 538})


# The shared pool is the operator's: an organization's user has nothing to change on it (its
# relay's login is the operator's POOL_RELAY), so a refusal that disconnects it says so.
POOL_MENDED_BY_OPERATOR = (
    "The shared pool is the operator's (its relay is set by MAILVIA_POOL_RELAY): nothing to "
    "change in an organization; its held mail leaves in its original order once the pool "
    "sends again."
)


def fix_for(reply: Reply | None, channel: Channel | None = None) -> str | None:
    """What to change when a delivery met this reply: mailvia's refusal of a private host,
    or the server refusing the channel's sign-in, in the words of `channel`'s kind when
    known (None: nothing to change). Pure."""
    if reply is None:
        return None
    if channel is not None and channel.kind is Kind.POOL and reply.code in _NEEDS_A_FIX:
        return POOL_MENDED_BY_OPERATOR
    if (reply.code, reply.enhanced) in ((550, "5.4.4"), (550, "5.7.30")):
        return hint_for(reply)
    return hint_for(reply, channel=channel) if reply.code in _NEEDS_A_FIX else None


def fix_for_reason(reason: str | None, channel: Channel | None = None) -> str | None:
    """`fix_for` the reply a channel's `state_reason` records (`530 5.7.0 ...`), if it is one,
    with the OAuth refusal's kind the channel was disconnected for (`Channel.refusal`)."""
    kind = channel.refusal if channel is not None else None
    return fix_for(Reply.recorded(reason, kind), channel)


# A channel disconnected by a permanent refusal that no row above hints at: the server refused
# the session or the sender at MAIL FROM (domain/replies.py: CHANNEL_BROKEN by class), so
# every message meets it, not one recipient.
SERVER_REFUSES_CHANNEL = (
    "The server refuses this channel's mail itself, not one recipient: often the sending "
    "address is not allowed (an unverified sender, a relay that limits who may send, a "
    "missing send-as permission); its reply says why. Mend that on the server or at the "
    "provider, then reconnect the channel (mailvia channel reconnect NAME, or the channel's "
    "page): {test}"
)
_TRIES_SENDER = "its test tries the sender (MAIL FROM, nothing sent) before the held mail leaves."
# Where the channel is not known (a recipient's reply read alone): both cases.
_MAY_TRY_SENDER = (
    "a channel for one address tries its sender (MAIL FROM, nothing sent) in its test; a team "
    "or domain channel cannot, so mend the sender first."
)
# A team or domain channel's test does not try a sender (no one address is known).
_CANNOT_TRY_SENDER = (
    "its test cannot try the sender (the channel sends from its members' addresses), so the "
    "held mail leaves once it signs in: mend the sender first."
)


def state_hint(reason: str | None, channel: Channel | None = None) -> str | None:
    """What to change for a channel disconnected with `reason` (its `state_reason`):
    `fix_for_reason`'s hint, else SERVER_REFUSES_CHANNEL for a permanent refusal; None for
    anything else (a temporary reply, or no reply). Pure."""
    fix = fix_for_reason(reason, channel)
    if fix is not None:
        return fix
    coded = re.match(r"^5\d\d\b", (reason or "").strip())
    if not coded:
        return None
    if channel is None:
        return SERVER_REFUSES_CHANNEL.format(test=_MAY_TRY_SENDER)
    if channel.kind is Kind.POOL:
        return POOL_MENDED_BY_OPERATOR
    one_address = channel.scope is Scope.ADDRESS
    return SERVER_REFUSES_CHANNEL.format(test=_TRIES_SENDER if one_address else _CANNOT_TRY_SENDER)


# The `sender` step is tried only with an address the channel is known to send from (an
# address-scoped channel's own): a team or domain channel sends from its members' addresses,
# and a guessed one (postmaster@, the admin's) may be refused where every real sender is
# taken (SendGrid's single senders, SES's verified identities), a false failure that would
# block its save. So its test says the step was not tried, and why.
SENDER_NOT_TRIED = (
    "MAIL FROM not tried: this channel sends from its members' addresses, so no one address "
    "is known to test (a guessed one may be refused where every real sender is taken); a "
    "server that refuses a sender says so at that message's delivery, and a test message "
    "to an address of yours tries your own address as the sender"
)


def sender_not_tried() -> ProbeStep:
    """The `sender` step of a channel without one known sending address: not tried."""
    return ProbeStep(str(Step.SENDER), True, SENDER_NOT_TRIED, skipped=True)


REFUSED_BY_SERVER: dict[str, str] = {
    Step.CONNECT: "the server refused the session",
    Step.TLS: "the server refused STARTTLS",
    Step.EHLO: "the server refused EHLO",
    Step.AUTH: "the server refused the sign-in",
    Step.SENDER: "the server refused mail from this address",
    Step.MESSAGE: "the server refused the test message",
}


_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
}


def describe_certificate(cert: Mapping[str, Any], now: float) -> str:
    """`certificate CN=... (DNS:..., IP Address:...), valid until DATE UTC (N days)` from a
    certificate as `ssl.SSLSocket.getpeercert()` returns it. Pure."""
    names = [(_SHORT_NAMES.get(k, k), v) for rdn in cert.get("subject", ()) for k, v in rdn]
    common = [f"CN={value}" for key, value in names if key == "CN"]
    subject = ", ".join(common) or ", ".join(f"{key}={value}" for key, value in names)
    alt = ", ".join(f"{kind}:{value}" for kind, value in cert.get("subjectAltName", ()))
    text = f"certificate {subject or 'without a subject'}" + (f" ({alt})" if alt else "")
    not_after = cert.get("notAfter")
    if not_after:
        expires = ssl.cert_time_to_seconds(not_after)
        date = datetime.datetime.fromtimestamp(expires, datetime.UTC).strftime("%Y-%m-%d %H:%M")
        text += f", valid until {date} UTC ({int((expires - now) // 86400)} days)"
    return text
