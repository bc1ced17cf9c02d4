"""How the pages put things into words: routes, limits and budget use, queue counts, presets
and why a channel can or cannot be shared with the team (the seed's rule); and the one table
of plain words for states, outcomes, Test connection's steps and servers' replies, with the
code beside them, and times as people say them ("3 minutes ago")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from mailvia.domain.channel import (
    Auth,
    Budget,
    Channel,
    Kind,
    Scope,
    Security,
    Unit,
)
from mailvia.domain.message import State
from mailvia.domain.oauth import AppSource, app_of
from mailvia.domain.presets import PRESETS, Preset
from mailvia.domain.probe import Step, fix_for, hint_for
from mailvia.domain.replies import Outcome, Reply
from mailvia.domain.routing import Route
from mailvia.domain.shaping import UseLog, window_words
from mailvia.domain.tenancy import User
from mailvia.domain.waiting import CHANNEL_STATES as CHANNEL_STATES
from mailvia.domain.waiting import STATES as STATES
from mailvia.domain.waiting import Words as Words
from mailvia.outbox.channels import ADDRESS_SCOPE_NOT_SHARED
from mailvia.outbox.services import Services

WAITING = (State.QUEUED, State.SENDING, State.DEFERRED, State.HELD)
_PER = {60.0: "a minute", 3600.0: "an hour", 86_400.0: "a day"}
# The providers a rep meets first (the seed's own order), then every other preset.
FIRST = ("microsoft365", "gmail")


@dataclass(frozen=True)
class Explained:
    """One of a user's addresses, the channel its mail takes, and why."""

    address: str
    route: Route
    sentence: str
    held: bool


def route_sentence(route: Route, address: str) -> str:
    """`Using team channel SparkPost for acme.com`, and the like."""
    chosen = route.channel
    if chosen is None:
        return f"No channel can send as {address}: connect one below."
    step = next((s for s in route.steps if s.verdict in ("chosen", "held")), None)
    if route.held or step is None or step.verdict == "held":
        if chosen.kind is Kind.POOL:  # its reason is the operator's relay's reply
            return f"Holding mail: {pool_held(chosen)}"
        why = chosen.state_reason or "no reason given"
        return f"Holding mail: {chosen.name} is {chosen.state} ({why})."
    domain = address.rpartition("@")[2]
    return {
        "own channel": f"Using your own channel {chosen.name} for {address}",
        "team channel": f"Using team channel {chosen.name} for {domain}",
        "organization default": f"Using the organization's default channel {chosen.name}",
        "shared pool": "Using the shared pool: shared IP addresses and a shared reputation. "
        "Connect your own channel to send with your domain's reputation.",
    }.get(step.rule, step.reason)


def pool_held(pool: Channel) -> str:
    """Why mail waits on the shared pool, for an organization's user: not the relay's reply
    (its `state_reason` is the operator's to read, as the API hides it), but that the pool is
    not sending, that it is the operator's to mend, and that nothing is lost (no notice
    reaches the operator through a pool that is not sending: serve's log says it)."""
    return (
        f"the shared pool is not sending right now (it is {pool.state}). It is run by the "
        "operator of this mailvia, not your organization; nothing is lost: your mail is held "
        "and leaves in its original order once the pool sends again."
    )


def explain_addresses(services: Services, user: User) -> list[Explained]:
    """A route for each address the user may send From, and why."""
    explained = []
    for address in services.tenancy.addresses(user):
        route = services.submitter.explain(user, address)
        explained.append(Explained(address, route, route_sentence(route, address), route.held))
    return explained


def limit_words(budgets: tuple[Budget, ...]) -> str:
    """`30 messages a minute, 10,000 recipients a day` (empty: no limits)."""
    return ", ".join(
        f"{b.count:,} {b.unit} {_PER.get(float(b.per_seconds), f'per {b.per_seconds:g} s')}"
        for b in budgets
    )


