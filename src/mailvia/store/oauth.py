"""OAuth mailboxes in SQL: organizations' OAuth apps, connections under way (flows), and each
mailbox's tokens with the lease that lets one process at a time refresh them. Secrets (client
secrets, tokens, PKCE verifiers) arrive sealed by the vault and are stored as they come."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mailvia.domain.channel import RUNTIME_FIELDS, Channel, ChannelState, Provider, TransportKind
from mailvia.domain.clock import Instant
from mailvia.domain.errors import MailviaError, NotFound
from mailvia.domain.message import State
from mailvia.outbox.oauth.ports import PendingFlow, Revived, SealedApp, StoredTokens
from mailvia.store.channels import (
    channel_values,
    check_one_mailbox,
    read_channel,
    state_values,
    stored_mailbox,
)
from mailvia.store.engine import Database
from mailvia.store.settle import move_messages
from mailvia.store.tables import channels, messages, oauth_apps, oauth_flows, oauth_tokens

log = logging.getLogger(__name__)

a, f, t = oauth_apps.c, oauth_flows.c, oauth_tokens.c
# (kind, key, sealed blob) of every OAuth secret, for re-sealing under a new master key.
OAuthSecret = tuple[str, str, bytes]


def _app_of(row: Any) -> SealedApp:
    return SealedApp(
        organization_id=row.organization_id,
        provider=Provider(row.provider),
        client_id=row.client_id,
        secret=None if row.secret is None else bytes(row.secret),
        tenant=row.tenant,
        updated_at=row.updated_at,
    )


def _flow_of(row: Any) -> PendingFlow:
    return PendingFlow(
        id=row.id,
        organization_id=row.organization_id,
        user_id=row.user_id,
        provider=Provider(row.provider),
        transport=TransportKind(row.transport),
        channel_id=row.channel_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        session=row.session,
        state_hash=row.state_hash,
        verifier=None if row.verifier is None else bytes(row.verifier),
        nonce=row.nonce,
    )


def _tokens_of(row: Any) -> StoredTokens:
    return StoredTokens(
        channel_id=row.channel_id,
        provider=Provider(row.provider),
        client_id=row.client_id,
        address=row.address,
        access=bytes(row.access),
        refresh=None if row.refresh is None else bytes(row.refresh),
        scope=row.scope,
        expires_at=row.expires_at,
        obtained_at=row.obtained_at,
        version=row.version,
        failure=row.failure,
        refusal=row.refusal,
        refused_app=row.refused_app,
    )


def _token_values(tokens: StoredTokens, version: int) -> dict[str, Any]:
    return {
        "channel_id": tokens.channel_id,
        "provider": tokens.provider.value,
        "client_id": tokens.client_id,
        "address": tokens.address,
        "access": tokens.access,
        "refresh": tokens.refresh,
        "scope": tokens.scope,
        "expires_at": tokens.expires_at,
        "obtained_at": tokens.obtained_at,
        "version": version,
        "lease_owner": None,
        "lease_until": None,
        "failure": None,
        "refusal": None,
        "refused_app": None,
    }


class OAuthStore:
    """The OAuth ports of outbox/oauth/ports.py. Each method is one transaction."""

    _db: Database

    # the organization's app
    def oauth_app(self, org_id: str, provider: Provider) -> SealedApp | None:
        query = sa.select(oauth_apps).where(a.organization_id == org_id, a.provider == provider)
        with self._db.read() as conn:
            row = conn.execute(query).first()
        return None if row is None else _app_of(row)

    def put_oauth_app(self, app: SealedApp) -> None:
        """Insert or replace the organization's app for its provider. Raises NotFound for an
        unknown organization."""
        key = sa.and_(a.organization_id == app.organization_id, a.provider == app.provider.value)
        values = {
            "client_id": app.client_id,
            "secret": app.secret,
            "tenant": app.tenant,
            "updated_at": app.updated_at,
        }
        with self._db.write(missing=f"no organization {app.organization_id!r}") as conn:
            if conn.execute(oauth_apps.update().where(key).values(**values)).rowcount == 0:
                conn.execute(
                    oauth_apps.insert().values(
                        organization_id=app.organization_id, provider=app.provider.value, **values
                    )
                )

    def remove_oauth_app(self, org_id: str, provider: Provider) -> bool:
        key = sa.and_(a.organization_id == org_id, a.provider == provider.value)
        with self._db.write() as conn:
            return bool(conn.execute(oauth_apps.delete().where(key)).rowcount)

    # flows
    def add_flow(self, flow: PendingFlow, now: Instant) -> None:
        with self._db.write() as conn:
            conn.execute(oauth_flows.delete().where(f.expires_at < now))
            conn.execute(
                oauth_flows.insert().values(
                    id=flow.id,
                    state_hash=flow.state_hash,
                    organization_id=flow.organization_id,
                    user_id=flow.user_id,
                    provider=flow.provider.value,
                    transport=flow.transport.value,
                    channel_id=flow.channel_id,
                    session=flow.session,
                    verifier=flow.verifier,
                    nonce=flow.nonce,
                    created_at=flow.created_at,
                    expires_at=flow.expires_at,
                )
            )

    def launch_flow(self, flow: PendingFlow, now: Instant) -> bool:
        statement = (
            oauth_flows.update()
            .where(
                f.id == flow.id,
                f.user_id == flow.user_id,
                f.state_hash.is_(None),
                f.expires_at > now,
            )
            .values(
                session=flow.session,
                state_hash=flow.state_hash,
                verifier=flow.verifier,
                nonce=flow.nonce,
            )
        )
        with self._db.write() as conn:
            return conn.execute(statement).rowcount == 1

    def get_flow(self, flow_id: str) -> PendingFlow | None:
        with self._db.read() as conn:
            row = conn.execute(sa.select(oauth_flows).where(f.id == flow_id)).first()
        return None if row is None else _flow_of(row)

    def drop_flow(self, flow_id: str) -> None:
        with self._db.write() as conn:
            conn.execute(oauth_flows.delete().where(f.id == flow_id))

    def take_flow(self, state_hash: str) -> PendingFlow | None:
        with self._db.write() as conn:
            row = conn.execute(
                sa.select(oauth_flows).where(f.state_hash == state_hash).with_for_update()
            ).first()
            if row is None:
                return None
            conn.execute(oauth_flows.delete().where(f.id == row.id))
            return _flow_of(row)

    # tokens
    def oauth_tokens(self, channel_id: str) -> StoredTokens | None:
        with self._db.read() as conn:
            row = conn.execute(sa.select(oauth_tokens).where(t.channel_id == channel_id)).first()
        return None if row is None else _tokens_of(row)

    def oauth_token_list(self, org_id: str) -> list[StoredTokens]:
        """The tokens of the organization's OAuth mailboxes (for their expiry on the pages)."""
        query = (
            sa.select(oauth_tokens)
            .join(channels, channels.c.id == t.channel_id)
            .where(channels.c.organization_id == org_id)
        )
        with self._db.read() as conn:
            return [_tokens_of(row) for row in conn.execute(query)]

    def lease_tokens(self, channel_id: str, owner: str, now: Instant, until: Instant) -> bool:
        free = sa.or_(t.lease_owner.is_(None), t.lease_until < now, t.lease_owner == owner)
        statement = (
            oauth_tokens.update()
            .where(t.channel_id == channel_id, free)
            .values(lease_owner=owner, lease_until=until)
        )
        with self._db.write() as conn:
            return conn.execute(statement).rowcount == 1

    def save_refreshed(self, tokens: StoredTokens, owner: str) -> int | None:
        values: dict[str, Any] = {
            "access": tokens.access,
            "scope": tokens.scope,
            "expires_at": tokens.expires_at,
            "obtained_at": tokens.obtained_at,
            "version": t.version + 1,
            "lease_owner": None,
            "lease_until": None,
            "failure": None,
            "refusal": None,
            "refused_app": None,
        }
        if tokens.refresh is not None:  # rotated: the new one replaces the old in this commit
            values["refresh"] = tokens.refresh
        mine = sa.and_(t.channel_id == tokens.channel_id, t.lease_owner == owner)
        with self._db.write() as conn:
            if conn.execute(oauth_tokens.update().where(mine).values(**values)).rowcount != 1:
                return None
            found = conn.execute(sa.select(t.version).where(t.channel_id == tokens.channel_id))
            return int(found.scalar_one())

    def fail_tokens(
        self,
        channel_id: str,
        owner: str,
        failure: str,
        *,
        refusal: str | None = None,
        refused_app: str | None = None,
    ) -> None:
        mine = sa.and_(t.channel_id == channel_id, t.lease_owner == owner)
        values = {"failure": failure, "refusal": refusal, "refused_app": refused_app}
        with self._db.write() as conn:
            conn.execute(
                oauth_tokens.update()
                .where(mine)
                .values(lease_owner=None, lease_until=None, version=t.version + 1, **values)
            )

    def release_tokens(self, channel_id: str, owner: str) -> None:
        mine = sa.and_(t.channel_id == channel_id, t.lease_owner == owner)
        with self._db.write() as conn:
            conn.execute(
                oauth_tokens.update().where(mine).values(lease_owner=None, lease_until=None)
            )

    def delete_tokens(self, channel_id: str) -> None:
        with self._db.write() as conn:
            conn.execute(oauth_tokens.delete().where(t.channel_id == channel_id))

    # mailboxes
    def add_oauth_mailbox(self, channel: Channel, tokens: StoredTokens, now: Instant) -> Channel:
        with self._db.write(
            conflict=f"a channel named {channel.name!r} already exists in this organization",
            missing=f"no organization {channel.organization_id!r}",
        ) as conn:
            conn.execute(
                channels.insert().values(
                    id=channel.id, secret=None, created_at=now, **channel_values(channel)
                )
            )
            conn.execute(oauth_tokens.insert().values(**_token_values(tokens, 1)))
            check_one_mailbox(conn, channel)
            return read_channel(conn, channel.id)

    def connect_mailbox(self, channel: Channel, tokens: StoredTokens) -> Channel:
        values = {k: v for k, v in channel_values(channel).items() if k not in RUNTIME_FIELDS}
        with self._db.write(
            conflict=f"a channel named {channel.name!r} already exists in this organization"
        ) as conn:
            before = stored_mailbox(conn, channel.id)
            updated = conn.execute(
                channels.update()
                .where(channels.c.id == channel.id)
                .values(secret=None, generation=channels.c.generation + 1, **values)
            )
            if updated.rowcount == 0:
                raise NotFound(f"no channel {channel.id!r}")
            check_one_mailbox(conn, channel, before=before)
            old = conn.execute(
                sa.select(t.version).where(t.channel_id == channel.id)
            ).scalar_one_or_none()
            conn.execute(oauth_tokens.delete().where(t.channel_id == channel.id))
            conn.execute(oauth_tokens.insert().values(**_token_values(tokens, (old or 0) + 1)))
            return read_channel(conn, channel.id)

    def revive_mailboxes(
        self,
        provider: Provider,
        client_id: str,
        refusals: Sequence[str],
        now: Instant,
        *,
        org_id: str | None = None,
        unless_app: str | None = None,
    ) -> list[Revived]:
        c = channels.c
        which = sa.and_(
            t.provider == provider.value, t.client_id == client_id, t.refusal.in_(refusals)
        )
        if unless_app is not None:
            which = sa.and_(which, sa.or_(t.refused_app.is_(None), t.refused_app != unless_app))
        query = sa.select(t.channel_id, t.refusal, c.organization_id).join(
            channels, c.id == t.channel_id
        )
        if org_id is not None:
            query = query.where(c.organization_id == org_id)
        with self._db.read() as conn:
            found = conn.execute(query.where(which).order_by(t.channel_id)).all()
        revived: list[Revived] = []
        for row in found:  # one failing (a deadlock, the database gone) stops no other
            try:
                done = self._revive(row.channel_id, row.organization_id, row.refusal, now)
            except MailviaError as exc:
                log.warning("channel %s not tried again with its app: %s", row.channel_id, exc)
                continue
            if done is not None:
                revived.append(done)
        return revived

    def _revive(self, channel_id: str, org_id: str, refusal: str, now: Instant) -> Revived | None:
        """One mailbox: its tokens' refusal cleared (only while it is still `refusal`), and
        its channel brought back when it was disconnected for that refusal; one transaction."""
        c = channels.c
        cleared = {"failure": None, "refusal": None, "refused_app": None}
        with self._db.write() as conn:
            # the channel's row first, then its tokens': the order connect_mailbox takes
            # them in (PostgreSQL; SQLite's write lock is the database's)
            conn.execute(sa.select(c.id).where(c.id == channel_id).with_for_update())
            done = conn.execute(
                oauth_tokens.update()
                .where(t.channel_id == channel_id, t.refusal == refusal)
                .values(version=t.version + 1, **cleared)
            )
            if done.rowcount != 1:
                return None  # another process did it, or the mailbox changed since
            back = conn.execute(
                channels.update()
                .where(
                    c.id == channel_id,
                    c.state == ChannelState.DISCONNECTED.value,
                    c.refusal == refusal,
                )
                .values(**state_values(ChannelState.ACTIVE, None, now))
            )
            if back.rowcount != 1:
                return Revived(channel_id, org_id, None, 0)
            held = sa.and_(
                messages.c.channel_id == channel_id, messages.c.state == State.HELD.value
            )
            released = move_messages(conn, held, State.QUEUED, {"next_attempt_at": now}, now)
            return Revived(channel_id, org_id, read_channel(conn, channel_id), released)

    # key rotation
    def oauth_secrets(self) -> list[OAuthSecret]:
        """Every sealed OAuth secret: ("app", "org provider", blob), ("access" | "refresh",
        channel id, blob), ("flow", flow id, blob)."""
        found: list[OAuthSecret] = []
        with self._db.read() as conn:
            apps = conn.execute(sa.select(a.organization_id, a.provider, a.secret)).all()
            tokens = conn.execute(sa.select(t.channel_id, t.access, t.refresh)).all()
            flows = conn.execute(sa.select(f.id, f.verifier).where(f.verifier.is_not(None))).all()
        for app in apps:
            if app.secret is not None:
                found.append(("app", f"{app.organization_id} {app.provider}", bytes(app.secret)))
        for token in tokens:
            found.append(("access", token.channel_id, bytes(token.access)))
            if token.refresh is not None:
                found.append(("refresh", token.channel_id, bytes(token.refresh)))
        found += [("flow", flow.id, bytes(flow.verifier)) for flow in flows]
        return found


def replace_oauth_secrets(conn: sa.Connection, secrets: Sequence[OAuthSecret]) -> None:
    """Write re-sealed OAuth secrets inside the caller's transaction (a key rotation)."""
    for kind, key, blob in secrets:
        if kind == "app":
            org_id, _, provider = key.partition(" ")
            where = sa.and_(a.organization_id == org_id, a.provider == provider)
            conn.execute(oauth_apps.update().where(where).values(secret=blob))
        elif kind in ("access", "refresh"):
            conn.execute(oauth_tokens.update().where(t.channel_id == key).values({kind: blob}))
        elif kind == "flow":
            conn.execute(oauth_flows.update().where(f.id == key).values(verifier=blob))
