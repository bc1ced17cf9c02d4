"""Channels: one way out for mail, with its security, auth, credential scope, limits and state."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mailvia.domain.clock import Instant
from mailvia.domain.errors import InvalidChannel
from mailvia.domain.retry import RetryPolicy
from mailvia.domain.tenancy import User


class Kind(StrEnum):
    SMTP = "smtp"
    POOL = "pool"


class Security(StrEnum):
    STARTTLS = "starttls"  # STARTTLS is required; a server that does not offer it is an error
    TLS = "tls"  # implicit TLS from the first byte
    NONE = "none"  # only with auth none, only to hosts the operator allows


class TransportKind(StrEnum):
    """How a channel hands mail over: SMTP, or a mailbox provider's own HTTP API."""

    SMTP = "smtp"
    GMAIL_API = "gmail_api"  # Gmail API users.messages.send, the stored MIME as `raw`
    GRAPH = "graph"  # Microsoft Graph POST /me/sendMail, the stored MIME base64


class Provider(StrEnum):
    """Who issues a mailbox's tokens."""

    GOOGLE = "google"
    MICROSOFT = "microsoft"

    @property
    def display_name(self) -> str:
        return "Google" if self is Provider.GOOGLE else "Microsoft 365"

    @property
    def preset(self) -> str:
        """The channel preset an OAuth mailbox of this provider is made from."""
        return "gmail" if self is Provider.GOOGLE else "microsoft365"

    @property
    def api_transport(self) -> TransportKind:
        """The provider's own HTTP API: the default, since it works where a tenant has
        turned SMTP AUTH off ([N2])."""
        return TransportKind.GMAIL_API if self is Provider.GOOGLE else TransportKind.GRAPH


class Auth(StrEnum):
    PLAIN = "plain"
    LOGIN = "login"
    XOAUTH2 = "xoauth2"
    NONE = "none"


class Scope(StrEnum):
    """Who a credential can speak for: one mailbox, or a sending domain or account."""

    ADDRESS = "address"
    DOMAIN = "domain"


class ChannelState(StrEnum):
    ACTIVE = "active"
    DISCONNECTED = "disconnected"
    PAUSED = "paused"


class Unit(StrEnum):
    MESSAGES = "messages"
    RECIPIENTS = "recipients"


@dataclass(frozen=True)
class Budget:
    """At most `count` messages or recipients in any window of `per_seconds`."""

    count: int
    per_seconds: float
    unit: Unit = Unit.MESSAGES

    def __post_init__(self) -> None:
        if self.count < 1 or self.per_seconds <= 0:
            raise InvalidChannel("a budget needs a count of at least 1 and a positive window")

    @classmethod
    def parse(cls, text: str) -> Budget:
        """Parse `30/60:messages` (count / seconds : unit; the unit defaults to messages)."""
        try:
            rate, _, unit = text.partition(":")
            count, _, seconds = rate.partition("/")
            return cls(int(count), float(seconds), Unit(unit or "messages"))
        except ValueError as exc:
            raise InvalidChannel(
                f"budget {text!r}: expected COUNT/SECONDS[:messages|recipients]"
            ) from exc

    def __str__(self) -> str:
        return f"{self.count}/{self.per_seconds:g}:{self.unit}"


@dataclass(frozen=True)
class Timeouts:
    """Per-command timeouts in seconds; defaults are RFC 5321 §4.5.3.2's minimums
    (connect has none there: Postfix's `smtp_connect_timeout` of 30 s)."""

    connect: float = 30.0
    greeting: float = 300.0
    command: float = 300.0  # EHLO, STARTTLS, AUTH, MAIL, RCPT
    data_init: float = 120.0
    data_block: float = 180.0
    data_end: float = 600.0


@dataclass(frozen=True)
class Owner:
    """A channel belongs to one user (address scope) or one team (domain scope)."""

    user_id: str | None = None
    team_id: str | None = None

    def __post_init__(self) -> None:
        if (self.user_id is None) == (self.team_id is None):
            raise InvalidChannel("a channel is owned by exactly one user or one team")


@dataclass(frozen=True)
class Channel:
    """A configured way out. The password is not here: it lives encrypted in the store."""

    id: str
    organization_id: str
    name: str
    kind: Kind
    host: str
    port: int
    security: Security
    auth: Auth
    scope: Scope
    owner: Owner
    preset: str | None = None
    username: str | None = None
    has_password: bool = False
    ca_pem: str | None = None
    address: str | None = None
    domains: tuple[str, ...] = ()
    budgets: tuple[Budget, ...] = ()
    max_recipients_per_message: int = 1000
    max_connections: int = 3
    transport: TransportKind = TransportKind.SMTP
    oauth: Provider | None = None  # an OAuth mailbox: its tokens live in the store, sealed
    state: ChannelState = ChannelState.ACTIVE
    state_reason: str | None = None
    state_changed_at: Instant | None = None
    throttled_until: Instant | None = None  # a provider throttle pauses the whole channel
    throttle_level: int = 0  # consecutive throttles: the pause doubles with each
    # One more at every change of its state or settings (credentials among them): a
    # disconnect applies only to the channel as the refusal found it (outbox/disconnects.py).
    generation: int = 0
    # Disconnected because an OAuth refusal of this kind (domain/oauth.Refusal's value) was
    # met: the app's refusal brings it back once the app is changed (outbox/oauth/apps.py
    # `_revive`).
    refusal: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)

    @property
    def label(self) -> str:
        """How people name the channel in messages: its name."""
        return self.name