def budget_use(budgets: tuple[Budget, ...], log: UseLog, now: float) -> list[str]:
    """`12 of 30 this minute`, `3,200 of 10,000 recipients in 24 h`, one per budget."""
    lines = []
    for budget in budgets:
        unit = " recipients" if budget.unit is Unit.RECIPIENTS else ""
        held = log.held(budget, now)
        lines.append(f"{held:,} of {budget.count:,}{unit} {window_words(budget.per_seconds)}")
    return lines


def channel_use(services: Services, channel: Channel, now: float) -> list[str]:
    log = services.backlog.use(channel, now)
    return budget_use(channel.budgets, log, now) if log is not None else []


def provider(channel: Channel) -> str:
    preset = PRESETS.get(channel.preset or "")
    if channel.kind is Kind.POOL:
        return "shared pool"
    return preset.title if preset else "custom SMTP server"


def covers(channel: Channel) -> str:
    if channel.scope is Scope.ADDRESS:
        return channel.address or ""
    return ", ".join(channel.domains)


def sharing(preset: Preset | None) -> str | None:
    """Why a channel made from this preset may not be shared (None: it may)."""
    if preset is None or preset.scope is Scope.DOMAIN:
        return None
    return (
        ADDRESS_SCOPE_NOT_SHARED.format(title=preset.title)
        + f", so a {preset.title} channel is never shared with the team."
    )


def preset_choices() -> list[Preset]:
    """Presets in the order the page offers them: mailboxes first."""
    ordered = [PRESETS[name] for name in FIRST]
    return ordered + [p for name, p in PRESETS.items() if name not in FIRST]


# ---------------------------------------------------------------------------------------
# Plain words first, codes second: the one table of how the pages name states, outcomes,
# Test connection steps and servers' replies for someone who is not a mail administrator.
# The code or the server's own text goes beside them, in a <details> (templates/macros.html).
# ---------------------------------------------------------------------------------------


# Words, STATES and CHANNEL_STATES: domain/waiting.py (the CLI says them too).

OUTCOMES: dict[Outcome, str] = {
    Outcome.DELIVERED: "Delivered",
    Outcome.RETRY: "Temporary problem: tries again",
    Outcome.BOUNCE: "Refused for this recipient",
    Outcome.THROTTLED: "The provider asked to slow down: the channel waits",
    Outcome.CHANNEL_BROKEN: "The channel stopped working: its mail is held",
}

STEPS: dict[str, str] = {
    Step.TOKEN: "Getting permission from the provider",
    Step.RESOLVE: "Finding the server",
    Step.CONNECT: "Reaching the server",
    Step.TLS: "Securing the connection",
    Step.EHLO: "Greeting the server",
    Step.AUTH: "Signing in",
    Step.SENDER: "Checking the server takes mail from the sending address",
    Step.MESSAGE: "Sending a test message",
}

# A channel's settings, with the setting's own name beside them.
SETTINGS: dict[str, str] = {
    Security.STARTTLS: "Encrypted after connecting (STARTTLS)",
    Security.TLS: "Encrypted from the start (TLS)",
    Security.NONE: "Not encrypted (only to a server on the operator's own network)",
    Auth.PLAIN: "User name and password (PLAIN)",
    Auth.LOGIN: "User name and password (LOGIN)",
    Auth.XOAUTH2: "OAuth token (XOAUTH2)",
    Auth.NONE: "No sign-in",
}

