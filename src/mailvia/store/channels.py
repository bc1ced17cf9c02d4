"""Channels in SQL: every field of a Channel (limits, retry and timeouts as JSON) and its
sealed secret, which only `channel_secret`/`channel_secrets` ever read back."""

from __future__ import annotations

import dataclasses
import functools
import json
import operator
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from mailvia.domain.channel import (
    RUNTIME_FIELDS,
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
    Unit,
    mailbox_taken,
    own_mailbox,
)
from mailvia.domain.clock import Instant
from mailvia.domain.errors import Conflict, NotFound
from mailvia.domain.message import PENDING
from mailvia.domain.retry import RetryPolicy
from mailvia.store.engine import Database
from mailvia.store.keep import KEEP
from mailvia.store.keep import Keep as _Keep
from mailvia.store.tables import channels, messages, organizations, users


def _known(cls: Any, data: dict[str, Any]) -> dict[str, Any]:
    # Ignore keys a newer version may have written.
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def channel_values(channel: Channel) -> dict[str, Any]:
    """The columns of a channel (all but id, secret and created_at)."""
    budgets = [
        {"count": b.count, "per_seconds": b.per_seconds, "unit": b.unit.value}
        for b in channel.budgets
    ]
    return {
        "organization_id": channel.organization_id,
        "name": channel.name,
        "kind": Kind(channel.kind).value,
        "preset": channel.preset,
        "host": channel.host,
        "port": channel.port,
        "security": Security(channel.security).value,
        "auth": Auth(channel.auth).value,
        "scope": Scope(channel.scope).value,
        "owner_user_id": channel.owner.user_id,
        "owner_team_id": channel.owner.team_id,
        "username": channel.username,
        "has_password": channel.has_password,
        "ca_pem": channel.ca_pem,
        "address": channel.address,
        "domains": json.dumps(list(channel.domains)),
        "budgets": json.dumps(budgets),
        "max_recipients_per_message": channel.max_recipients_per_message,
        "max_connections": channel.max_connections,
        "state": ChannelState(channel.state).value,
        "state_reason": channel.state_reason,
        "state_changed_at": channel.state_changed_at,
        "throttled_until": channel.throttled_until,
        "throttle_level": channel.throttle_level,
        "generation": channel.generation,
        "refusal": channel.refusal,
        "retry": json.dumps(dataclasses.asdict(channel.retry)),
        "timeouts": json.dumps(dataclasses.asdict(channel.timeouts)),
        "transport": TransportKind(channel.transport).value,
        "oauth_provider": Provider(channel.oauth).value if channel.oauth else None,
    }


def channel_of(row: Any) -> Channel:
    """A Channel from its row (a SQLAlchemy Row), made once per distinct row: a Channel is
    immutable and every single POST reads its organization's channels for its route, where
    making each (its JSON columns, enums and dataclasses) cost about as much as the read.
    Any change to any column is another row, so what comes back is always made from what
    was read. (Every channel column is text, a number, a boolean or NULL: hashable.)"""
    return _made(_picker(row._fields)(row))  # its own columns only


