"""OAuth mailboxes once consent is given: a new mailbox, or an existing channel reconnected
(or a password mailbox turned into an OAuth one) with its held mail released in order;
disconnect and remove, revoking what the provider allows; the token facts the pages and
payloads show.

Side effects: channel rows and their sealed tokens; held mail released or held; events
`channel.reconnected` and `channel.disconnected`; revocation requests to the provider.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from mailvia.domain.channel import (
    Auth,
    Channel,
    ChannelState,
    Kind,
    Owner,
    Provider,
    Scope,
    check_channel,
    own_mailbox,
)
from mailvia.domain.clock import Instant
from mailvia.domain.errors import Conflict, Forbidden, InvalidInput, MailviaError
from mailvia.domain.ids import make_id
from mailvia.domain.oauth import (
    MailboxConsent,
    OAuthApp,
    Refusal,
    connect_taken,
    oauth_offer,
    reconnect_words,
    refusal,
)
from mailvia.domain.presets import PRESETS
from mailvia.domain.tenancy import User, identity_covers
from mailvia.outbox.addresses import check_address
from mailvia.outbox.channels import Channels
from mailvia.outbox.dispatch import new_event
from mailvia.outbox.oauth.apps import OAuthApps
from mailvia.outbox.oauth.ports import MailboxStore, PendingFlow, ProviderClient, StoredTokens
from mailvia.outbox.ports import Vault

log = logging.getLogger(__name__)

NO_REVOCATION = (
    "Microsoft offers no way for an app to revoke a refresh token: mailvia deleted its copy. "
    "To cut access at Microsoft too, remove mailvia's app from your account's permissions "
    "(myapps.microsoft.com), or ask your Microsoft 365 admin to revoke your sessions."
)


@dataclass(frozen=True)
class Connected:
    """What a finished consent did to which channel."""

    channel: Channel
    created: bool
    reconnected: bool  # a disconnected channel became active
    released: int = 0


@dataclass(frozen=True)
class Disconnected:
    """A mailbox disconnected by its owner: `revoked` True (at the provider), False (the
    provider offers no revocation), None (the provider could not be reached)."""

    channel: Channel
    held: int
    revoked: bool | None


@dataclass(frozen=True)
class MailboxStatus:
    """What the pages and payloads show of an OAuth mailbox's tokens (never a token)."""

    provider: Provider
    address: str
    expires_at: Instant
    failure: str | None
    refusal: Refusal | None = None

    @property
    def renewal_refused(self) -> bool:
        """Whether the provider itself refused to renew the tokens (the consent or the app),
        not mailvia finding them unusable without asking (no app, no refresh token): the
        failure's kind as stored, never its words."""
        return self.failure is not None and self.refusal is not None and self.refusal.asked