# What went wrong, by the enhanced status code's subject and detail (RFC 3463 §3; X.7.23,
# X.7.25 and X.7.26 from RFC 7372 §3); the reply's class says what happens next (_NEXT).
PROBLEMS: dict[str, str] = {
    "1.1": "The address does not exist at the recipient's domain: check it for typos.",
    "1.2": "The recipient's domain does not exist or takes no mail: check the address.",
    "1.3": "The address is not written correctly: check it.",
    "1.10": "The recipient's domain takes no mail at all.",
    "2.0": "The recipient's mailbox is not available.",
    "2.1": "The recipient's mailbox is not taking mail (disabled, or getting too much too "
    "quickly).",
    "2.2": "The recipient's mailbox is full.",
    "2.3": "The message is larger than the recipient's mailbox takes.",
    "3.0": "The receiving server is not taking mail right now.",
    "3.4": "The message is too large for the receiving server.",
    "4.1": "The receiving server did not answer.",
    "4.2": "The connection to the server broke off.",
    "4.4": "mailvia found no way to the recipient's server.",
    "4.7": "The message waited too long and expired.",
    "5.3": "The message has more recipients than the server takes at once.",
    "7.0": "The server refused it for a security or policy reason.",
    "7.1": "The receiving server refused the message (a spam filter or the recipient's rules).",
    "7.8": "The server refused the channel's sign-in: the user name or password is wrong.",
    "7.23": "The sending domain's SPF check failed: whoever runs the domain must list this "
    "channel in its SPF record.",
    "7.25": "The sending server's address has no matching name in DNS (reverse DNS).",
    "7.26": "The message failed the recipient's sender checks (SPF, DKIM, DMARC): whoever "
    "runs the sending domain must set them up for this channel.",
}
# When the reply has no enhanced code (or one not above), by its code.
BY_CODE: dict[int, str] = {
    421: "The server is busy or closing the connection.",
    450: "The recipient's mailbox is not available right now.",
    451: "The receiving server had a problem of its own.",
    452: "The receiving server is short of room, or the message has too many recipients.",
    550: "The receiving server refused this recipient (the mailbox may not exist, or its rules "
    "refused the message).",
    551: "The recipient is not at this server.",
    552: "The message is too large, or the mailbox is full.",
    553: "The server does not take this address.",
    554: "The receiving server refused the message.",
    # A mailbox provider's HTTP API (Gmail API, Microsoft Graph): RFC 9110 §15.
    400: "The provider refused the message as it is.",
    401: "The provider no longer accepts this mailbox's access: connect the mailbox again.",
    413: "The message is too large for the provider.",
    429: "The provider asked mailvia to slow down: the channel waits, then goes on.",
}
_NEXT = {
    2: "",
    4: " mailvia tries again by itself.",
    5: " mailvia does not try again.",
}
# A reply that disconnected its channel (outcome channel_broken): the channel's own server
# refused it, not a recipient's, and its mail waits for a reconnect, not a retry. On a
# message's page it refused "this mail"; on a channel's page there is no one message.
_WHY_REFUSED = (
    ": its reply says why (often the sender address, the account's rights or a setting of "
    "the channel)."
)
_REFUSED_THIS = "The channel's server refused to send this mail" + _WHY_REFUSED
_REFUSED_CHANNEL = "The channel's server refused to send mail" + _WHY_REFUSED
_HELD = " Its mail is held until the channel is reconnected."
# A refused OAuth app: the mailbox comes back by itself once the app is mended (no reconnect).
_HELD_FOR_APP = {
    AppSource.ORGANIZATION: " Its mail is held until an admin mends the organization's app; "
    "then it leaves by itself.",
    AppSource.OPERATOR: " Its mail is held until whoever runs mailvia mends its app; then it "
    "leaves by itself.",
}
_ACCEPTED = "Accepted by the receiving server."


# Sign-in refusals (RFC 4954 §6): Test connection's hints say what to do about them.
@dataclass(frozen=True)
class Said:
    """A reply as the pages show it: plain words, and the server's own words beside them."""

    sentence: str
    code: str  # the reply as the server gave it: `451 4.2.0 Temporary failure`