@functools.lru_cache(maxsize=64)
def _picker(fields: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A row's channel columns, in `_CHANNEL_NAMES`' order, for rows with these fields."""
    return operator.itemgetter(*[fields.index(name) for name in _CHANNEL_NAMES])


@functools.lru_cache(maxsize=1024)
def _made(values: tuple[Any, ...]) -> Channel:
    return _channel_from(SimpleNamespace(**dict(zip(_CHANNEL_NAMES, values, strict=True))))


def _channel_from(row: Any) -> Channel:
    budgets = tuple(
        Budget(int(b["count"]), float(b["per_seconds"]), Unit(b.get("unit", "messages")))
        for b in json.loads(row.budgets)
    )
    return Channel(
        id=row.id,
        organization_id=row.organization_id,
        name=row.name,
        kind=Kind(row.kind),
        host=row.host,
        port=row.port,
        security=Security(row.security),
        auth=Auth(row.auth),
        scope=Scope(row.scope),
        owner=Owner(user_id=row.owner_user_id, team_id=row.owner_team_id),
        preset=row.preset,
        username=row.username,
        has_password=bool(row.has_password),
        ca_pem=row.ca_pem,
        address=row.address,
        domains=tuple(json.loads(row.domains)),
        budgets=budgets,
        max_recipients_per_message=row.max_recipients_per_message,
        max_connections=row.max_connections,
        state=ChannelState(row.state),
        state_reason=row.state_reason,
        state_changed_at=row.state_changed_at,
        throttled_until=row.throttled_until,
        throttle_level=row.throttle_level,
        generation=row.generation,
        refusal=row.refusal,
        retry=RetryPolicy(**_known(RetryPolicy, json.loads(row.retry))),
        timeouts=Timeouts(**_known(Timeouts, json.loads(row.timeouts))),
        transport=TransportKind(row.transport),
        oauth=Provider(row.oauth_provider) if row.oauth_provider else None,
    )


# A channel's columns but its sealed secret (store/from_reads.py reads them too).
CHANNEL_COLUMNS = [c for c in channels.c if c.name != "secret"]
_CHANNEL_NAMES = tuple(c.name for c in CHANNEL_COLUMNS)
# Every channel, and an organization's (read by every submit's route): built once.
_ALL_CHANNELS = sa.select(*CHANNEL_COLUMNS).order_by(channels.c.name, channels.c.id)
_ORG_CHANNELS = _ALL_CHANNELS.where(channels.c.organization_id == sa.bindparam("org_id"))
_NONTERMINAL = sorted(s.value for s in PENDING)


class ChannelStore:
    """Channel methods of the Store port, plus secret rotation and whole-channel updates."""

    _db: Database

    def add_channel(self, channel: Channel, secret: bytes | None, now: Instant) -> Channel:
        """Insert a channel with its sealed secret. Raises Conflict if the organization has a
        channel of that name (or the id is taken), or its owner an own channel for its address
        (`check_one_mailbox`); NotFound for an unknown organization."""
        with self._db.write(
            conflict=f"a channel named {channel.name!r} already exists in this organization",
            missing=f"no organization {channel.organization_id!r}",
        ) as conn:
            conn.execute(
                channels.insert().values(
                    id=channel.id, secret=secret, created_at=now, **channel_values(channel)
                )
            )
            check_one_mailbox(conn, channel)  # after the insert: a taken name says so first
            return read_channel(conn, channel.id)

    def update_channel(self, channel: Channel, secret: bytes | _Keep | None = KEEP) -> Channel:
        """Rewrite the channel's settings (and its secret unless KEEP); its state and throttle
        are left alone (they change only through set_channel_state / set_channel_throttle, so
        an edit never undoes a disconnect the dispatcher just recorded); its generation moves
        on. Raises NotFound, or Conflict when the new name is taken in the organization (or its
        address is another of its owner's own channels')."""
        values: dict[str, Any] = channel_values(channel)
        for runtime in RUNTIME_FIELDS:
            values.pop(runtime, None)
        values["generation"] = channels.c.generation + 1
        if secret is not KEEP:
            values["secret"] = secret
        with self._db.write(
            conflict=f"a channel named {channel.name!r} already exists in this organization",
            missing=f"no organization {channel.organization_id!r}",
        ) as conn:
            before = stored_mailbox(conn, channel.id)
            result = conn.execute(
                channels.update().where(channels.c.id == channel.id).values(**values)
            )
            if result.rowcount == 0:
                raise NotFound(f"no channel {channel.id!r}")
            check_one_mailbox(conn, channel, before=before)
            return read_channel(conn, channel.id)

    def get_channel(self, channel_id: str) -> Channel:
        """The channel. Raises NotFound."""
        with self._db.read() as conn:
            return read_channel(conn, channel_id)

    def find_channel(self, org_id: str, name: str) -> Channel | None:
        """The organization's channel with this name, or None."""
        query = sa.select(*CHANNEL_COLUMNS).where(
            channels.c.organization_id == org_id, channels.c.name == name
        )
        with self._db.read() as conn:
            row = conn.execute(query).first()
        return None if row is None else channel_of(row)

    def list_channels(self, org_id: str | None = None) -> list[Channel]:
        """The organization's channels (every channel when None), by name."""
        query, values = (
            (_ALL_CHANNELS, {}) if org_id is None else (_ORG_CHANNELS, {"org_id": org_id})
        )
        with self._db.read() as conn:
            return [channel_of(row) for row in conn.execute(query, values)]

    def channel_secret(self, channel_id: str) -> bytes | None:
        """The channel's sealed secret (None when it has none). Raises NotFound."""
        with self._db.read() as conn:
            row = conn.execute(
                sa.select(channels.c.secret).where(channels.c.id == channel_id)
            ).first()
        if row is None:
            raise NotFound(f"no channel {channel_id!r}")
        return None if row.secret is None else bytes(row.secret)

    def channel_secrets(self) -> list[tuple[str, bytes]]:
        """Every stored secret with its channel id (for re-sealing under a new key)."""
        query = (
            sa.select(channels.c.id, channels.c.secret)
            .where(channels.c.secret.is_not(None))
            .order_by(channels.c.id)
        )
        with self._db.read() as conn:
            return [(row.id, bytes(row.secret)) for row in conn.execute(query)]

    def remove_channel(self, channel_id: str) -> None:
        """Delete the channel and clear it as any organization's default. Raises Conflict while
        it still has mail to send, NotFound if it does not exist."""
        with self._db.write() as conn:
            pending = conn.execute(
                sa.select(sa.func.count())
                .select_from(messages)
                .where(messages.c.channel_id == channel_id, messages.c.state.in_(_NONTERMINAL))
            ).scalar_one()
            if pending:
                raise Conflict(
                    f"channel {channel_id!r} still has {pending} message(s) to send; "
                    "cancel them or let them finish first"
                )
            result = conn.execute(channels.delete().where(channels.c.id == channel_id))
            if result.rowcount == 0:
                raise NotFound(f"no channel {channel_id!r}")
            conn.execute(
                organizations.update()
                .where(organizations.c.default_channel_id == channel_id)
                .values(default_channel_id=None)
            )

    def set_channel_state(
        self, channel_id: str, state: ChannelState, reason: str | None, now: Instant
    ) -> Channel:
        """Set the state, its reason and state_changed_at = now (the generation moves on).
        Raises NotFound."""
        with self._db.write() as conn:
            result = conn.execute(
                channels.update()
                .where(channels.c.id == channel_id)
                .values(**state_values(state, reason, now))
            )
            if result.rowcount == 0:
                raise NotFound(f"no channel {channel_id!r}")
            return read_channel(conn, channel_id)

    def disconnect_channel(
        self, seen: Channel, reason: str, now: Instant, *, refusal: str | None = None
    ) -> Channel | None:
        """Mark the channel disconnected for `reason` (and an OAuth refusal's kind), only if it
        is active and still in the generation `seen` has (one conditional UPDATE: of two
        parties that saw it so, one does). Returns the channel disconnected, or None: it is
        not active (paused, already disconnected), changed since (reconnected, edited) or is
        gone."""
        with self._db.write() as conn:
            result = conn.execute(
                channels.update()
                .where(
                    channels.c.id == seen.id,
                    channels.c.state == ChannelState.ACTIVE.value,
                    channels.c.generation == seen.generation,
                )
                .values(**state_values(ChannelState.DISCONNECTED, reason, now, refusal))
            )
            return read_channel(conn, seen.id) if result.rowcount == 1 else None

    def set_channel_throttle(self, channel_id: str, until: Instant | None, level: int) -> None:
        """Pause the channel until `until` (None: not throttled) at this throttle level.
        Raises NotFound."""
        with self._db.write() as conn:
            result = conn.execute(
                channels.update()
                .where(channels.c.id == channel_id)
                .values(throttled_until=until, throttle_level=level)
            )
            if result.rowcount == 0:
                raise NotFound(f"no channel {channel_id!r}")


_UNSET: Any = object()


def stored_mailbox(conn: sa.Connection, channel_id: str) -> tuple[str, str] | None:
    """`own_mailbox` of the channel as stored (None: not an own one, or no such channel)."""
    row = conn.execute(sa.select(*CHANNEL_COLUMNS).where(channels.c.id == channel_id)).first()
    return None if row is None else own_mailbox(channel_of(row))


def check_one_mailbox(
    conn: sa.Connection, channel: Channel, *, before: tuple[str, str] | None = _UNSET
) -> None:
    """Raise Conflict if the owner of `channel`, a user's own address-scoped channel, has
    another own channel for its address (domain/channel.py `own_mailbox`); run after the
    row's insert or update (a taken name is refused first, as before). An update passes
    what the row was `before` it (`stored_mailbox`): the check runs only when the update
    moves the channel to another owner, scope or address, so an edit that does not (a
    password, a rename, a budget, a probe's save, an OAuth reconnect) never meets a pair a
    database made before this rule keeps. The owner's user row is locked before the check,
    so two adds racing on PostgreSQL (READ COMMITTED: the check that follows the lock sees
    what the other committed) cannot both pass; SQLite's write transaction holds its lock
    from the first statement already."""
    mine = own_mailbox(channel)
    if mine is None or (before is not _UNSET and before == mine):
        return
    owner, address = mine
    conn.execute(sa.select(users.c.id).where(users.c.id == owner).with_for_update()).first()
    row = conn.execute(
        sa.select(*CHANNEL_COLUMNS)
        .where(
            channels.c.owner_user_id == owner,
            channels.c.scope == Scope.ADDRESS.value,
            sa.func.lower(channels.c.address) == address,
            channels.c.id != channel.id,
        )
        .order_by(channels.c.name, channels.c.id)
        .limit(1)
    ).first()
    if row is not None:
        raise Conflict(mailbox_taken(channel_of(row)))


def state_values(
    state: ChannelState, reason: str | None, now: Instant, refusal: str | None = None
) -> dict[str, Any]:
    """Any change of state clears the refusal kind, but a disconnect for one."""
    return {
        "state": ChannelState(state).value,
        "state_reason": reason,
        "refusal": refusal,
        "state_changed_at": now,
        "generation": channels.c.generation + 1,
    }


def read_channel(conn: sa.Connection, channel_id: str) -> Channel:
    row = conn.execute(sa.select(*CHANNEL_COLUMNS).where(channels.c.id == channel_id)).first()
    if row is None:
        raise NotFound(f"no channel {channel_id!r}")
    return channel_of(row)
