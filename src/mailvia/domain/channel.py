"""Channels: one way out for mail, with its security, auth, credential scope, limits and state."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mailvia.domain.clock import Instant
from mailvia.domain.errors import InvalidChannel
from mailvia.domain.retry import RetryPolicy


class Kind(StrEnum):
    SMTP = "smtp"
    POOL = "pool"


class Security(StrEnum):
    STARTTLS = "starttls"  # STARTTLS is required; a server that does not offer it is an error
    TLS = "tls"  # implicit TLS from the first byte
    NONE = "none"  # only with auth none, only to hosts the operator allows


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
    state: ChannelState = ChannelState.ACTIVE
    state_reason: str | None = None
    state_changed_at: Instant | None = None
    throttled_until: Instant | None = None  # a provider throttle pauses the whole channel
    throttle_level: int = 0  # consecutive throttles: the pause doubles with each
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)

    @property
    def label(self) -> str:
        """How people name the channel in messages: its name."""
        return self.name


def check_channel(channel: Channel) -> None:
    """Raise InvalidChannel when the fields do not fit together (host policy is checked
    by the outbound guard, which can resolve names)."""
    if not channel.host or any(c in channel.host for c in "\r\n\0 /"):
        raise InvalidChannel("host: a host name or address is required")
    if not 0 < channel.port < 65536:
        raise InvalidChannel("port: must be between 1 and 65535")
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
    if channel.max_connections < 1 or channel.max_recipients_per_message < 1:
        raise InvalidChannel("max_connections and max_recipients_per_message must be >= 1")


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