def reply_words(
    reply: Reply,
    *,
    disconnected: bool = False,
    held: bool = False,
    channel_page: bool = False,
    channel: Channel | None = None,
) -> Said:
    """A reply in plain words: mailvia's own replies by what they mean, sign-in refusals with
    what to change (`fix_for`, domain/probe.py: in the words of `channel`'s kind when known, as
    the API's and CLI's `state_hint` and hints say it), then by the enhanced code's subject and
    detail, then by the code, then by the class; what happens next follows from the class.

    `disconnected`: the reply disconnected its channel, so what happens next is no retry but
    a reconnect, and a 5.7.1 refusing the sender is the channel's server's, not a recipient's
    spam filter. `held`: and its mail is held now, waiting for that reconnect (the words say
    so; it implies `disconnected`). `channel_page`: the words stand on a channel's page, about
    its mail, not one message."""
    code = str(reply)
    klass = reply.code // 100
    if klass == 2:
        return Said(_ACCEPTED, code)
    app = app_of(reply) if held else None
    after = _HELD_FOR_APP[app] if app else (_HELD if held else "")
    own = _own_words(reply)
    if own is not None:
        return Said(own + after, code)
    fix = fix_for(reply, channel)  # a sign-in refused: what to change, as the API says it
    if fix is not None:
        return Said(fix + after, code)
    detail = reply.enhanced.split(".", 1)[1] if reply.enhanced else ""
    problem = PROBLEMS.get(detail) or BY_CODE.get(reply.code)
    if problem is None:
        problem = "A temporary problem." if klass == 4 else "The server refused it."
    http_api = reply.enhanced is None and reply.text.startswith(f"HTTP {reply.code}")
    if disconnected or held:
        refused = _REFUSED_CHANNEL if channel_page else _REFUSED_THIS
        return Said((problem if http_api else refused) + after, code)
    return Said(problem if http_api else problem + _NEXT.get(klass, ""), code)


def _own_words(reply: Reply) -> str | None:
    """mailvia's own replies (`451 4.4.2 mailvia: ...`): network failures and refusals."""
    if not reply.text.startswith("mailvia:"):
        return None
    if reply.text.startswith("mailvia: cancelled: "):  # store/mending.py
        return f"Cancelled {reply.text.removeprefix('mailvia: cancelled: ')}: it will not be sent."
    if "may have been delivered" in reply.text:
        return (
            "No answer after the message was sent: it may have arrived. mailvia tries again "
            "and marks it a possible duplicate."
        )
    if reply.enhanced == "4.4.2":
        return "mailvia could not reach the server or lost the connection. It tries again."
    if reply.enhanced == "5.7.10":
        return "A secure connection could not be set up, so mailvia sent nothing."
    if reply.enhanced == "5.4.4":  # the address guard's one refusal: which setting allows it
        return hint_for(reply)
    return None


def reason_words(
    reason: str | None,
    *,
    disconnected: bool = False,
    held: bool = False,
    channel_page: bool = False,
    channel: Channel | None = None,
) -> Said | None:
    """Why a channel was disconnected (its `state_reason`, with `disconnected`) or a message
    waits: a reply in plain words (`reply_words` says what the options do), or the reason as
    it is when it is not a server's reply (None: no reason given)."""
    if not reason:
        return None
    reply = Reply.recorded(reason, channel.refusal if channel is not None else None)
    if reply is None:
        return Said(reason, "")
    return reply_words(
        reply, disconnected=disconnected, held=held, channel_page=channel_page, channel=channel
    )


def outbox_words(counts: list[tuple[str, int]]) -> str:
    """`3 waiting, 1 on hold`: a channel's mail still in the outbox, by state (`nothing`)."""
    said = [f"{n:,} {STATES[State(s)].label.lower()}" for s, n in counts if n]
    return ", ".join(said) or "nothing"


def ago(at: float, now: float) -> str:
    """`just now`, `3 minutes ago`, `in 2 hours`, `5 days ago`; past a month, the date."""
    seconds = abs(now - at)
    ahead = at > now
    if seconds < 60:
        return "in less than a minute" if ahead else "just now"
    for limit, size, unit in (
        (3600, 60, "minute"),
        (86_400, 3600, "hour"),
        (2_592_000, 86_400, "day"),
    ):
        if seconds < limit:
            count = int(seconds // size)
            words = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"in {words}" if ahead else f"{words} ago"
    return datetime.fromtimestamp(at, UTC).strftime("%-d %b %Y")
