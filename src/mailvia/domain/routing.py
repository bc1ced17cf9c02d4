"""Routing: which channel a message takes, and why, from most to least specific.

1. the sender's own address-scoped channel for that From;
2. a domain-scoped team channel covering the From's domain (the sender's team first);
3. the organization's default channel, when it may send as that From;
4. the shared pool.
A disconnected or paused channel holds its mail; with fallback `next` the route moves on to
the next channel that is active and may send as that From. An address-scoped channel (one
person's mailbox) carries only its owner's mail: it is never chosen for anyone else, even
when stored as the organization's default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailvia.domain.channel import (
    Channel,
    ChannelState,
    Kind,
    Scope,
    carries_mail_of,
    may_send_as,
)
from mailvia.domain.tenancy import Fallback, Organization, User

POOL_RULE = "shared pool"  # the last rule: mail no other channel takes


@dataclass(frozen=True)
class RouteStep:
    """One rule looked at, and what it found."""

    rule: str
    channel_id: str | None
    channel_name: str | None
    verdict: str  # "chosen", "held", "skipped", "none"
    reason: str


@dataclass(frozen=True)
class Route:
    """The channel chosen (None when nothing can carry this From) and the steps taken."""

    channel: Channel | None
    steps: tuple[RouteStep, ...]

    @property
    def held(self) -> bool:
        return self.channel is not None and self.channel.state is not ChannelState.ACTIVE

    @property
    def reached_pool(self) -> bool:
        """Whether the route looked at the shared pool (no channel before it was chosen or
        held it): then the pool's state decides (with fallback `next`, between the pool and
        the first channel skipped), and nothing else does."""
        return any(step.rule == POOL_RULE for step in self.steps)

    @property
    def reason(self) -> str:
        chosen = [s for s in self.steps if s.verdict in ("chosen", "held")]
        return chosen[-1].reason if chosen else self.steps[-1].reason


def _candidates(
    sender: User,
    from_address: str,
    channels: Sequence[Channel],
    organization: Organization,
    pool: Channel | None,
) -> list[tuple[str, Channel | None, str]]:
    address = from_address.lower()
    domain = address.rpartition("@")[2]
    own = [
        c
        for c in channels
        if c.scope is Scope.ADDRESS
        and c.owner.user_id == sender.id
        and (c.address or "").lower() == address
    ]
    team = sorted(
        (
            c
            for c in channels
            if c.scope is Scope.DOMAIN
            and c.owner.team_id is not None
            and domain in {d.lower() for d in c.domains}
        ),
        key=lambda c: (c.owner.team_id != sender.team_id, c.name),
    )
    default = next((c for c in channels if c.id == organization.default_channel_id), None)
    return [
        ("own channel", own[0] if own else None, f"the sender's own channel for {address}"),
        ("team channel", team[0] if team else None, f"a team channel for {domain}"),
        ("organization default", default, "the organization's default channel"),
        (POOL_RULE, pool, "the shared pool"),
    ]


def route(
    *,
    sender: User,
    from_address: str,
    channels: Sequence[Channel],
    organization: Organization,
    pool: Channel | None,
) -> Route:
    """Choose the channel for mail `sender` sends From `from_address` (pure; never raises)."""
    steps: list[RouteStep] = []
    held: Channel | None = None
    for rule, channel, what in _candidates(sender, from_address, channels, organization, pool):
        if channel is None:
            steps.append(RouteStep(rule, None, None, "none", f"none: {what} is not set up"))
            continue
        unfit = _unfit(channel, sender, from_address)
        if unfit is not None:
            steps.append(_step(rule, channel, "skipped", unfit))
            continue
        if channel.state is ChannelState.ACTIVE:
            steps.append(_step(rule, channel, "chosen", f"Using {what}: {channel.name}"))
            return Route(channel, tuple(steps))
        if organization.fallback is Fallback.HOLD:
            reason = (
                f"Holding mail: {what} {channel.name} is "
                f"{channel.state}; the organization's fallback is hold"
            )
            steps.append(_step(rule, channel, "held", reason))
            return Route(channel, tuple(steps))
        reason = f"{channel.name} is {channel.state}; fallback next: trying the next channel"
        steps.append(_step(rule, channel, "skipped", reason))
        held = held or channel
    if held is not None:
        reason = f"Holding mail on {held.name}: no other channel may send as {from_address}"
        steps.append(RouteStep("fallback", held.id, held.name, "held", reason))
    return Route(held, tuple(steps))


def _unfit(channel: Channel, sender: User, from_address: str) -> str | None:
    """Why the channel can never carry this mail, whatever its state (None: it can)."""
    if not carries_mail_of(channel, sender.id):
        return (
            f"{channel.name} is the mailbox of {channel.address}: it carries only its "
            "owner's own mail"
        )
    if not may_send_as(channel, from_address):
        return (
            f"{channel.name} may not send as "
            f"{from_address} (its credential covers {_covers(channel)})"
        )
    return None


def _step(rule: str, channel: Channel, verdict: str, reason: str) -> RouteStep:
    return RouteStep(rule, channel.id, channel.name, verdict, reason)


def _covers(channel: Channel) -> str:
    if channel.kind is Kind.POOL:
        return "any address"
    if channel.scope is Scope.ADDRESS:
        return f"only {channel.address}"
    return "the domains " + ", ".join(channel.domains)
