"""The shared pool: the platform's channel (`ch_pool`, in the reserved organization
`_platform`), kept in step with POOL_RELAY at every start; its password stays in the
settings, never in the database."""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import parse_qs, unquote, urlsplit

from mailvia.domain.channel import Auth, Channel, Kind, Owner, Scope, Security
from mailvia.domain.errors import InvalidInput, NotFound
from mailvia.outbox.ports import Credentials
from mailvia.settings import Settings
from mailvia.store import SqlStore

POOL_ORGANIZATION = "_platform"
POOL_CHANNEL_ID = "ch_pool"


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    security: Security
    credentials: Credentials | None


def parse_relay(url: str) -> Relay:
    """`smtp://user:pass@host:port?security=starttls` (security: starttls, tls or none)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise InvalidInput("POOL_RELAY: expected smtp://user:pass@host:port?security=starttls")
    query = parse_qs(parts.query)
    default = "tls" if parts.scheme == "smtps" else "starttls"
    try:
        security = Security(query.get("security", [default])[0])
    except ValueError as exc:
        raise InvalidInput("POOL_RELAY: security must be starttls, tls or none") from exc
    credentials = None
    if parts.username:
        credentials = Credentials(unquote(parts.username), unquote(parts.password or ""))
    return Relay(parts.hostname, parts.port or 587, security, credentials)


def ensure_pool(store: SqlStore, settings: Settings, now: float) -> Channel | None:
    """Keep the shared pool's channel row in step with POOL_RELAY (None when unset)."""
    if not settings.pool_relay:
        return None
    relay = parse_relay(settings.pool_relay)
    org = store.find_organization(POOL_ORGANIZATION) or store.create_organization(
        "org_platform", POOL_ORGANIZATION, now
    )
    team = store.find_team(org.id, "pool") or store.create_team(
        "team_platform", org.id, "pool", now
    )
    channel = Channel(
        id=POOL_CHANNEL_ID,
        organization_id=org.id,
        name="shared pool",
        kind=Kind.POOL,
        host=relay.host,
        port=relay.port,
        security=relay.security,
        auth=Auth.PLAIN if relay.credentials else Auth.NONE,
        scope=Scope.DOMAIN,
        owner=Owner(team_id=team.id),
        username=relay.credentials.username if relay.credentials else None,
        has_password=relay.credentials is not None,
        max_connections=10,
    )
    try:
        existing = store.get_channel(POOL_CHANNEL_ID)
    except NotFound:
        return store.add_channel(channel, None, now)
    channel = replace(
        channel,
        state=existing.state,
        state_reason=existing.state_reason,
        state_changed_at=existing.state_changed_at,
    )
    store.update_channel(channel)
    return channel
