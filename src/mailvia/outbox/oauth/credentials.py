"""The credential source of OAuth mailboxes: an access token for every transaction, from
memory while it is good, refreshed ahead of expiry, once per channel across every process.

Single flight: in a process, a lock per channel makes concurrent callers wait for the first;
across processes, the first to take the store's lease on the channel's token row refreshes
(SQLite and PostgreSQL alike: one conditional UPDATE), the others poll the row until its
version moves or the lease runs out. A rotated refresh token is written in the same
transaction as the access token it came with. A refused consent is written down too
(`failure`), so no other process asks the provider again until the mailbox is reconnected.

Side effects: token requests to the provider; writes to the token row (lease, new tokens,
failure). Raises CredentialsFailed (535: the channel disconnects; 451: retry later).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import NoReturn

from mailvia.domain.channel import Channel, Provider
from mailvia.domain.clock import Instant
from mailvia.domain.errors import CredentialsFailed, ProviderRefused, ProviderUnavailable
from mailvia.domain.oauth import (
    TokenSet,
    consent_refused,
    not_connected,
    token_unavailable,
)
from mailvia.domain.replies import Reply
from mailvia.outbox.oauth.apps import OAuthApps
from mailvia.outbox.oauth.ports import ProviderClient, StoredTokens, TokenStore
from mailvia.outbox.ports import Credentials, Vault

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0  # longer than a token request may take (the client's timeout is 15 s)
WAIT_SECONDS = 35.0  # how long a caller waits for another process's refresh


@dataclass(frozen=True)
class _Held:
    """A token in memory: the credentials to hand out and when they are due."""

    version: int
    credentials: Credentials
    tokens: TokenSet


class TokenSource:
    """Credentials(username=address, password=access token) for an OAuth mailbox."""

    def __init__(
        self,
        store: TokenStore,
        vault: Vault,
        apps: OAuthApps,
        client: ProviderClient,
        *,
        owner: str,
        clock: Callable[[], Instant] = time.time,
        pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.vault = vault
        self.apps = apps
        self.client = client
        self.owner = owner  # the lease holder's name: this process (the worker id)
        self.clock = clock
        self.pause = pause
        self._held: dict[str, _Held] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def forget(self, channel_id: str) -> None:
        """Drop the token kept in memory (the mailbox was reconnected or disconnected)."""
        self._held.pop(channel_id, None)

    async def __call__(
        self, channel: Channel, *, rejected: Credentials | None = None, renew: bool = False
    ) -> Credentials | None:
        """The token in hand while it is good, else a renewed one; with `renew`, one renewed
        now whatever is in hand (the provider asked once: Test connection)."""
        provider = channel.oauth
        if provider is None:
            raise ValueError(f"channel {channel.id} is not an OAuth mailbox")
        async with self._locks.setdefault(channel.id, asyncio.Lock()):
            held = self._held.get(channel.id)
            if not renew and held is not None and _usable(held, rejected, self.clock()):
                return held.credentials
            return await self._renew(channel, provider, rejected, renew=renew)

    async def _renew(
        self,
        channel: Channel,
        provider: Provider,
        rejected: Credentials | None,
        *,
        renew: bool = False,
    ) -> Credentials:
        """The stored token if it is good (another process may have renewed it), else a new
        one: refreshed here under the lease, or by the lease holder while this waits. With
        `renew`, the token stored when it was asked is not good: only a newer one is."""
        deadline = self.clock() + WAIT_SECONDS
        wait = 0.02
        older: int | None = None  # with `renew`: tokens of this version or older are not good
        while True:
            held = self._stored(channel, provider)
            if renew and older is None:
                older = held.version
            now = self.clock()
            if _usable(held, rejected, now, older):
                self._held[channel.id] = held
                return held.credentials
            if self.store.lease_tokens(channel.id, self.owner, now, now + LEASE_SECONDS):
                return await self._under_lease(channel, provider, held, rejected)
            if now >= deadline:
                detail = "another process is renewing the token and has not finished"
                raise CredentialsFailed(token_unavailable(detail))
            await self.pause(wait)
            wait = min(wait * 2, 0.25)

    def _stored(self, channel: Channel, provider: Provider) -> _Held:
        stored = self.store.oauth_tokens(channel.id)
        if stored is None:
            raise CredentialsFailed(not_connected(provider))
        if stored.failure:
            raise CredentialsFailed(Reply(535, "5.7.8", stored.failure, refusal=stored.refusal))
        return _opened(stored, self.vault.open(stored.access).decode())

    async def _under_lease(
        self, channel: Channel, provider: Provider, seen: _Held, rejected: Credentials | None
    ) -> Credentials:
        """Refresh while holding the lease (unless the row moved since it was read)."""
        try:
            stored = self.store.oauth_tokens(channel.id)
            if stored is None:
                raise CredentialsFailed(not_connected(provider))
            if stored.version != seen.version:
                held = _opened(stored, self.vault.open(stored.access).decode())
                if _usable(held, rejected, self.clock()):
                    self.store.release_tokens(channel.id, self.owner)
                    self._held[channel.id] = held
                    return held.credentials
            return await self._refresh(channel, provider, stored)
        except CredentialsFailed:
            raise
        except BaseException:
            self.store.release_tokens(channel.id, self.owner)
            raise

    async def _refresh(
        self, channel: Channel, provider: Provider, stored: StoredTokens
    ) -> Credentials:
        app = self.apps.for_client(channel.organization_id, provider, stored.client_id)
        if app is None:
            why = "the OAuth app this mailbox was connected with is no longer set up"
            self._fail(channel, not_connected(provider, why))
        if stored.refresh is None:
            self._fail(channel, not_connected(provider, "no refresh token was granted"))
        try:
            fresh = await self.client.refresh(
                app, self.vault.open(stored.refresh).decode(), now=self.clock()
            )
        except ProviderRefused as exc:
            refused = consent_refused(provider, exc.error, app.source)
            self._fail(channel, refused, app=self.apps.fingerprint(app))
        except ProviderUnavailable as exc:
            self.store.release_tokens(channel.id, self.owner)
            raise CredentialsFailed(token_unavailable(str(exc))) from None
        renewed = replace(
            stored,
            access=self.vault.seal(fresh.access_token.encode()),
            refresh=self.vault.seal(fresh.refresh_token.encode()) if fresh.refresh_token else None,
            scope=fresh.scope or stored.scope,
            expires_at=fresh.expires_at,
            obtained_at=fresh.obtained_at or self.clock(),
        )
        version = self.store.save_refreshed(renewed, self.owner)
        log.info("renewed the access token of channel %s", channel.id)
        held = _opened(replace(renewed, version=version or stored.version + 1), fresh.access_token)
        self._held[channel.id] = held
        return held.credentials

    def _fail(self, channel: Channel, reply: Reply, *, app: str | None = None) -> NoReturn:
        """Write the refusal down for every process (its text, its kind and the fingerprint
        of the `app` asked), and settle with it (channel_broken)."""
        self.store.fail_tokens(
            channel.id, self.owner, reply.text, refusal=reply.refusal, refused_app=app
        )
        self.forget(channel.id)
        log.warning("channel %s: %s", channel.id, reply)
        raise CredentialsFailed(reply)


def _opened(stored: StoredTokens, access_token: str) -> _Held:
    tokens = TokenSet(
        access_token, stored.expires_at, scope=stored.scope, obtained_at=stored.obtained_at
    )
    return _Held(stored.version, Credentials(stored.address, access_token), tokens)


def _usable(
    held: _Held, rejected: Credentials | None, now: Instant, older: int | None = None
) -> bool:
    """Good to hand out: not due, not the token the server just refused, and newer than
    version `older` (when a renewal was asked for)."""
    if held.tokens.due(now) or (older is not None and held.version <= older):
        return False
    return rejected is None or rejected.password != held.credentials.password
