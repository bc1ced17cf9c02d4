"""Channel use cases: add from a preset or by hand, enforce credential scope, list, change
(`edited` checks, `save` stores; mend.py tests an edit before saving it), pause, resume,
remove. Passwords are sealed by the vault before they reach the store; a password
typed into a form rides back to the same user's browser sealed too (`seal_typed`), never in
clear."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from mailvia.domain.channel import (
    Auth,
    Budget,
    Channel,
    ChannelState,
    Kind,
    Owner,
    Provider,
    Scope,
    Security,
    Timeouts,
    TransportKind,
    check_channel,
)
from mailvia.domain.clock import Instant
from mailvia.domain.errors import Forbidden, InvalidChannel, MailviaError, NotFound, not_found
from mailvia.domain.ids import make_id
from mailvia.domain.presets import PRESETS, Preset
from mailvia.domain.retry import RetryPolicy
from mailvia.domain.tenancy import Organization, Team, User, identity_covers
from mailvia.outbox.addresses import check_address, check_domain
from mailvia.outbox.ports import Credentials, Vault
from mailvia.outbox.senders import domain_is_theirs

ADDRESS_SCOPE_NOT_SHARED = "{title} credentials sign in to one mailbox; each rep connects their own"
TYPED_MAX_AGE = 3600.0  # seconds a sealed typed password is good for


class ChannelLookup(Protocol):
    """Finding a channel by name or id."""

    def find_channel(self, org_id: str, name: str) -> Channel | None: ...
    def get_channel(self, channel_id: str) -> Channel: ...


def channel_in(store: ChannelLookup, organization_id: str, ref: str) -> Channel | None:
    """The organization's channel named `ref`, else the one whose id it is (None: neither is
    the organization's)."""
    found = store.find_channel(organization_id, ref)
    if found is None:
        try:
            found = store.get_channel(ref)
        except NotFound:
            return None
    return found if found.organization_id == organization_id else None


class ChannelStore(Protocol):
    """What the channel use cases need from the store; each method is one transaction."""

    def add_channel(self, channel: Channel, secret: bytes | None, now: Instant) -> Channel: ...
    def get_channel(self, channel_id: str) -> Channel: ...
    def find_channel(self, org_id: str, name: str) -> Channel | None: ...
    def list_channels(self, org_id: str | None = None) -> list[Channel]: ...
    def get_organization(self, org_id: str) -> Organization: ...
    def list_teams(self, org_id: str) -> list[Team]: ...
    def list_users(self, org_id: str) -> list[User]: ...
    def channel_secret(self, channel_id: str) -> bytes | None: ...
    def update_channel(self, channel: Channel, secret: bytes | None) -> Channel: ...
    def remove_channel(self, channel_id: str) -> None: ...
    def set_channel_state(
        self, channel_id: str, state: ChannelState, reason: str | None, now: Instant
    ) -> Channel: ...
    def hold_channel(self, channel_id: str, now: Instant) -> int: ...
    def release_channel(self, channel_id: str, now: Instant) -> int: ...
    def identities(self, user_id: str) -> list[str]: ...
    def find_team(self, org_id: str, name: str) -> Team | None: ...
    def find_user(self, email: str) -> User | None: ...
    def domain_organization(self, domain: str) -> str | None: ...


@dataclass(frozen=True)
class ChannelSpec:
    """A channel as a user asks for it; unset fields come from the preset or defaults."""

    name: str
    preset: str | None = None
    host: str | None = None
    port: int | None = None
    security: Security | None = None
    auth: Auth | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_pem: str | None = None
    scope: Scope | None = None
    address: str | None = None
    domains: tuple[str, ...] = ()
    user_email: str | None = None  # owner, address scope
    team_name: str | None = None  # owner, domain scope
    budgets: tuple[Budget, ...] | None = None
    max_connections: int | None = None
    max_recipients_per_message: int | None = None
    retry: RetryPolicy | None = None
    timeouts: Timeouts | None = None
    transport: TransportKind = TransportKind.SMTP
    oauth: Provider | None = None  # an OAuth mailbox (made by the OAuth connect flow)