class OAuthMailboxes:
    """Make, reconnect, disconnect and remove OAuth mailboxes."""

    def __init__(
        self,
        store: MailboxStore,
        vault: Vault,
        channels: Channels,
        apps: OAuthApps,
        client: ProviderClient,
        *,
        forget: Callable[[str], Awaitable[None]],
    ) -> None:
        self.store = store
        self.vault = vault
        self.channels = channels
        self.apps = apps
        self.client = client
        self.forget = forget  # drop pooled connections and tokens kept in memory

    async def connect(
        self, actor: User, flow: PendingFlow, app: OAuthApp, consent: MailboxConsent, now: Instant
    ) -> Connected:
        """Store the consent as the actor's mailbox. Raises Forbidden (an address that is not
        the actor's, or not the reconnected channel's), InvalidInput (no refresh token);
        then nothing is stored, and the consent is revoked where the provider allows."""
        try:
            # The form every other door stores (outbox/channels.py): U-labels, lower case.
            what = f"the address {flow.provider.display_name} signed you in as"
            address = check_address(consent.address.strip(), what).lower()
            self._check_address(actor, flow.provider, address)
            if not consent.tokens.refresh_token:
                raise InvalidInput(
                    f"{flow.provider.display_name} granted no refresh token (offline access), "
                    "so the connection would stop within the hour: nothing was connected"
                )
            target = self._target(actor, flow, address)
            tokens = self._sealed(flow, app, consent, address, target.id if target else "")
            if target is None:
                created = self._create(actor, flow, tokens, now)
            else:
                converted = self._convert(target, flow, tokens)
        except MailviaError:
            # Nothing was stored (each store step is one transaction): a refusal after the
            # consent, a Conflict included, gives the consent back.
            await self._revoke(app, consent.tokens.refresh_token or consent.tokens.access_token)
            raise
        if target is None:
            return Connected(created, created=True, reconnected=False)
        return await self._reconnected(converted, now)

    def _check_address(self, actor: User, provider: Provider, address: str) -> None:
        if not any(identity_covers(i, address) for i in self.store.identities(actor.id)):
            raise Forbidden(
                f"{provider.display_name} signed you in as {address}, which is not one of your "
                "sender identities: nothing was connected. Connect the mailbox of an address "
                "you send from, or ask an admin to grant it."
            )

    def _target(self, actor: User, flow: PendingFlow, address: str) -> Channel | None:
        """The channel to reconnect: the one the flow names, else the actor's own mailbox of
        this provider for this address (an OAuth one, or a password one to turn into it)."""
        if flow.channel_id is not None:
            channel = self.store.get_channel(flow.channel_id)
            if channel.owner.user_id != actor.id:
                raise Forbidden("only the mailbox's owner can reconnect it")
            if (channel.address or "").lower() != address:
                raise Forbidden(
                    f"{channel.name} sends as {channel.address}, but "
                    f"{flow.provider.display_name} signed you in as {address}: nothing was "
                    f"changed. Sign in as {channel.address}."
                )
            return channel
        mine = [
            c
            for c in self.store.list_channels(actor.organization_id)
            if own_mailbox(c) == (actor.id, address)
        ]
        # This provider's own mailbox first, among all of them (a database made before the
        # one-channel rule may hold two for the address: it keeps them).
        for channel in mine:
            if flow.provider in (channel.oauth, oauth_offer(channel)):
                return channel
        if mine:
            # Only another server's channel for this address (a relay, the other provider):
            # a second own channel would leave which one signs in to a choice by name.
            raise Conflict(connect_taken(mine[0], flow.provider))
        return None

    def _sealed(
        self,
        flow: PendingFlow,
        app: OAuthApp,
        consent: MailboxConsent,
        address: str,
        channel_id: str,
    ) -> StoredTokens:
        refresh = consent.tokens.refresh_token or ""
        return StoredTokens(
            channel_id=channel_id,
            provider=flow.provider,
            client_id=app.client_id,
            address=address,
            access=self.vault.seal(consent.tokens.access_token.encode()),
            refresh=self.vault.seal(refresh.encode()),
            scope=consent.tokens.scope,
            expires_at=consent.tokens.expires_at,
            obtained_at=consent.tokens.obtained_at or flow.created_at,
        )

    def _create(
        self, actor: User, flow: PendingFlow, tokens: StoredTokens, now: Instant
    ) -> Channel:
        preset = PRESETS[flow.provider.preset]
        channel = Channel(
            id=make_id("ch", now, os.urandom(10)),
            organization_id=actor.organization_id,
            name=f"{preset.title} {tokens.address}",
            kind=Kind.SMTP,
            host=preset.host,
            port=preset.port,
            security=preset.security,
            auth=Auth.XOAUTH2,
            scope=Scope.ADDRESS,
            owner=Owner(user_id=actor.id),
            preset=preset.name,
            username=tokens.address,
            address=tokens.address,
            budgets=preset.budgets,
            max_recipients_per_message=preset.max_recipients_per_message,
            max_connections=preset.max_connections,
            transport=flow.transport,
            oauth=flow.provider,
        )
        check_channel(channel)
        for name in (channel.name, f"{channel.name} (OAuth)", f"{channel.name} ({channel.id})"):
            try:
                named = replace(channel, name=name)
                return self.store.add_oauth_mailbox(
                    named, replace(tokens, channel_id=channel.id), now
                )
            except Conflict:
                if self.store.find_channel(actor.organization_id, name) is None:
                    raise  # not the name: the address has its own channel (check_one_mailbox)
                continue
        raise Conflict(f"a channel named {channel.name!r} already exists")

    def _convert(self, channel: Channel, flow: PendingFlow, tokens: StoredTokens) -> Channel:
        """Turn the channel into this OAuth mailbox (keeping its name, limits and mail, and
        its server settings when it already was this provider's mailbox); one transaction.
        One added by hand with no budgets gets the provider's (Microsoft 365's 30 a minute):
        it is that provider's mailbox from now on."""
        preset = PRESETS[flow.provider.preset]
        if channel.preset != preset.name:
            channel = replace(
                channel,
                preset=preset.name,
                host=preset.host,
                port=preset.port,
                security=preset.security,
                ca_pem=None,
                budgets=channel.budgets or preset.budgets,
            )
        updated = replace(
            channel,
            auth=Auth.XOAUTH2,
            username=tokens.address,
            has_password=False,
            transport=flow.transport,
            oauth=flow.provider,
        )
        check_channel(updated)
        return self.store.connect_mailbox(updated, tokens)

    async def _reconnected(self, channel: Channel, now: Instant) -> Connected:
        """After `_convert`: make the mailbox active if it was disconnected, and release its
        held mail in original order."""
        await self.forget(channel.id)
        if channel.state is not ChannelState.DISCONNECTED:
            return Connected(channel, created=False, reconnected=False)
        channel = self.store.set_channel_state(channel.id, ChannelState.ACTIVE, None, now)
        released = self.store.release_channel(channel.id, now)
        data: dict[str, object] = {"channel_id": channel.id, "released": released}
        self.store.add_events(
            [new_event(channel.organization_id, "channel.reconnected", now, data)]
        )
        return Connected(channel, created=False, reconnected=True, released=released)

    async def disconnect(self, actor: User, ref: str, now: Instant) -> Disconnected:
        """Delete the mailbox's tokens (revoked at the provider where it allows), mark it
        disconnected and hold its mail; reconnecting releases it. Raises NotFound,
        Forbidden, InvalidInput (not an OAuth mailbox)."""
        channel = self._manageable(actor, ref)
        if channel.oauth is None:
            raise InvalidInput(
                f"{channel.name} is not connected by OAuth: pause or remove it instead"
            )
        stored = self.store.oauth_tokens(channel.id)
        self.store.delete_tokens(channel.id)
        reason = f"disconnected by {actor.email}: {reconnect_words(channel.oauth)} to send again"
        channel = self.store.set_channel_state(channel.id, ChannelState.DISCONNECTED, reason, now)
        held = self.store.hold_channel(channel.id, now)
        data: dict[str, object] = {"channel_id": channel.id, "reason": reason, "held": held}
        self.store.add_events(
            [new_event(channel.organization_id, "channel.disconnected", now, data)]
        )
        await self.forget(channel.id)
        return Disconnected(channel, held, await self._revoke_stored(channel, stored))

    async def remove(self, actor: User, ref: str) -> None:
        """Remove a channel (what Channels.remove does); an OAuth mailbox's consent is revoked
        at the provider where it allows. Raises what Channels.remove raises."""
        channel = self.channels.get(actor, ref)
        stored = self.store.oauth_tokens(channel.id) if channel.oauth else None
        self.channels.remove(actor, channel.id)  # its tokens go with it (same row's cascade)
        await self.forget(channel.id)
        if stored is not None:
            await self._revoke_stored(channel, stored)

    def statuses(self, org_id: str) -> dict[str, MailboxStatus]:
        """The token facts of the organization's OAuth mailboxes, by channel id."""
        return {
            t.channel_id: MailboxStatus(
                t.provider, t.address, t.expires_at, t.failure, refusal(t.refusal)
            )
            for t in self.store.oauth_token_list(org_id)
        }

    def _manageable(self, actor: User, ref: str) -> Channel:
        channel = self.channels.get(actor, ref)
        if channel.owner.user_id != actor.id and not actor.is_admin:
            raise Forbidden("only the channel's owner or an admin may change it")
        return channel

    async def _revoke_stored(self, channel: Channel, stored: StoredTokens | None) -> bool | None:
        if stored is None or channel.oauth is None:
            return None
        app = self.apps.for_client(channel.organization_id, channel.oauth, stored.client_id)
        sealed = stored.refresh or stored.access
        if app is None:
            return None
        return await self._revoke(app, self.vault.open(sealed).decode())

    async def _revoke(self, app: OAuthApp, token: str) -> bool | None:
        """Revoke a consent at the provider; never raises (the tokens are gone here anyway)."""
        try:
            return await self.client.revoke(app, token)
        except MailviaError as exc:
            log.warning("could not revoke a %s consent: %s", app.provider.display_name, exc)
            return None