# What any intake accepts for a channel's sizes (API, pages, CLI): beyond these a figure is a
# typo, not a provider's limit (the largest preset allows 500 recipients and 4 connections).
PORT_RANGE = (1, 65535)
MAX_CONNECTIONS_RANGE = (1, 100)
MAX_RECIPIENTS_RANGE = (1, 1000)


def check_channel(channel: Channel) -> None:
    """Raise InvalidChannel when the fields do not fit together (host policy is checked
    by the outbound guard, which can resolve names)."""
    if not channel.host or any(c in channel.host for c in "\r\n\0 /"):
        raise InvalidChannel("host: a host name or address is required")
    _check_range("port", channel.port, PORT_RANGE)
    if channel.security is Security.NONE and channel.auth is not Auth.NONE:
        raise InvalidChannel(
            "security none sends in clear: it is allowed only with auth none "
            "(credentials are never sent unencrypted)"
        )
    if channel.auth in (Auth.PLAIN, Auth.LOGIN) and not channel.username:
        raise InvalidChannel(f"auth {channel.auth}: a username is required")
    if channel.scope is Scope.ADDRESS and not channel.address:
        raise InvalidChannel("scope address: the channel's address is required")
    if channel.scope is Scope.DOMAIN and not channel.domains and channel.kind is Kind.SMTP:
        raise InvalidChannel("scope domain: at least one domain is required")
    _check_oauth(channel)
    _check_range("max_connections", channel.max_connections, MAX_CONNECTIONS_RANGE)
    _check_range(
        "max_recipients_per_message", channel.max_recipients_per_message, MAX_RECIPIENTS_RANGE
    )


def _check_range(name: str, value: int, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise InvalidChannel(f"{name}: must be between {low} and {high}")


def _check_oauth(channel: Channel) -> None:
    """An OAuth mailbox signs in with a bearer token for one address; a provider's API is
    reached only with such a token."""
    if channel.oauth is None:
        if channel.transport is not TransportKind.SMTP:
            raise InvalidChannel(
                f"transport {channel.transport}: only a mailbox connected by OAuth sends "
                "through its provider's API"
            )
        return
    if channel.scope is not Scope.ADDRESS:
        raise InvalidChannel("a mailbox connected by OAuth is address-scoped")
    if channel.auth is not Auth.XOAUTH2:
        raise InvalidChannel("a mailbox connected by OAuth signs in with xoauth2")
    api = channel.oauth.api_transport
    if channel.transport not in (TransportKind.SMTP, api):
        raise InvalidChannel(
            f"transport {channel.transport}: a {channel.oauth.display_name} mailbox sends "
            f"by {api} or smtp"
        )


def may_send_as(channel: Channel, from_address: str) -> bool:
    """Whether the channel's credential can speak for this From address."""
    address = from_address.lower()
    if channel.kind is Kind.POOL:
        return True
    if channel.scope is Scope.ADDRESS:
        return channel.address is not None and channel.address.lower() == address
    domain = address.rpartition("@")[2]
    return domain in {d.lower() for d in channel.domains}


def carries_mail_of(channel: Channel, user_id: str) -> bool:
    """Whether the channel may carry this user's mail at all: an address-scoped channel signs
    in to one person's mailbox, so it carries its owner's own mail and nobody else's (not as
    an organization's default, not as a fallback)."""
    return channel.scope is not Scope.ADDRESS or channel.owner.user_id == user_id


def own_mailbox(channel: Channel) -> tuple[str, str] | None:
    """(owner user id, address) of a user's own address-scoped channel; None for any other.
    A user has at most one own channel per address (the stores refuse a second): the route
    finds a sending address's channel by it, and two would leave which credentials sign in
    to a choice by name."""
    if channel.scope is not Scope.ADDRESS or channel.owner.user_id is None:
        return None
    return channel.owner.user_id, (channel.address or "").lower()


def mailbox_taken(existing: Channel) -> str:
    """The refusal of a second own channel for the address `existing` already sends as."""
    return (
        f"{existing.address} already has its own channel {existing.name!r}: change that "
        "one (a new password, or reconnect it), or remove it first; one address has one "
        "channel"
    )


def concerns(channel: Channel, user: User) -> bool:
    """Whom a channel's trouble (a disconnection, held mail) concerns: its owner, or for a
    team channel its team's admins. They get the notice and the pages' banner."""
    if channel.owner.user_id is not None:
        return channel.owner.user_id == user.id
    return user.is_admin and channel.owner.team_id == user.team_id


def shared_refusal(channel: Channel) -> str | None:
    """Why this channel can never carry other users' mail (None: it can), e.g. as the
    organization's default channel."""
    if channel.scope is not Scope.ADDRESS:
        return None
    return (
        f"{channel.name} is an address-scoped channel: it signs in to the mailbox of "
        f"{channel.address} and carries only its owner's own mail, so it cannot be the "
        "organization's default channel (choose a domain-scoped team channel, or none)"
    )


# A channel's runtime fields: set by its state changes and throttles, never by an edit of its
# settings (the store's update_channel and an OAuth reconnect leave them alone; the
# generation moves on by one instead).
RUNTIME_FIELDS = (
    "state",
    "state_reason",
    "state_changed_at",
    "throttled_until",
    "throttle_level",
    "generation",
    "refusal",
)
