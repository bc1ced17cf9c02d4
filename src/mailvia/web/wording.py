"""How the pages put things into words: routes, limits and budget use, queue counts, presets
and why a channel can or cannot be shared with the team (the seed's rule)."""

from __future__ import annotations

from dataclasses import dataclass

from mailvia.domain.channel import Budget, Channel, Kind, Scope, Unit
from mailvia.domain.message import State
from mailvia.domain.presets import PRESETS, Preset
from mailvia.domain.routing import Route
from mailvia.domain.shaping import UseLog, window_words
from mailvia.domain.tenancy import User
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
