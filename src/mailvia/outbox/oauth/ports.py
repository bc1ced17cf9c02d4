"""The ports of the OAuth use cases: stored apps, flows and tokens (always sealed by the vault)
and the provider's endpoints. Each use case takes only the Protocol it needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailvia.domain.channel import Channel, ChannelState, Provider, TransportKind
from mailvia.domain.clock import Instant
from mailvia.domain.oauth import MailboxConsent, OAuthApp, TokenSet
from mailvia.outbox.records import Event


@dataclass(frozen=True)
class SealedApp:
    """An organization's OAuth app as stored: the client secret sealed (None: none given)."""

    organization_id: str
    provider: Provider
    client_id: str
    secret: bytes | None = field(default=None, repr=False)
    tenant: str | None = None
    updated_at: Instant = 0.0


@dataclass(frozen=True)
class PendingFlow:
    """A connection under way. Launched (sent to the provider) once `state_hash` is set; the
    PKCE verifier is sealed; `session` is a hash of the web session that launched it."""

    id: str
    organization_id: str
    user_id: str
    provider: Provider
    transport: TransportKind
    channel_id: str | None  # a channel being reconnected (or turned into an OAuth mailbox)
    created_at: Instant
    expires_at: Instant
    session: str | None = None
    state_hash: str | None = None
    verifier: bytes | None = field(default=None, repr=False)
    nonce: str | None = None


@dataclass(frozen=True)
class StoredTokens:
    """An OAuth mailbox's tokens as stored (sealed). `failure`: the reply text of a consent the
    provider refused; no one asks it again until the mailbox is reconnected (or, `refusal`
    being the app's, until that app is changed). `refusal`: the failure's kind
    (domain/oauth.Refusal); `refused_app`: the fingerprint of the app that was refused."""

    channel_id: str
    provider: Provider
    client_id: str
    address: str
    access: bytes = field(repr=False)
    refresh: bytes | None = field(repr=False)
    scope: str
    expires_at: Instant
    obtained_at: Instant
    version: int = 1
    failure: str | None = None
    refusal: str | None = None
    refused_app: str | None = None


@dataclass(frozen=True)
class Revived:
    """A mailbox tried again after its app changed: its refusal cleared; `channel` made active
    again (None: it was not disconnected for that refusal) with `released` held messages."""

    channel_id: str
    organization_id: str
    channel: Channel | None
    released: int


class AppStore(Protocol):
    def oauth_app(self, org_id: str, provider: Provider) -> SealedApp | None: ...
    def put_oauth_app(self, app: SealedApp) -> None: ...
    def remove_oauth_app(self, org_id: str, provider: Provider) -> bool: ...

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
        """Clear the refusal of the mailboxes of `client_id` (in `org_id`, or any) whose
        tokens were refused with one of `refusals` (and, with `unless_app`, by an app of
        another fingerprint); each channel disconnected for that refusal becomes active and
        its held mail is queued again in order. One transaction per mailbox, each change
        conditional on what was read (another process doing the same finds nothing left)."""
        ...

    def add_events(self, events: Sequence[Event]) -> None: ...
    def oauth_token_list(self, org_id: str) -> list[StoredTokens]: ...


class FlowStore(Protocol):
    def add_flow(self, flow: PendingFlow, now: Instant) -> None:
        """Insert a flow (and drop expired ones)."""
        ...

    def launch_flow(self, flow: PendingFlow, now: Instant) -> bool:
        """Set a flow's session, state hash, verifier and nonce, only if it is not launched
        yet, not expired, and belongs to the same user. Returns whether it did."""
        ...

    def get_flow(self, flow_id: str) -> PendingFlow | None: ...
    def drop_flow(self, flow_id: str) -> None: ...

    def take_flow(self, state_hash: str) -> PendingFlow | None:
        """The flow with this state, deleted in the same transaction (single use)."""
        ...


class TokenStore(Protocol):
    """What the credential source needs: read, lease, write back, mark refused."""

    def oauth_tokens(self, channel_id: str) -> StoredTokens | None: ...

    def lease_tokens(self, channel_id: str, owner: str, now: Instant, until: Instant) -> bool:
        """Take the refresh lease unless another owner holds one that has not run out."""
        ...

    def save_refreshed(self, tokens: StoredTokens, owner: str) -> int | None:
        """Write renewed tokens (a rotated refresh token with them, in one transaction) and
        drop the lease, if `owner` still holds it. Returns the new version, or None."""
        ...

    def fail_tokens(
        self,
        channel_id: str,
        owner: str,
        failure: str,
        *,
        refusal: str | None = None,
        refused_app: str | None = None,
    ) -> None:
        """Write the refusal down (its text, kind and the refused app's fingerprint) and drop
        the lease, if `owner` holds it."""
        ...

    def release_tokens(self, channel_id: str, owner: str) -> None: ...


class MailboxStore(TokenStore, Protocol):
    """What connecting, reconnecting and disconnecting mailboxes need."""

    def identities(self, user_id: str) -> list[str]: ...
    def list_channels(self, org_id: str | None = None) -> list[Channel]: ...
    def find_channel(self, org_id: str, name: str) -> Channel | None: ...
    def get_channel(self, channel_id: str) -> Channel: ...
    def add_oauth_mailbox(self, channel: Channel, tokens: StoredTokens, now: Instant) -> Channel:
        """Insert the channel and its tokens in one transaction. Raises Conflict (name taken)."""
        ...

    def connect_mailbox(self, channel: Channel, tokens: StoredTokens) -> Channel:
        """Rewrite a channel as this OAuth mailbox (its password dropped) and store its tokens
        (any lease and failure cleared), in one transaction."""
        ...

    def delete_tokens(self, channel_id: str) -> None: ...
    def oauth_token_list(self, org_id: str) -> list[StoredTokens]: ...
    def set_channel_state(
        self, channel_id: str, state: ChannelState, reason: str | None, now: Instant
    ) -> Channel: ...
    def hold_channel(self, channel_id: str, now: Instant) -> int: ...
    def release_channel(self, channel_id: str, now: Instant) -> int: ...
    def add_events(self, events: Sequence[Event]) -> None: ...


@dataclass(frozen=True)
class AuthorizationRequest:
    """What the authorization URL carries (the verifier only as its S256 challenge)."""

    redirect_uri: str
    scopes: tuple[str, ...]
    state: str = field(repr=False)
    verifier: str = field(repr=False)
    nonce: str
    login_hint: str | None = None


class ProviderClient(Protocol):
    """A provider's OAuth endpoints. Raises ProviderRefused when the provider refuses (its error
    code kept), ProviderUnavailable when it cannot be reached, times out or answers 5xx."""

    def authorization_url(self, app: OAuthApp, request: AuthorizationRequest) -> str: ...

    async def exchange(
        self,
        app: OAuthApp,
        *,
        code: str,
        verifier: str,
        redirect_uri: str,
        nonce: str,
        now: Instant,
    ) -> MailboxConsent:
        """Trade the code for tokens; the address comes from the verified ID token (or the
        userinfo endpoint), never from the user."""
        ...

    async def refresh(self, app: OAuthApp, refresh_token: str, *, now: Instant) -> TokenSet:
        """New tokens; `refresh_token` is set only when the provider rotated it."""
        ...

    async def revoke(self, app: OAuthApp, token: str) -> bool:
        """Revoke a consent; False when the provider offers no revocation (Microsoft)."""
        ...
