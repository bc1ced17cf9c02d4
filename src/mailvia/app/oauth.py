"""The composition root's OAuth part: the organizations' and the operator's apps, the token
source, the mailboxes and the connect flow of one build, over the providers' endpoints from
the settings (used by app/wiring.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from mailvia.domain.channel import Provider
from mailvia.domain.oauth import AppSource, OAuthApp
from mailvia.keyring import derived_key
from mailvia.outbox.channels import Channels
from mailvia.outbox.oauth.apps import OAuthApps
from mailvia.outbox.oauth.connect import OAuthConnect
from mailvia.outbox.oauth.credentials import TokenSource
from mailvia.outbox.oauth.mailboxes import OAuthMailboxes
from mailvia.secrets import Vault
from mailvia.settings import Settings
from mailvia.store import SqlStore
from mailvia.transport.composite import Transports
from mailvia.transport.oauth_client import Endpoints, OAuthClient


@dataclass(frozen=True)
class OAuthParts:
    """The OAuth mailboxes' use cases of one build."""

    apps: OAuthApps
    tokens: TokenSource
    mailboxes: OAuthMailboxes
    connect: OAuthConnect


def oauth_parts(
    store: SqlStore,
    vault: Vault,
    settings: Settings,
    channels: Channels,
    transport: Transports,
    *,
    worker: str,
    public_url: Callable[[], str],
) -> OAuthParts:
    """The organization's apps (the operator's as fallback), the token source (its lease
    owner unique per build, so two builds on one database never share a lease), mailboxes
    and the connect flow, over the providers' endpoints from the settings."""
    key = derived_key(settings, b"mailvia oauth app fingerprints")
    apps = OAuthApps(store, vault, operator=operator_apps(settings), fingerprint_key=key)
    client = OAuthClient(endpoints(settings))
    tokens = TokenSource(store, vault, apps, client, owner=f"{worker}/{os.urandom(4).hex()}")

    async def forget(channel_id: str) -> None:
        tokens.forget(channel_id)
        await transport.forget(channel_id)

    mailboxes = OAuthMailboxes(store, vault, channels, apps, client, forget=forget)
    connect = OAuthConnect(store, apps, client, vault, mailboxes, channels, public_url=public_url)
    return OAuthParts(apps, tokens, mailboxes, connect)


def operator_apps(settings: Settings) -> dict[Provider, OAuthApp]:
    """The operator-wide OAuth apps (MAILVIA_OAUTH_*_CLIENT_ID), for organizations without
    their own."""
    found: dict[Provider, OAuthApp] = {}
    if settings.oauth_google_client_id:
        found[Provider.GOOGLE] = OAuthApp(
            Provider.GOOGLE,
            settings.oauth_google_client_id,
            settings.oauth_google_client_secret,
            source=AppSource.OPERATOR,
        )
    if settings.oauth_microsoft_client_id:
        found[Provider.MICROSOFT] = OAuthApp(
            Provider.MICROSOFT,
            settings.oauth_microsoft_client_id,
            settings.oauth_microsoft_client_secret,
            settings.oauth_microsoft_tenant or "organizations",
            source=AppSource.OPERATOR,
        )
    return found


def endpoints(settings: Settings) -> Endpoints:
    """The providers' OAuth addresses from the settings (a test points them at a fake)."""
    return Endpoints(
        google_authorize=settings.oauth_google_authorize_url,
        google_token=settings.oauth_google_token_url,
        google_revoke=settings.oauth_google_revoke_url,
        google_userinfo=settings.oauth_google_userinfo_url,
        google_jwks=settings.oauth_google_jwks_url,
        microsoft_authorize=settings.oauth_microsoft_authorize_url,
        microsoft_token=settings.oauth_microsoft_token_url,
        microsoft_jwks=settings.oauth_microsoft_jwks_url,
    )