@dataclass(frozen=True)
class ChannelChanges:
    """Fields to change on a saved channel; None leaves a field as it is (an empty
    `username` clears it)."""

    name: str | None = None
    password: str | None = field(default=None, repr=False)
    budgets: tuple[Budget, ...] | None = None
    max_recipients_per_message: int | None = None
    max_connections: int | None = None
    host: str | None = None
    port: int | None = None
    security: Security | None = None
    auth: Auth | None = None
    username: str | None = None

    @property
    def connection(self) -> bool:
        """Whether a field that connecting or signing in uses changes (then the channel is
        tested again before it is saved)."""
        fields = (self.host, self.port, self.security, self.auth, self.username, self.password)
        return any(f is not None for f in fields)


class Channels:
    """What reps and admins do with channels."""

    def __init__(
        self,
        store: ChannelStore,
        vault: Vault,
        *,
        check_plaintext_host: Callable[[str], None],
        on_change: Callable[[str], None] = lambda channel_id: None,
        pool: Callable[[], Channel | None] = lambda: None,
    ) -> None:
        self.store = store
        self.vault = vault
        self.check_plaintext_host = check_plaintext_host
        self.on_change = on_change
        self.pool = pool  # the shared pool (None: POOL_RELAY unset)

    def add(self, actor: User, spec: ChannelSpec, now: Instant) -> tuple[Channel, list[str]]:
        """Create a channel; raises InvalidChannel, Forbidden, Conflict. Returns warnings."""
        channel, warnings = self.build(actor, spec, now)
        secret = self.vault.seal(spec.password.encode()) if spec.password else None
        return self.store.add_channel(channel, secret, now), warnings

    def build(self, actor: User, spec: ChannelSpec, now: Instant) -> tuple[Channel, list[str]]:
        """The channel a spec describes, checked, without storing it."""
        preset = _preset(spec.preset)
        _check_name(spec.name)
        host = spec.host or (preset.host if preset else None)
        if not host:
            raise InvalidChannel("host: required without a preset")
        username = spec.username or (preset.username if preset else None)
        scope = spec.scope or (preset.scope if preset else _default_scope(spec))
        owner, address, domains = self._scope_fields(actor, spec, scope, username, preset)
        limits = preset.limits(spec.transport) if preset else None
        channel = Channel(
            id=make_id("ch", now, os.urandom(10)),
            organization_id=actor.organization_id,
            name=spec.name.strip(),
            kind=Kind.SMTP,
            preset=preset.name if preset else None,
            host=host,
            port=spec.port or (preset.port if preset else 587),
            security=spec.security or (preset.security if preset else Security.STARTTLS),
            auth=spec.auth or (preset.auth if preset else Auth.PLAIN),
            scope=scope,
            owner=owner,
            username=username,
            has_password=bool(spec.password),
            ca_pem=spec.ca_pem,
            address=address,
            domains=domains,
            budgets=spec.budgets
            if spec.budgets is not None
            else (limits.budgets if limits else ()),
            max_recipients_per_message=spec.max_recipients_per_message
            or (limits.max_recipients_per_message if limits else 1000),
            max_connections=spec.max_connections or (limits.max_connections if limits else 5),
            transport=spec.transport,
            oauth=spec.oauth,
            retry=spec.retry or RetryPolicy(),
            timeouts=spec.timeouts or Timeouts(),
        )
        check_channel(channel)
        if channel.security is Security.NONE:
            self.check_plaintext_host(channel.host)
        return channel, _warnings(channel, preset)

    def _scope_fields(
        self,
        actor: User,
        spec: ChannelSpec,
        scope: Scope,
        username: str | None,
        preset: Preset | None,
    ) -> tuple[Owner, str | None, tuple[str, ...]]:
        if scope is Scope.ADDRESS:
            if spec.team_name:
                title = preset.title if preset else "These"
                raise Forbidden(
                    ADDRESS_SCOPE_NOT_SHARED.format(title=title)
                    + ": an address-scoped channel cannot be a team channel"
                )
            owner = self._owner_user(actor, spec.user_email)
            address = spec.address or (username if username and "@" in username else None)
            address = check_address(address or owner.email, "address").lower()
            if not any(identity_covers(i, address) for i in self.store.identities(owner.id)):
                raise Forbidden(f"{address} is not one of {owner.email}'s sender identities")
            return Owner(user_id=owner.id), address, ()
        if preset is not None and preset.scope is Scope.ADDRESS:
            raise Forbidden(
                ADDRESS_SCOPE_NOT_SHARED.format(title=preset.title)
                + ": an address-scoped channel cannot be a team channel"
            )
        if not actor.is_admin:
            raise Forbidden("only admins create team (domain-scoped) channels")
        team = self.store.find_team(actor.organization_id, spec.team_name or "default")
        if team is None:
            teams = [t.name for t in self.store.list_teams(actor.organization_id)]
            where = self.where(actor)
            raise not_found("team", spec.team_name or "default", where, teams, "teams")
        domains = tuple(sorted({check_domain(d) for d in spec.domains}))
        for domain in domains:
            if not domain_is_theirs(self.store.domain_organization(domain), actor.organization_id):
                raise Forbidden(f"{domain} is not assigned to your organization")
        return Owner(team_id=team.id), None, domains

    def _owner_user(self, actor: User, email: str | None) -> User:
        if email is None or email.lower() == actor.email:
            return actor
        if not actor.is_admin:
            raise Forbidden("members connect channels only for themselves")
        user = self.store.find_user(email)
        if user is None or user.organization_id != actor.organization_id:
            users = [u.email for u in self.store.list_users(actor.organization_id)]
            raise not_found("user", email, self.where(actor), users, "users")
        return user

    def where(self, actor: User) -> str:
        """`organization acme`: where a lookup for the actor looked (for "not found")."""
        return f"organization {self.store.get_organization(actor.organization_id).name}"

    def visible(self, actor: User) -> list[Channel]:
        """Admins see the organization's channels; members their own and their team's."""
        channels = self.store.list_channels(actor.organization_id)
        return [c for c in channels if _may_see(actor, c)]

    def listed(self, actor: User) -> list[Channel]:
        """What the actor may see (`visible`), then the shared pool, where mail goes that no
        other channel takes, when the operator set one up (kind `pool`): its row as it reads
        now, as the others are read (paused or disconnected since the process started)."""
        pool = self.pool()
        read = [self.store.get_channel(pool.id)] if pool is not None else []
        return [*self.visible(actor), *read]

    def get(self, actor: User, ref: str) -> Channel:
        """A channel by id or name; NotFound for channels the actor may not see (the shared
        pool is listed, never got: it is the operator's, nothing here changes or tests it)."""
        found = channel_in(self.store, actor.organization_id, ref)
        if found is None or not _may_see(actor, found):
            names = [c.name for c in self.visible(actor)]
            raise not_found("channel", ref, self.where(actor), names, "channels")
        return found

    def manageable(self, actor: User, ref: str) -> Channel:
        """The channel if the actor may change it (its owner or an admin). Raises NotFound,
        Forbidden."""
        channel = self.get(actor, ref)
        if channel.owner.user_id != actor.id and not actor.is_admin:
            raise Forbidden("only the channel's owner or an admin may change it")
        return channel

    def edited(self, actor: User, ref: str, changes: ChannelChanges) -> tuple[Channel, Channel]:
        """The channel as it is and as `changes` would make it, checked, nothing stored.
        Raises NotFound, Forbidden (not the owner nor an admin), InvalidChannel (fields that
        do not fit together, an OAuth mailbox's connection, a plain-text host not allowed)."""
        channel = self.manageable(actor, ref)
        if changes.name is not None:
            _check_name(changes.name)
        if channel.oauth is not None and changes.connection:
            raise InvalidChannel(
                "an OAuth mailbox's server and sign-in come from its provider: reconnect it "
                "instead of editing them"
            )
        if changes.auth is Auth.XOAUTH2 and channel.oauth is None:
            raise InvalidChannel("auth xoauth2: connect the mailbox by OAuth instead")
        username = channel.username if changes.username is None else changes.username.strip()
        updated = replace(
            channel,
            name=channel.name if changes.name is None else changes.name.strip(),
            host=channel.host if changes.host is None else changes.host.strip(),
            port=channel.port if changes.port is None else changes.port,
            security=changes.security or channel.security,
            auth=changes.auth or channel.auth,
            username=username or None,
            budgets=channel.budgets if changes.budgets is None else changes.budgets,
            max_recipients_per_message=changes.max_recipients_per_message
            or channel.max_recipients_per_message,
            max_connections=changes.max_connections or channel.max_connections,
            has_password=channel.has_password or bool(changes.password),
        )
        check_channel(updated)
        if updated.security is Security.NONE:
            self.check_plaintext_host(updated.host)
        return channel, updated

    def save(self, updated: Channel, password: str | None) -> Channel:
        """Store a channel `edited` made (a new password sealed, else the stored one kept).
        Raises NotFound, Conflict (the name is taken)."""
        secret: bytes | None
        if password:
            secret = self.vault.seal(password.encode())
        else:
            secret = self.store.channel_secret(updated.id)
        saved = self.store.update_channel(updated, secret)
        self.on_change(saved.id)
        return saved

    def remove(self, actor: User, ref: str) -> None:
        channel = self.manageable(actor, ref)
        self.store.remove_channel(channel.id)
        self.on_change(channel.id)

    def pause(self, actor: User, ref: str, now: Instant) -> tuple[Channel, int]:
        """Pause a channel and hold its queued mail; returns the count held."""
        channel = self.manageable(actor, ref)
        channel = self.store.set_channel_state(
            channel.id, ChannelState.PAUSED, f"paused by {actor.email}", now
        )
        return channel, self.store.hold_channel(channel.id, now)

    def resume(self, actor: User, ref: str, now: Instant) -> tuple[Channel, int]:
        """Make a channel active again and release its held mail in its original order."""
        channel = self.manageable(actor, ref)
        channel = self.store.set_channel_state(channel.id, ChannelState.ACTIVE, None, now)
        released = self.store.release_channel(channel.id, now)
        self.on_change(channel.id)
        return channel, released

    def credentials(self, channel: Channel) -> Credentials | None:
        """Open the channel's sealed password (raises SecretsUnavailable on a wrong key)."""
        if channel.auth is Auth.NONE or not channel.username:
            return None
        sealed = self.store.channel_secret(channel.id)
        password = self.vault.open(sealed).decode() if sealed else ""
        return Credentials(channel.username, password)

    def seal_typed(self, actor: User, password: str, now: Instant) -> str:
        """A password typed into a form, sealed by the vault for this user, to ride back in a
        hidden field (so that Save after Test needs no retyping)."""
        data = json.dumps({"u": actor.id, "p": password, "t": now}).encode()
        return base64.urlsafe_b64encode(self.vault.seal(data)).decode()

    def open_typed(self, actor: User, sealed: str, now: Instant) -> str | None:
        """The password `seal_typed` sealed, if it is this user's and at most TYPED_MAX_AGE
        old; else None."""
        if not sealed:
            return None
        try:
            data = json.loads(self.vault.open(base64.urlsafe_b64decode(sealed.encode())))
        except (MailviaError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("u") != actor.id:
            return None
        if not isinstance(data.get("t"), float | int) or now - data["t"] > TYPED_MAX_AGE:
            return None
        password = data.get("p")
        return password if isinstance(password, str) else None


def _check_name(name: str) -> None:
    if any(c in name for c in "\r\n\0") or not name.strip():
        raise InvalidChannel("name: one line of text is required")


def _preset(name: str | None) -> Preset | None:
    if name is None:
        return None
    if name not in PRESETS:
        raise InvalidChannel(f"preset {name!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _default_scope(spec: ChannelSpec) -> Scope:
    if spec.domains or spec.team_name:
        return Scope.DOMAIN
    return Scope.ADDRESS


def _may_see(actor: User, channel: Channel) -> bool:
    return (
        actor.is_admin
        or channel.owner.user_id == actor.id
        or (channel.owner.team_id == actor.team_id)
    )


def _warnings(channel: Channel, preset: Preset | None) -> list[str]:
    warnings = []
    if preset is not None:
        host_warning = preset.host_warning(channel.host)
        if host_warning:
            warnings.append(host_warning)
        if preset.mailbox:
            warnings.append(preset.advice)
    return warnings
